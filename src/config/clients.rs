//! The per-client limits: `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE` and
//! `PROXY_CLIENT_RATE_BURST`. The client keys themselves are in `keys.rs`.

use super::values::{invalid, positive_number, ConfigError};
use crate::policy::client_limits::{LimitSettings, Rate};

/// `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE` and `PROXY_CLIENT_RATE_BURST`; each off
/// when unset.
pub(super) fn client_limits(
    max_in_flight: &Option<String>,
    rate: &Option<String>,
    burst: &Option<String>,
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
    Ok(LimitSettings {
        max_in_flight,
        rate,
    })
}
