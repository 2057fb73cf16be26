//! The per-client limits' defaults: `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE`,
//! `PROXY_CLIENT_RATE_BURST` and `PROXY_CLIENT_TOKEN_BUDGET`; and the usage meter that budgets
//! need, `PROXY_USAGE` and `PROXY_USAGE_MAX_MODELS`. The client keys, which may carry each
//! client's own limits, are in `keys.rs`.

use super::values::{invalid, positive_number, present, ConfigError};
use crate::policy::client_limits::{Budget, LimitSettings, Rate};

/// The usage meter's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageSettings {
    /// `PROXY_USAGE`: read each answer's `usage` (on, the default) or not.
    pub enabled: bool,
    /// `PROXY_USAGE_MAX_MODELS`: distinct `model` label values; the rest count as `other`.
    pub max_models: usize,
}

impl Default for UsageSettings {
    fn default() -> UsageSettings {
        UsageSettings {
            enabled: true,
            max_models: 100,
        }
    }
}

/// `PROXY_USAGE` and `PROXY_USAGE_MAX_MODELS`.
pub(super) fn usage(
    enabled: &Option<String>,
    max_models: &Option<String>,
) -> Result<UsageSettings, ConfigError> {
    let enabled = match present(enabled).unwrap_or("on") {
        "on" => true,
        "off" => false,
        other => {
            return Err(invalid(
                "PROXY_USAGE",
                format!("{other:?} is neither \"on\" nor \"off\""),
            ))
        }
    };
    let max_models =
        positive_number("PROXY_USAGE_MAX_MODELS", max_models)?.map_or(100, |n| n as usize);
    Ok(UsageSettings {
        enabled,
        max_models,
    })
}

/// `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`; each off
/// when unset.
pub(super) fn client_limits(
    max_in_flight: &Option<String>,
    rate: &Option<String>,
    burst: &Option<String>,
    token_budget: &Option<String>,
) -> Result<LimitSettings, ConfigError> {
    let max_in_flight = positive_number("PROXY_CLIENT_MAX_IN_FLIGHT", max_in_flight)?;
    let per_minute = positive_number("PROXY_CLIENT_RATE", rate)?;
    let burst = positive_number("PROXY_CLIENT_RATE_BURST", burst)?;
    let rate = match (per_minute, burst) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(invalid(
                "PROXY_CLIENT_RATE_BURST",
                "needs PROXY_CLIENT_RATE",
            ))
        }
        (Some(per_minute), burst) => Some(Rate {
            per_minute,
            burst: burst.unwrap_or_else(|| Rate::default_burst(per_minute)),
        }),
    };
    let token_budget = present(token_budget)
        .map(|text| Budget::parse(text).map_err(|m| invalid("PROXY_CLIENT_TOKEN_BUDGET", m)))
        .transpose()?;
    Ok(LimitSettings {
        max_in_flight,
        rate,
        token_budget,
    })
}
