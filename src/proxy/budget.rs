//! The hold budget: request-body bytes held in memory at once, across all requests
//! (`limits.hold_total`).
//!
//! Without it, memory is bounded only per request: `max_connections` uploads each holding
//! `hold_bytes` would be 16 GiB at the defaults. A request reserves what it may hold before
//! it reads its body, all at once, so no request waits while holding part of the budget
//! (no deadlock); it waits at most `limits.hold_wait`, then gets 503. The reservation is
//! accounted in KiB and is released when the request's [`Reservation`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ProxyError;

/// Bytes per unit of the budget.
const UNIT: u64 = 1024;

/// The budget shared by every request.
#[derive(Debug)]
pub(super) struct HoldBudget {
    units: Arc<Semaphore>,
    wait: Duration,
}

/// A part of the budget, given back when dropped.
#[derive(Debug)]
pub(super) struct Reservation(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl HoldBudget {
    /// A budget of `total` bytes; a reservation waits at most `wait`.
    pub(super) fn new(total: u64, wait: Duration) -> HoldBudget {
        let units = usize::try_from(total.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        HoldBudget {
            units: Arc::new(Semaphore::new(units)),
            wait,
        }
    }

    /// Reserves `bytes` (nothing for 0), waiting up to the hold wait.
    pub(super) async fn reserve(&self, bytes: u64) -> Result<Reservation, ProxyError> {
        if bytes == 0 {
            return Ok(Reservation(None));
        }
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Reservation(Some(permit))),
            // The semaphore is never closed; a reservation larger than the whole budget
            // (impossible: validation keeps hold_total >= hold_bytes) fails the same way.
            Ok(Err(_)) | Err(_) => Err(ProxyError::Busy(self.wait)),
        }
    }
}
