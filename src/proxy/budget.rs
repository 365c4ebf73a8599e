//! The hold budget: request-body bytes held in memory at once, across all requests
//! (`limits.hold_total`), and per client address (`limits.hold_per_client`).
//!
//! Without it, memory is bounded only per request: `max_connections` uploads each holding
//! `hold_bytes` would be 16 GiB at the defaults. A request reserves what it may hold before
//! it reads its body, all at once, so no request waits while holding part of the budget
//! (no deadlock); it waits at most `limits.hold_wait`, then gets 503. The reservation is
//! accounted in KiB and is released when the request's [`Reservation`] is dropped.
//!
//! What a request reserves is the body it may hold plus the windows of the decompressors
//! its `Content-Encoding` opens (brotli 16 MiB, zstd 8 MiB each): a small brotli body
//! pins a whole window, so without them many such bodies at once used far more memory
//! than the budget said (found in review). The sum is capped at a client's share. A
//! streamed body gives back the held part once it has been passed on and keeps the
//! windows until its scan ends.
//!
//! A client's reservations together stay within its share: it takes its share first, then
//! the shared budget. Without the share, one client's uploads (or the streams of one
//! HTTP/2 connection, each body of unknown length reserving `hold_bytes`) took the whole
//! budget and every other client's upload got 503 (found in review).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ProxyError;

/// Bytes per unit of the budget.
const UNIT: u64 = 1024;

/// The budget shared by every request.
#[derive(Debug)]
pub(super) struct HoldBudget {
    units: Arc<Semaphore>,
    /// Each client's share, in units.
    share: usize,
    /// The shares of the clients holding part of the budget now (an entry goes when its
    /// client's last reservation does).
    clients: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
    wait: Duration,
}

/// A part of the budget, given back when dropped.
#[derive(Debug)]
pub(super) struct Reservation(Option<Held>);

#[derive(Debug)]
struct Held {
    // Declared (so dropped) first: the shared units, then the client's.
    total: OwnedSemaphorePermit,
    client: ClientShare,
}

impl Reservation {
    /// Gives back all of the reservation but `bytes` (rounded up to the budget's unit);
    /// nothing when it holds no more than that.
    pub(super) fn shrink_to(&mut self, bytes: u64) {
        let Some(held) = &mut self.0 else {
            return;
        };
        let keep = units(bytes);
        let n = held.total.num_permits();
        if keep >= n {
            return;
        }
        if keep == 0 {
            self.0 = None;
            return;
        }
        // The shared units first, then the client's, as when dropped whole.
        drop(held.total.split(n - keep));
        if let Some(permit) = &mut held.client.permit {
            drop(permit.split(n - keep));
        }
    }

    /// Takes `more` into this reservation (both for the same client).
    fn merge(&mut self, more: Reservation) {
        let Some(mut more) = more.0 else {
            return;
        };
        match &mut self.0 {
            None => self.0 = Some(more),
            Some(held) => {
                // The same semaphores: the shared units, and the client's share, which
                // stays in the map while `held` holds part of it.
                held.total.merge(more.total);
                match (&mut held.client.permit, more.client.permit.take()) {
                    (Some(mine), Some(theirs)) => mine.merge(theirs),
                    (mine @ None, theirs) => *mine = theirs,
                    (Some(_), None) => {}
                }
            }
        }
    }

    /// Bytes reserved (a multiple of the budget's unit).
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |held| held.total.num_permits() as u64 * UNIT)
    }
}

/// A client's part of its share; removes the client's entry when it is the last.
#[derive(Debug)]
struct ClientShare {
    permit: Option<OwnedSemaphorePermit>,
    ip: IpAddr,
    clients: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.permit.take());
        // Only the map holds the semaphore now (a reservation in flight holds a clone):
        // nothing of the client's is held or waiting.
        if clients
            .get(&self.ip)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            clients.remove(&self.ip);
        }
    }
}

fn units(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(UNIT))
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

impl HoldBudget {
    /// A budget of `total` bytes, at most `per_client` of it for one client address; a
    /// reservation waits at most `wait`.
    pub(super) fn new(total: u64, per_client: u64, wait: Duration) -> HoldBudget {
        HoldBudget {
            units: Arc::new(Semaphore::new(units(total))),
            share: units(per_client.min(total)),
            clients: Arc::default(),
            wait,
        }
    }

    /// The most one reservation can hold: a client's share.
    pub(super) fn most(&self) -> u64 {
        self.share as u64 * UNIT
    }

    /// Reserves `bytes` for `client` (nothing for 0), waiting up to the hold wait in all.
    pub(super) async fn reserve(
        &self,
        client: IpAddr,
        bytes: u64,
    ) -> Result<Reservation, ProxyError> {
        if bytes == 0 {
            return Ok(Reservation(None));
        }
        let n = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let semaphore = {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            clients
                .entry(client)
                .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                .clone()
        };
        // From here on the entry is cleaned up however this ends.
        let mut share = ClientShare {
            permit: None,
            ip: client,
            clients: self.clients.clone(),
        };
        let acquire = async {
            share.permit = Some(semaphore.acquire_many_owned(n).await.ok()?);
            self.units.clone().acquire_many_owned(n).await.ok()
        };
        // Bound first, so the waits (and the share they hold) end here, before `share`.
        let got = tokio::time::timeout(self.wait, acquire).await;
        match got {
            Ok(Some(total)) => Ok(Reservation(Some(Held {
                total,
                client: share,
            }))),
            // The semaphores are never closed; a reservation larger than a share or the
            // whole budget (impossible: validation keeps hold_bytes within both) fails the
            // same way.
            Ok(None) | Err(_) => Err(ProxyError::Busy(self.wait)),
        }
    }
}

impl HoldBudget {
    /// Adds `bytes` to `reservation` (held for `client`), waiting up to the hold wait as
    /// [`HoldBudget::reserve`] does; on failure the reservation is as it was.
    pub(super) async fn grow(
        &self,
        reservation: &mut Reservation,
        client: IpAddr,
        bytes: u64,
    ) -> Result<(), ProxyError> {
        let more = self.reserve(client, bytes).await?;
        reservation.merge(more);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation grown in steps holds their sum, in the shared budget and the
    /// client's share, and gives it all back at once.
    #[tokio::test]
    async fn a_grown_reservation_holds_the_sum_and_gives_it_all_back() {
        let budget = HoldBudget::new(40 << 10, 20 << 10, Duration::from_millis(50));
        let mut r = budget.reserve(A, 4 << 10).await.unwrap();
        budget.grow(&mut r, A, 8 << 10).await.unwrap();
        assert_eq!(r.bytes(), 12 << 10);
        // The client's share (20 KiB) has 8 left; another client still has room.
        assert!(budget.grow(&mut r, A, 12 << 10).await.is_err());
        assert_eq!(r.bytes(), 12 << 10, "a failed growth leaves it as it was");
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        let theirs = budget.reserve(other, 20 << 10).await.unwrap();
        r.shrink_to(2 << 10);
        assert_eq!(r.bytes(), 2 << 10);
        drop(r);
        drop(theirs);
        assert_eq!(budget.reserve(A, 20 << 10).await.unwrap().bytes(), 20 << 10);
        let mut empty = budget.reserve(A, 0).await.unwrap();
        budget.grow(&mut empty, A, 1 << 10).await.unwrap();
        assert_eq!(empty.bytes(), 1 << 10);
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A streamed body keeps only its decompressor windows: what it gives back is free
    /// again, in the shared budget and in the client's share alike.
    #[tokio::test]
    async fn shrinking_a_reservation_gives_the_rest_back_to_both_budgets() {
        let budget = HoldBudget::new(20 << 10, 20 << 10, Duration::from_millis(50));
        let mut first = budget.reserve(A, 18 << 10).await.unwrap();
        assert!(budget.reserve(A, 4 << 10).await.is_err(), "only 2 KiB left");
        first.shrink_to(4 << 10);
        assert_eq!(first.bytes(), 4 << 10);
        let second = budget.reserve(A, 16 << 10).await.unwrap();
        assert_eq!(second.bytes(), 16 << 10);
        // Keeping more than it holds, or as much, changes nothing; keeping 0 frees it all.
        first.shrink_to(8 << 10);
        assert_eq!(first.bytes(), 4 << 10);
        first.shrink_to(0);
        assert_eq!(first.bytes(), 0);
        drop(second);
        assert_eq!(budget.reserve(A, 20 << 10).await.unwrap().bytes(), 20 << 10);
        assert_eq!(budget.most(), 20 << 10);
    }
}
