//! The timeouts: `PROXY_CONNECT_TIMEOUT`, `PROXY_FIRST_BYTE_TIMEOUT`, `PROXY_IDLE_TIMEOUT`,
//! `PROXY_TOTAL_TIMEOUT` and `PROXY_HEADER_READ_TIMEOUT`.

use std::time::Duration;

use super::settings::Found;
use super::values::ConfigError;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// TCP plus TLS connect to the upstream.
    pub connect: Duration,
    /// From the start of the request to the upstream's response head.
    pub first_byte: Duration,
    /// Longest gap between two body frames once a body flows, in either direction.
    pub idle: Duration,
    /// Optional cap on a whole exchange.
    pub total: Option<Duration>,
    /// A client must send its whole request head within this.
    pub header_read: Duration,
}

pub(super) fn validate(found: &Found<'_>) -> Result<Timeouts, ConfigError> {
    let timeouts = Timeouts {
        connect: found.proxy_connect_timeout.duration()?,
        first_byte: found.proxy_first_byte_timeout.duration()?,
        idle: found.proxy_idle_timeout.duration()?,
        total: found.proxy_total_timeout.optional_duration()?,
        header_read: found.proxy_header_read_timeout.duration()?,
    };
    for (value, took) in [
        (found.proxy_connect_timeout, timeouts.connect),
        (found.proxy_first_byte_timeout, timeouts.first_byte),
        (found.proxy_idle_timeout, timeouts.idle),
        (
            found.proxy_total_timeout,
            timeouts.total.unwrap_or(Duration::MAX),
        ),
        (found.proxy_header_read_timeout, timeouts.header_read),
    ] {
        if took.is_zero() {
            return Err(value.invalid("must be greater than zero"));
        }
    }
    Ok(timeouts)
}
