//! The client limits kept in this process: each client's in-flight count, token bucket and
//! budget spent, by client name, under one mutex held for a few arithmetic steps. With no
//! limit set, nothing is locked at all. An admission is a [`LocalPermit`] that gives back its
//! slot and reservation when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::client_limits::{unix_now, Budget, Limit, LimitSettings, Limited};

type Clients = Arc<Mutex<HashMap<Arc<str>, ClientState>>>;

/// The default limits and every client's state. A clone shares the state.
#[derive(Clone)]
pub(super) struct LocalLimits {
    defaults: LimitSettings,
    clients: Clients,
}

#[derive(Debug)]
struct ClientState {
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
    /// The budget's window (its length and its number since the epoch), and the tokens
    /// charged in it.
    window: (u64, u64),
    spent: u64,
    /// The tokens that exchanges in flight reserved.
    reserved: u64,
}

impl ClientState {
    /// The tokens charged in the window that `unix_secs` falls in.
    fn spent_in(&mut self, budget: &Budget, unix_secs: u64) -> u64 {
        let window = (budget.window.seconds(), budget.window_at(unix_secs).0);
        if self.window != window {
            self.window = window;
            self.spent = 0;
        }
        self.spent
    }
}

/// A client's admission: its in-flight slot among its `PROXY_CLIENT_MAX_IN_FLIGHT`, and the
/// tokens it reserved of its budget, given back when dropped; and its token budget, charged
/// when the exchange's cost is known.
#[derive(Debug)]
pub(super) struct LocalPermit {
    client: Arc<str>,
    clients: Clients,
    holds_slot: bool,
    reserved: u64,
    budget: Option<Budget>,
}

impl LocalPermit {
    /// Adds an exchange's tokens to the client's count for the current window.
    pub(super) fn charge(&self, tokens: u64) {
        if let Some(budget) = self.budget {
            charge(&self.clients, &self.client, budget, tokens);
        }
    }

    /// The budget this admission is charged to, if the client has one.
    pub(super) fn budget(&self) -> Option<Budget> {
        self.budget
    }

    pub(super) fn client(&self) -> &Arc<str> {
        &self.client
    }
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        if !self.holds_slot && self.reserved == 0 {
            return;
        }
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = clients.get_mut(&self.client) {
            state.in_flight = state.in_flight.saturating_sub(u32::from(self.holds_slot));
            state.reserved = state.reserved.saturating_sub(self.reserved);
        }
    }
}

/// Adds tokens to a client's count, making its state if this process has not admitted it yet
/// (the shared store did). Such a state's bucket is full: its first admission here clamps it
/// to the burst.
fn charge(clients: &Clients, client: &Arc<str>, budget: Budget, tokens: u64) {
    let mut clients = clients.lock().unwrap_or_else(PoisonError::into_inner);
    let state = clients
        .entry(client.clone())
        .or_insert_with(|| ClientState {
            in_flight: 0,
            tokens: f64::MAX,
            refilled: Instant::now(),
            window: (0, 0),
            spent: 0,
            reserved: 0,
        });
    state.spent_in(&budget, unix_now());
    state.spent = state.spent.saturating_add(tokens);
}

impl LocalLimits {
    /// The defaults, and each client's own limits over them.
    pub(super) fn limits_of(&self, own: LimitSettings) -> LimitSettings {
        own.or(self.defaults)
    }

    /// Adds tokens to a client's count here, as an exchange admitted elsewhere (by the shared
    /// store) spent them, so that this process's own count is current if it must decide alone.
    pub(super) fn charge(&self, client: &Arc<str>, budget: Budget, tokens: u64) {
        charge(&self.clients, client, budget, tokens);
    }

    pub(super) fn new(defaults: LimitSettings) -> LocalLimits {
        LocalLimits {
            defaults,
            clients: Arc::default(),
        }
    }

    /// Takes a slot and a token for `client`, whose key entry sets `own` limits, or says which
    /// limit refused it. A refused request takes neither, so that waiting on one limit never
    /// spends another. `unix_secs` places the request in its budget's window. Under a budget,
    /// the request is admitted only while the tokens spent and those reserved by exchanges in
    /// flight are below it, and reserves `reserve` tokens until its permit is dropped.
    pub(super) fn admit(
        &self,
        client: &Arc<str>,
        own: LimitSettings,
        now: Instant,
        unix_secs: u64,
        reserve: u64,
    ) -> Result<Option<LocalPermit>, Limited> {
        let limits = own.or(self.defaults);
        if limits.is_none() {
            return Ok(None);
        }
        let LimitSettings {
            max_in_flight,
            rate,
            token_budget,
        } = limits;
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let state = clients
            .entry(client.clone())
            .or_insert_with(|| ClientState {
                in_flight: 0,
                tokens: rate.map_or(0.0, |r| f64::from(r.burst)),
                refilled: now,
                window: (0, 0),
                spent: 0,
                reserved: 0,
            });
        if max_in_flight.is_some_and(|max| state.in_flight >= max) {
            // A slot frees when some exchange of this client ends, which cannot be known.
            return Err(Limited {
                limit: Limit::Concurrency,
                retry_after: Duration::from_secs(1),
            });
        }
        if let Some(budget) = &token_budget {
            let spent = state.spent_in(budget, unix_secs);
            if spent.saturating_add(state.reserved) >= budget.tokens {
                return Err(Limited {
                    limit: Limit::TokenBudget,
                    retry_after: Duration::from_secs(budget.window_at(unix_secs).1),
                });
            }
        }
        if let Some(rate) = rate {
            let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
            state.tokens =
                (state.tokens + elapsed * rate.tokens_per_second()).min(f64::from(rate.burst));
            state.refilled = now;
            if state.tokens < 1.0 {
                let wait = (1.0 - state.tokens) / rate.tokens_per_second();
                return Err(Limited {
                    limit: Limit::Rate,
                    retry_after: Duration::from_secs(wait.ceil().max(1.0) as u64),
                });
            }
            state.tokens -= 1.0;
        }
        if max_in_flight.is_none() && token_budget.is_none() {
            return Ok(None);
        }
        let holds_slot = max_in_flight.is_some();
        if holds_slot {
            state.in_flight += 1;
        }
        let reserved = limits.reservation(reserve);
        state.reserved = state.reserved.saturating_add(reserved);
        Ok(Some(LocalPermit {
            client: client.clone(),
            clients: self.clients.clone(),
            holds_slot,
            reserved,
            budget: token_budget,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::client_limits::Rate;

    fn limits(max_in_flight: Option<u32>, rate: Option<(u32, u32)>) -> Limits {
        Limits(LocalLimits::new(LimitSettings {
            max_in_flight,
            rate: rate.map(|(per_minute, burst)| Rate { per_minute, burst }),
            token_budget: None,
        }))
    }

    struct Limits(LocalLimits);

    impl Limits {
        fn admit(&self, client: &Arc<str>, now: Instant) -> Result<Option<LocalPermit>, Limited> {
            self.0.admit(client, LimitSettings::default(), now, 0, 0)
        }
    }

    #[test]
    fn a_budget_refuses_once_spent_until_its_window_ends() {
        let budget = Budget::parse("100/minute").unwrap();
        let l = LocalLimits::new(LimitSettings {
            token_budget: Some(budget),
            ..LimitSettings::default()
        });
        let a: Arc<str> = Arc::from("a");
        let now = Instant::now();
        // 10 s into a minute.
        let at = 60 * 1000 + 10;
        let permit = l
            .admit(&a, LimitSettings::default(), now, at, 0)
            .unwrap()
            .unwrap();
        // The answer that crosses the budget finishes; the state is charged by the clock now,
        // so charge within the same window by hand.
        l.clients.lock().unwrap().get_mut(&a).unwrap().spent = 150;
        drop(permit);
        let refused = l
            .admit(&a, LimitSettings::default(), now, at + 5, 0)
            .unwrap_err();
        assert_eq!(refused.limit, Limit::TokenBudget);
        assert_eq!(refused.retry_after, Duration::from_secs(45));
        // The next window starts from nothing.
        assert!(l
            .admit(&a, LimitSettings::default(), now, at + 50, 0)
            .is_ok());
        // A client's own budget wins over the default.
        let own = LimitSettings {
            token_budget: Some(Budget::parse("10/day").unwrap()),
            ..LimitSettings::default()
        };
        let b: Arc<str> = Arc::from("b");
        l.admit(&b, own, now, at, 0).unwrap();
        l.clients.lock().unwrap().get_mut(&b).unwrap().spent = 10;
        let refused = l.admit(&b, own, now, at, 0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(86_400 - at));
    }

    #[test]
    fn tokens_charged_before_any_admission_here_count_and_leave_the_bucket_full() {
        let budget = Budget::parse("100/day").unwrap();
        let l = LocalLimits::new(LimitSettings {
            token_budget: Some(budget),
            rate: Some(Rate {
                per_minute: 60,
                burst: 2,
            }),
            ..LimitSettings::default()
        });
        let a: Arc<str> = Arc::from("a");
        // Admitted elsewhere (the shared store): the charge still lands here.
        l.charge(&a, budget, 150);
        let refused = l
            .admit(&a, LimitSettings::default(), Instant::now(), unix_now(), 0)
            .unwrap_err();
        assert_eq!(refused.limit, Limit::TokenBudget);
        let b: Arc<str> = Arc::from("b");
        l.charge(&b, budget, 1);
        let now = Instant::now();
        for _ in 0..2 {
            assert!(l
                .admit(&b, LimitSettings::default(), now, unix_now(), 0)
                .is_ok());
        }
        assert_eq!(
            l.admit(&b, LimitSettings::default(), now, unix_now(), 0)
                .unwrap_err()
                .limit,
            Limit::Rate
        );
    }

    #[test]
    fn requests_in_flight_reserve_their_part_of_the_budget_until_charged() {
        let l = LocalLimits::new(LimitSettings {
            token_budget: Some(Budget::parse("100/day").unwrap()),
            ..LimitSettings::default()
        });
        let a: Arc<str> = Arc::from("a");
        let now = Instant::now();
        let admit = || l.admit(&a, LimitSettings::default(), now, 1000, 40);
        // 0, 40 and 80 reserved leave room; 120 does not.
        let permits: Vec<LocalPermit> = (0..3).map(|_| admit().unwrap().unwrap()).collect();
        assert_eq!(admit().unwrap_err().limit, Limit::TokenBudget);
        // One ends having cost 29: 29 spent and 80 reserved are over the budget still.
        let mut permits = permits.into_iter();
        let first = permits.next().unwrap();
        l.clients.lock().unwrap().get_mut(&a).unwrap().spent = 29;
        drop(first);
        assert!(admit().is_err());
        // Another ends: 29 spent and 40 reserved leave room again.
        drop(permits.next());
        let again = admit().unwrap().unwrap();
        assert_eq!(l.clients.lock().unwrap()[&a].reserved, 80);
        drop(again);
        drop(permits);
        assert_eq!(l.clients.lock().unwrap()[&a].reserved, 0);
    }

    #[test]
    fn no_limits_never_refuse_and_hold_nothing() {
        let l = limits(None, None);
        let client: Arc<str> = Arc::from("a");
        for _ in 0..1000 {
            assert!(matches!(l.admit(&client, Instant::now()), Ok(None)));
        }
    }

    #[test]
    fn in_flight_slots_are_per_client_and_come_back_when_dropped() {
        let l = limits(Some(2), None);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = Instant::now();
        let first = l.admit(&a, now).unwrap();
        let _second = l.admit(&a, now).unwrap();
        assert_eq!(
            l.admit(&a, now).err().map(|e| e.limit),
            Some(Limit::Concurrency)
        );
        assert!(l.admit(&b, now).is_ok());
        drop(first);
        assert!(l.admit(&a, now).is_ok());
    }

    #[test]
    fn the_bucket_holds_the_burst_and_refills_at_the_rate() {
        let l = limits(None, Some((60, 3)));
        let a: Arc<str> = Arc::from("a");
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.admit(&a, start).is_ok());
        }
        let refused = l.admit(&a, start).unwrap_err();
        assert_eq!(refused.limit, Limit::Rate);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert!(l.admit(&a, start + Duration::from_millis(1000)).is_ok());
        assert!(l.admit(&a, start + Duration::from_millis(1500)).is_err());
        // A long pause saves no more than the burst.
        let later = start + Duration::from_secs(600);
        for _ in 0..3 {
            assert!(l.admit(&a, later).is_ok());
        }
        assert!(l.admit(&a, later).is_err());
    }

    #[test]
    fn a_slow_rate_asks_for_a_longer_wait_and_a_refusal_spends_nothing() {
        let l = limits(Some(1), Some((6, 1)));
        let a: Arc<str> = Arc::from("a");
        let start = Instant::now();
        let held = l.admit(&a, start).unwrap();
        assert_eq!(
            l.admit(&a, start).err().map(|e| e.limit),
            Some(Limit::Concurrency)
        );
        drop(held);
        let refused = l.admit(&a, start).unwrap_err();
        assert_eq!(refused.limit, Limit::Rate);
        assert_eq!(refused.retry_after, Duration::from_secs(10));
    }
}
