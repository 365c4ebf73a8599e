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

/// The least [`HoldBudget::extend_by_steps`] adds at a time.
const STEP: u64 = 64 << 10;

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

/// A part of the budget, given back when dropped (`Default`: none).
#[derive(Debug, Default)]
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
        self.reserve_within(client, bytes, self.wait).await
    }

    /// Makes `reservation` (held for `client`, covering `have` bytes) cover `want`: at once
    /// if the budget has the difference now; else it gives all of it back and waits (up to
    /// the hold wait) for `full` at once, as a request that knew its size from the start
    /// would. Waiting for more while holding part of the budget could deadlock with another
    /// request doing the same: two chunked uploads of one client, each holding half its
    /// share and waiting for the other's half (found in review). Returns what it covers.
    ///
    /// No reservation goes past a client's share, which none could ever get (validation
    /// keeps `hold_bytes` within it): `want` and `full` are cut to it (found in review for
    /// a gRPC message of `hold_bytes` and its prefix, which could never pass).
    pub(super) async fn extend(
        &self,
        reservation: &mut Reservation,
        client: IpAddr,
        (have, want, full): (u64, u64, u64),
    ) -> Result<u64, ProxyError> {
        let want = want.min(self.most());
        let full = full.min(self.most());
        if want <= have {
            return Ok(have);
        }
        if let Ok(more) = self
            .reserve_within(client, want - have, Duration::ZERO)
            .await
        {
            reservation.merge(more);
            return Ok(want);
        }
        *reservation = Reservation(None);
        *reservation = self.reserve(client, full.max(want)).await?;
        Ok(full.max(want))
    }

    /// [`HoldBudget::extend`] for what is held a piece at a time (a WebSocket or gRPC
    /// message): by at least [`STEP`] (up to `full`), so that a message cut into many small
    /// pieces does not take a budget unit, and maybe a wait, for each.
    pub(super) async fn extend_by_steps(
        &self,
        reservation: &mut Reservation,
        client: IpAddr,
        (have, want, full): (u64, u64, u64),
    ) -> Result<u64, ProxyError> {
        if want <= have {
            return Ok(have);
        }
        let want = want.max(have + STEP).min(full);
        self.extend(reservation, client, (have, want, full)).await
    }

    /// [`HoldBudget::reserve`], waiting at most `wait` (none: only what is free now).
    async fn reserve_within(
        &self,
        client: IpAddr,
        bytes: u64,
        wait: Duration,
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
        // A zero wait still polls the acquisition once: what is free now is taken.
        let got = tokio::time::timeout(wait, acquire).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation extended in steps holds their sum, in the shared budget and the
    /// client's share, and gives it all back at once; when the budget has no room at once,
    /// it gives back what it holds and waits for the whole (so two growing requests of one
    /// client do not each hold half and wait for the other).
    #[tokio::test]
    async fn an_extended_reservation_holds_the_sum_or_waits_for_the_whole() {
        let budget = HoldBudget::new(40 << 10, 20 << 10, Duration::from_millis(300));
        let mut r = budget.reserve(A, 4 << 10).await.unwrap();
        let have = budget
            .extend(&mut r, A, (4 << 10, 12 << 10, 20 << 10))
            .await
            .unwrap();
        assert_eq!((have, r.bytes()), (12 << 10, 12 << 10));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        let theirs = budget.reserve(other, 20 << 10).await.unwrap();
        drop(theirs);
        // Two of one client's requests, each holding 8 KiB of its 20 KiB share, each
        // wanting 16: the first to find no room gives its 8 back and waits for all 20; the
        // other, finding room then, grows, ends, and lets it through.
        drop(r);
        let mut a = budget.reserve(A, 8 << 10).await.unwrap();
        let mut b = budget.reserve(A, 8 << 10).await.unwrap();
        let grown_b = budget
            .extend(&mut b, A, (8 << 10, 12 << 10, 20 << 10))
            .await
            .unwrap();
        assert_eq!(grown_b, 12 << 10, "room for 4 more at once");
        let waiting = async {
            budget
                .extend(&mut a, A, (8 << 10, 16 << 10, 20 << 10))
                .await
        };
        let finishing = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(b);
        };
        let (grown_a, ()) = tokio::join!(waiting, finishing);
        assert_eq!(grown_a.unwrap(), 20 << 10);
        assert_eq!(a.bytes(), 20 << 10);
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
