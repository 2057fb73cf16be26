//! Limits per client, as rules: `PROXY_CLIENT_MAX_IN_FLIGHT` exchanges open at once,
//! `PROXY_CLIENT_RATE` requests a minute as a token bucket, and `PROXY_CLIENT_TOKEN_BUDGET`
//! tokens in a window aligned to UTC; a client's key entry may set its own. What refused a
//! request, and when to try again. Where the counts are kept is [`crate::store`]'s.

use std::time::{Duration, SystemTime};

/// The limits as configured, or as one client's key entry sets them. Each is off (or, in an
/// entry, left to the default) when `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LimitSettings {
    /// `PROXY_CLIENT_MAX_IN_FLIGHT`, or `in_flight=`.
    pub max_in_flight: Option<u32>,
    /// `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`, or `rate=` and `burst=`.
    pub rate: Option<Rate>,
    /// `PROXY_CLIENT_TOKEN_BUDGET`, or `token_budget=`.
    pub token_budget: Option<Budget>,
}

impl LimitSettings {
    /// A client's own limits, with `defaults` for those its entry leaves unset.
    pub(crate) fn or(self, defaults: LimitSettings) -> LimitSettings {
        LimitSettings {
            max_in_flight: self.max_in_flight.or(defaults.max_in_flight),
            rate: self.rate.or(defaults.rate),
            token_budget: self.token_budget.or(defaults.token_budget),
        }
    }

    /// What a request that would reserve `reserve` tokens reserves under these limits: all of
    /// it under a budget, nothing without one.
    pub(crate) fn reservation(&self, reserve: u64) -> u64 {
        if self.token_budget.is_some() {
            reserve
        } else {
            0
        }
    }

    pub(crate) fn is_none(&self) -> bool {
        self.max_in_flight.is_none() && self.rate.is_none() && self.token_budget.is_none()
    }
}

/// A token bucket: `per_minute` tokens added evenly over each minute, at most `burst` saved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// The burst when none is set: ten seconds' worth of the rate, and at least one. A client
    /// that was quiet may send that many at once; over any minute it gets at most
    /// `per_minute + burst`.
    pub(crate) fn default_burst(per_minute: u32) -> u32 {
        per_minute.div_ceil(6).max(1)
    }

    pub(crate) fn tokens_per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// The window a token budget counts in, aligned to UTC: a minute starts at second 0, an hour
/// at minute 0, a day at midnight UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub(crate) fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// `N/minute`, `N/hour` or `N/day`: the input plus output tokens a client may use in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    pub tokens: u64,
    pub window: Window,
}

impl Budget {
    pub(crate) fn parse(text: &str) -> Result<Budget, String> {
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
    pub(crate) fn window_at(&self, unix_secs: u64) -> (u64, u64) {
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
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Concurrency,
    Rate,
    TokenBudget,
    /// The shared limits' store did not answer, and `PROXY_LIMITS_REDIS_FALLBACK=refuse`.
    Unavailable,
}

impl Limit {
    pub(crate) fn label(self) -> &'static str {
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
pub(crate) struct Limited {
    pub limit: Limit,
    pub retry_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_default_burst_is_ten_seconds_of_the_rate() {
        assert_eq!(Rate::default_burst(60), 10);
        assert_eq!(Rate::default_burst(1), 1);
        assert_eq!(Rate::default_burst(600), 100);
    }
}
