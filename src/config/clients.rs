//! The per-client limits' defaults: `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE`,
//! `PROXY_CLIENT_RATE_BURST` and `PROXY_CLIENT_TOKEN_BUDGET`; and the usage meter that budgets
//! need, `PROXY_USAGE` and `PROXY_USAGE_MAX_MODELS`. The client keys, which may carry each
//! client's own limits, are in `keys.rs`.

use super::settings::Found;
use super::values::ConfigError;
use crate::policy::client_limits::{Budget, LimitSettings, Rate};

/// The usage meter's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UsageSettings {
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
pub(super) fn usage(found: &Found<'_>) -> Result<UsageSettings, ConfigError> {
    let enabled = found.proxy_usage.choice(&[("on", true), ("off", false)])?;
    let max_models = found.proxy_usage_max_models.at_least_one()?;
    Ok(UsageSettings {
        enabled,
        max_models,
    })
}

/// `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`; each off
/// when unset.
pub(super) fn client_limits(found: &Found<'_>) -> Result<LimitSettings, ConfigError> {
    let max_in_flight = found.proxy_client_max_in_flight.positive()?;
    let per_minute = found.proxy_client_rate.positive()?;
    let burst = found.proxy_client_rate_burst.positive()?;
    let rate = match (per_minute, burst) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(found
                .proxy_client_rate_burst
                .invalid("needs PROXY_CLIENT_RATE"))
        }
        (Some(per_minute), burst) => Some(Rate {
            per_minute,
            burst: burst.unwrap_or_else(|| Rate::default_burst(per_minute)),
        }),
    };
    let budget = found.proxy_client_token_budget;
    let token_budget = budget
        .get()
        .map(|text| Budget::parse(text).map_err(|m| budget.invalid(m)))
        .transpose()?;
    Ok(LimitSettings {
        max_in_flight,
        rate,
        token_budget,
    })
}
