//! Idle upstream connections of intercepted CONNECTs, kept for the next CONNECT of the
//! same client to the same place.
//!
//! When an intercepted client connection ends, the verified upstream connections it used
//! (HTTP/1.1 ones that are idle, its HTTP/2 one) come here instead of being closed. The next
//! CONNECT from the same client address and proxy user to the same host and port takes one
//! and skips the TCP connect and the upstream TLS handshake: the connection was verified
//! (certificate, name) when it was made, for the same server name and the same ALPN offer,
//! which are checked again before it is used. Sharing stays within one client and one user,
//! as a browser shares its own connections: connection-bound upstream state (NTLM or
//! Negotiate authentication) never passes from one user or workstation to another.
//!
//! Bounded: at most [`IDLE_PER_KEY`] connections per client, user, host and port, at most
//! [`IDLE_TOTAL`] in all (a connection returned to a full pool is closed), each kept at most
//! [`IDLE_TIMEOUT`] (a sweep every [`SWEEP_INTERVAL`] closes older ones; the upstream may
//! close them sooner, and a closed one is never handed out). An HTTP/2 connection is shared:
//! taking it leaves it in the pool for the next CONNECT too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::intercept::Sender;
use crate::tls::LeafName;
use crate::tls::hello::{ALPN_H2, ALPN_HTTP11};

/// Longest time an upstream connection waits in the pool (the plain-HTTP client's pool
/// keeps idle connections as long).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often connections past [`IDLE_TIMEOUT`] are closed.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Most idle connections kept per client, user, host and port.
pub(super) const IDLE_PER_KEY: usize = 32;
/// Most idle connections kept in all.
pub(super) const IDLE_TOTAL: usize = 1024;

/// Who may reuse a connection, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    /// The client's address.
    pub(super) client: IpAddr,
    /// The proxy user the CONNECT authenticated as.
    pub(super) user: Option<Arc<str>>,
    /// The CONNECT host, lowercased.
    pub(super) host: String,
    /// The CONNECT port.
    pub(super) port: u16,
}

impl PoolKey {
    /// The key of a CONNECT from `client` as `user` to `host:port`.
    pub(super) fn new(client: IpAddr, user: Option<Arc<str>>, host: &str, port: u16) -> PoolKey {
        PoolKey {
            client,
            user,
            host: host.to_ascii_lowercase(),
            port,
        }
    }
}

/// A verified upstream connection, ready for requests.
pub(super) struct Pooled {
    /// The server name its certificate was verified for.
    pub(super) name: LeafName,
    /// The ALPN list it was made with.
    pub(super) offer: Vec<Vec<u8>>,
    /// Where requests go.
    pub(super) sender: Sender,
}

impl Pooled {
    /// Whether it was made for `name` with `offer` (what a new CONNECT would have made).
    pub(super) fn fits(&self, name: &LeafName, offer: &[Vec<u8>]) -> bool {
        self.name == *name && self.offer == offer
    }

    /// The protocol the upstream chose for it.
    pub(super) fn alpn(&self) -> Option<&'static [u8]> {
        match &self.sender {
            Sender::H2(_) => Some(ALPN_H2),
            Sender::H1(_) if self.offer.iter().any(|p| p == ALPN_HTTP11) => Some(ALPN_HTTP11),
            Sender::H1(_) => None,
        }
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

struct Idle {
    conn: Pooled,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.since) < IDLE_TIMEOUT && !self.conn.is_closed()
    }
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    total: usize,
}

impl Entries {
    /// Drops what is expired or closed under `key`.
    fn prune(&mut self, key: &PoolKey, now: Instant) {
        if let Some(list) = self.by_key.get_mut(key) {
            let before = list.len();
            list.retain(|idle| idle.usable(now));
            self.total -= before - list.len();
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

/// The idle upstream connections of intercepted CONNECTs (see the module docs).
#[derive(Default)]
pub(super) struct OriginPool {
    entries: Mutex<Entries>,
}

impl OriginPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every change leaves the map consistent: a panic elsewhere does not poison it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for `key`: the most recently returned usable one (an HTTP/2 one stays
    /// in the pool, shared), or `None`.
    pub(super) fn take(&self, key: &PoolKey) -> Option<Pooled> {
        self.take_if(key, |_| true)
    }

    /// A connection for `key` made for `name` with `offer`, as [`OriginPool::take`].
    pub(super) fn take_fitting(
        &self,
        key: &PoolKey,
        name: &LeafName,
        offer: &[Vec<u8>],
    ) -> Option<Pooled> {
        self.take_if(key, |conn| conn.fits(name, offer))
    }

    fn take_if(&self, key: &PoolKey, wanted: impl Fn(&Pooled) -> bool) -> Option<Pooled> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.prune(key, now);
        let list = entries.by_key.get_mut(key)?;
        let at = list.iter().rposition(|idle| {
            wanted(&idle.conn)
                && match &idle.conn.sender {
                    Sender::H1(s) => s.is_ready(),
                    Sender::H2(_) => true,
                }
        })?;
        if let Sender::H2(s) = &list[at].conn.sender {
            return Some(Pooled {
                name: list[at].conn.name.clone(),
                offer: list[at].conn.offer.clone(),
                sender: Sender::H2(s.clone()),
            });
        }
        let idle = list.remove(at);
        if list.is_empty() {
            entries.by_key.remove(key);
        }
        entries.total -= 1;
        Some(idle.conn)
    }

    /// Keeps `conn` for `key` (closed at once when it is closed already or the pool is
    /// full). An HTTP/2 connection replaces the one kept for the same name and offer.
    pub(super) fn put(&self, key: &PoolKey, conn: Pooled) {
        let now = Instant::now();
        if conn.is_closed() {
            return;
        }
        let mut entries = self.lock();
        entries.prune(key, now);
        if matches!(conn.sender, Sender::H2(_)) {
            if let Some(list) = entries.by_key.get_mut(key) {
                if let Some(same) = list.iter_mut().find(|idle| {
                    matches!(idle.conn.sender, Sender::H2(_))
                        && idle.conn.fits(&conn.name, &conn.offer)
                }) {
                    *same = Idle { conn, since: now };
                    return;
                }
            }
        }
        if entries.total >= IDLE_TOTAL
            || entries
                .by_key
                .get(key)
                .is_some_and(|l| l.len() >= IDLE_PER_KEY)
        {
            return;
        }
        entries.total += 1;
        entries
            .by_key
            .entry(key.clone())
            .or_default()
            .push(Idle { conn, since: now });
    }

    /// Closes every connection past [`IDLE_TIMEOUT`] or closed by its upstream.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        let mut entries = self.lock();
        let keys: Vec<PoolKey> = entries.by_key.keys().cloned().collect();
        for key in &keys {
            entries.prune(key, now);
        }
    }

    /// Sweeps `pool` every [`SWEEP_INTERVAL`] while it exists.
    pub(super) fn sweep_while_alive(pool: Weak<OriginPool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => break,
                }
            }
        });
    }
}
