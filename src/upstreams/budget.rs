//! The retry budget that bounds failovers, as linkerd's and tower's (`TpsBudget`) bound
//! retries: failovers may be 20 % of the requests of the last 10 seconds, plus 3 a second.
//! When every upstream is refusing, a storm of requests cannot become a storm of attempts.

use std::sync::{Mutex, PoisonError};

/// Seconds the budget looks back.
const WINDOW: usize = 10;
/// The share of requests that may fail over.
const RATIO: f64 = 0.2;
/// Failovers allowed each second beyond the share, so that a quiet proxy can still fail over.
const PER_SECOND: u32 = 3;

#[derive(Clone, Copy, Default)]
struct Second {
    /// Which second since the set's start this slot holds.
    at: u64,
    requests: u32,
    /// Failovers counted against the share.
    shared: u32,
    /// Failovers counted against the second's own allowance.
    extra: u32,
}

/// Requests and failovers of the last [`WINDOW`] seconds.
#[derive(Default)]
pub(super) struct Budget(Mutex<[Second; WINDOW]>);

impl Budget {
    /// A request: it adds to the share.
    pub(super) fn deposit(&self, now_ms: u64) {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot(&mut slots, now_ms).requests += 1;
    }

    /// Whether one more failover is within the budget; if it is, it is spent.
    pub(super) fn withdraw(&self, now_ms: u64) -> bool {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ms / 1000;
        let recent = slots
            .iter()
            .filter(|s| s.at + WINDOW as u64 > now && s.at <= now);
        let (requests, shared) = recent.fold((0u64, 0u64), |(r, f), s| {
            (r + u64::from(s.requests), f + u64::from(s.shared))
        });
        let this = slot(&mut slots, now_ms);
        if (shared as f64) < RATIO * requests as f64 - 0.5 {
            this.shared += 1;
            true
        } else if this.extra < PER_SECOND {
            this.extra += 1;
            true
        } else {
            false
        }
    }
}

/// This second's slot, emptied if it held an older second.
fn slot(slots: &mut [Second; WINDOW], now_ms: u64) -> &mut Second {
    let now = now_ms / 1000;
    let slot = &mut slots[(now % WINDOW as u64) as usize];
    if slot.at != now {
        *slot = Second {
            at: now,
            ..Second::default()
        };
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failovers_are_a_fifth_of_requests_plus_three_a_second() {
        let budget = Budget::default();
        for _ in 0..100 {
            budget.deposit(5_000);
        }
        let granted = (0..100).filter(|_| budget.withdraw(5_000)).count();
        assert_eq!(granted, 20 + 3);
        // The next second brings three more; ten seconds on, the share is gone.
        assert_eq!((0..10).filter(|_| budget.withdraw(6_000)).count(), 3);
        assert_eq!((0..10).filter(|_| budget.withdraw(16_500)).count(), 3);
    }
}
