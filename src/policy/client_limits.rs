//! Limits per client: `PROXY_CLIENT_MAX_IN_FLIGHT` exchanges open at once,
//! `PROXY_CLIENT_RATE` requests a minute as a token bucket, and `PROXY_CLIENT_TOKEN_BUDGET`
//! tokens in a window aligned to UTC. A client's key entry may set its own. The service asks
//! once per request; the answer is a permit that holds the client's in-flight slot until the
//! exchange ends and charges the tokens it cost, or the limit that refused it and when to try
//! again.
//!
//! State is per process and per client name. It is kept under one mutex held for a few
//! arithmetic steps; with no limit set, nothing is locked at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The limits as configured, or as one client's key entry sets them. Each is off (or, in an
/// entry, left to the default) when `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitSettings {
    /// `PROXY_CLIENT_MAX_IN_FLIGHT`, or `in_flight=`.
    pub max_in_flight: Option<u32>,
    /// `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`, or `rate=` and `burst=`.
    pub rate: Option<Rate>,
    /// `PROXY_CLIENT_TOKEN_BUDGET`, or `token_budget=`.
    pub token_budget: Option<Budget>,
}

impl LimitSettings {
    /// A client's own limits, with `defaults` for those its entry leaves unset.
    pub fn or(self, defaults: LimitSettings) -> LimitSettings {
        LimitSettings {
            max_in_flight: self.max_in_flight.or(defaults.max_in_flight),
            rate: self.rate.or(defaults.rate),
            token_budget: self.token_budget.or(defaults.token_budget),
        }
    }

    /// What a request that would reserve `reserve` tokens reserves under these limits: all of
    /// it under a budget, nothing without one.
    pub fn reservation(&self, reserve: u64) -> u64 {
        if self.token_budget.is_some() {
            reserve
        } else {
            0
        }
    }

    fn is_none(&self) -> bool {
        self.max_in_flight.is_none() && self.rate.is_none() && self.token_budget.is_none()
    }
}

/// A token bucket: `per_minute` tokens added evenly over each minute, at most `burst` saved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// The burst when none is set: ten seconds' worth of the rate, and at least one. A client
    /// that was quiet may send that many at once; over any minute it gets at most
    /// `per_minute + burst`.
    pub fn default_burst(per_minute: u32) -> u32 {
        per_minute.div_ceil(6).max(1)
    }

    fn tokens_per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// The window a token budget counts in, aligned to UTC: a minute starts at second 0, an hour
/// at minute 0, a day at midnight UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// `N/minute`, `N/hour` or `N/day`: the input plus output tokens a client may use in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub tokens: u64,
    pub window: Window,
}

impl Budget {
    pub fn parse(text: &str) -> Result<Budget, String> {
        let form = || format!("{text:?} is not of the form N/minute, N/hour or N/day");
        let (tokens, window) = text.trim().split_once('/').ok_or_else(form)?;
        let tokens: u64 = tokens.trim().parse().map_err(|_| form())?;
        if tokens == 0 {
            return Err("must be at least 1 token".to_owned());
        }
        let window = match window.trim() {
            "minute" => Window::Minute,
            "hour" => Window::Hour,
            "day" => Window::Day,
            _ => return Err(form()),
        };
        Ok(Budget { tokens, window })
    }

    /// The window `unix_secs` falls in, and the whole seconds until it ends.
    fn window_at(&self, unix_secs: u64) -> (u64, u64) {
        let length = self.window.seconds();
        (unix_secs / length, length - unix_secs % length)
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tokens, self.window.name())
    }
}

/// Seconds since the Unix epoch, by the system clock: the budgets' windows are UTC's.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Concurrency,
    Rate,
    TokenBudget,
    /// The shared limits' store did not answer, and `PROXY_LIMITS_REDIS_FALLBACK=refuse`.
    Unavailable,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Concurrency => "concurrency",
            Limit::Rate => "rate",
            Limit::TokenBudget => "token_budget",
            Limit::Unavailable => "unavailable",
        }
    }
}

/// A refusal: which limit, and the whole seconds after which a retry may pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub limit: Limit,
    pub retry_after: Duration,
}

type Clients = Arc<Mutex<HashMap<Arc<str>, ClientState>>>;

/// The default limits and every client's state. A clone shares the state.
#[derive(Clone)]
pub struct ClientLimits {
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
pub struct Permit {
    client: Arc<str>,
    clients: Clients,
    holds_slot: bool,
    reserved: u64,
    budget: Option<Budget>,
}

impl Permit {
    /// Adds an exchange's tokens to the client's count for the current window.
    pub fn charge(&self, tokens: u64) {
        if let Some(budget) = self.budget {
            charge(&self.clients, &self.client, budget, tokens);
        }
    }

    /// The budget this admission is charged to, if the client has one.
    pub fn budget(&self) -> Option<Budget> {
        self.budget
    }

    pub fn client(&self) -> &Arc<str> {
        &self.client
    }
}

impl Drop for Permit {
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

impl ClientLimits {
    /// The defaults, and each client's own limits over them.
    pub fn limits_of(&self, own: LimitSettings) -> LimitSettings {
        own.or(self.defaults)
    }

    /// Adds tokens to a client's count here, as an exchange admitted elsewhere (by the shared
    /// store) spent them, so that this process's own count is current if it must decide alone.
    pub fn charge(&self, client: &Arc<str>, budget: Budget, tokens: u64) {
        charge(&self.clients, client, budget, tokens);
    }

    pub fn new(defaults: LimitSettings) -> ClientLimits {
        ClientLimits {
            defaults,
            clients: Arc::default(),
        }
    }

    /// Takes a slot and a token for `client`, whose key entry sets `own` limits, or says which
    /// limit refused it. A refused request takes neither, so that waiting on one limit never
    /// spends another. `unix_secs` places the request in its budget's window. Under a budget,
    /// the request is admitted only while the tokens spent and those reserved by exchanges in
    /// flight are below it, and reserves `reserve` tokens until its permit is dropped.
    pub fn admit(
        &self,
        client: &Arc<str>,
        own: LimitSettings,
        now: Instant,
        unix_secs: u64,
        reserve: u64,
    ) -> Result<Option<Permit>, Limited> {
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
        Ok(Some(Permit {
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

    fn limits(max_in_flight: Option<u32>, rate: Option<(u32, u32)>) -> Limits {
        Limits(ClientLimits::new(LimitSettings {
            max_in_flight,
            rate: rate.map(|(per_minute, burst)| Rate { per_minute, burst }),
            token_budget: None,
        }))
    }

    struct Limits(ClientLimits);

    impl Limits {
        fn admit(&self, client: &Arc<str>, now: Instant) -> Result<Option<Permit>, Limited> {
            self.0.admit(client, LimitSettings::default(), now, 0, 0)
        }
    }

    #[test]
    fn a_budget_refuses_once_spent_until_its_window_ends() {
        let budget = Budget::parse("100/minute").unwrap();
        let l = ClientLimits::new(LimitSettings {
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
        let l = ClientLimits::new(LimitSettings {
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
        let l = ClientLimits::new(LimitSettings {
            token_budget: Some(Budget::parse("100/day").unwrap()),
            ..LimitSettings::default()
        });
        let a: Arc<str> = Arc::from("a");
        let now = Instant::now();
        let admit = || l.admit(&a, LimitSettings::default(), now, 1000, 40);
        // 0, 40 and 80 reserved leave room; 120 does not.
        let permits: Vec<Permit> = (0..3).map(|_| admit().unwrap().unwrap()).collect();
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
    fn budgets_parse_only_their_forms() {
        assert_eq!(
            Budget::parse("2000000/day").unwrap(),
            Budget {
                tokens: 2_000_000,
                window: Window::Day
            }
        );
        for bad in ["", "10", "10/week", "0/day", "-1/day", "x/hour", "10/"] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn the_default_burst_is_ten_seconds_of_the_rate() {
        assert_eq!(Rate::default_burst(60), 10);
        assert_eq!(Rate::default_burst(1), 1);
        assert_eq!(Rate::default_burst(600), 100);
    }
}
