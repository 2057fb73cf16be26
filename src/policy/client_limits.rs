//! Limits per client: `PROXY_CLIENT_MAX_IN_FLIGHT` exchanges open at once, and
//! `PROXY_CLIENT_RATE` requests a minute as a token bucket. The service asks once per request;
//! the answer is a permit that holds the client's in-flight slot until the exchange ends, or
//! the limit that refused it and when to try again.
//!
//! State is per process and per client name. It is kept under one mutex held for a few
//! arithmetic steps; with no limit set, nothing is locked at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The limits as configured. Each is off when `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitSettings {
    /// `PROXY_CLIENT_MAX_IN_FLIGHT`.
    pub max_in_flight: Option<u32>,
    /// `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`.
    pub rate: Option<Rate>,
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

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Concurrency,
    Rate,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Concurrency => "concurrency",
            Limit::Rate => "rate",
        }
    }
}

/// A refusal: which limit, and the whole seconds after which a retry may pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub limit: Limit,
    pub retry_after: Duration,
}

/// The limits and every client's state.
pub struct ClientLimits {
    settings: LimitSettings,
    clients: Arc<Mutex<HashMap<Arc<str>, ClientState>>>,
}

#[derive(Debug)]
struct ClientState {
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
}

/// A client's slot among its `PROXY_CLIENT_MAX_IN_FLIGHT`, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    client: Arc<str>,
    clients: Arc<Mutex<HashMap<Arc<str>, ClientState>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = clients.get_mut(&self.client) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

impl ClientLimits {
    pub fn new(settings: LimitSettings) -> ClientLimits {
        ClientLimits {
            settings,
            clients: Arc::default(),
        }
    }

    /// Takes a slot and a token for `client`, or says which limit refused it. A refused request
    /// takes neither, so that waiting on one limit never spends the other.
    pub fn admit(&self, client: &Arc<str>, now: Instant) -> Result<Option<Permit>, Limited> {
        let LimitSettings {
            max_in_flight,
            rate,
        } = self.settings;
        if max_in_flight.is_none() && rate.is_none() {
            return Ok(None);
        }
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let state = clients
            .entry(client.clone())
            .or_insert_with(|| ClientState {
                in_flight: 0,
                tokens: rate.map_or(0.0, |r| f64::from(r.burst)),
                refilled: now,
            });
        if max_in_flight.is_some_and(|max| state.in_flight >= max) {
            // A slot frees when some exchange of this client ends, which cannot be known.
            return Err(Limited {
                limit: Limit::Concurrency,
                retry_after: Duration::from_secs(1),
            });
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
        if max_in_flight.is_none() {
            return Ok(None);
        }
        state.in_flight += 1;
        Ok(Some(Permit {
            client: client.clone(),
            clients: self.clients.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_in_flight: Option<u32>, rate: Option<(u32, u32)>) -> ClientLimits {
        ClientLimits::new(LimitSettings {
            max_in_flight,
            rate: rate.map(|(per_minute, burst)| Rate { per_minute, burst }),
        })
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
