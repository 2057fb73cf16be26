//! The timeouts: `PROXY_CONNECT_TIMEOUT`, `PROXY_FIRST_BYTE_TIMEOUT`, `PROXY_IDLE_TIMEOUT`,
//! `PROXY_TOTAL_TIMEOUT` and `PROXY_HEADER_READ_TIMEOUT`.

use std::time::Duration;

use super::values::{duration, invalid, parse_duration, present, ConfigError};

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
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

pub(super) struct RawTimeouts<'a> {
    pub connect: &'a Option<String>,
    pub first_byte: &'a Option<String>,
    pub idle: &'a Option<String>,
    pub total: &'a Option<String>,
    pub header_read: &'a Option<String>,
}

impl RawTimeouts<'_> {
    pub(super) fn validate(&self) -> Result<Timeouts, ConfigError> {
        let timeouts = Timeouts {
            connect: duration("PROXY_CONNECT_TIMEOUT", self.connect, 10)?,
            first_byte: duration("PROXY_FIRST_BYTE_TIMEOUT", self.first_byte, 600)?,
            idle: duration("PROXY_IDLE_TIMEOUT", self.idle, 300)?,
            total: match present(self.total) {
                None => None,
                Some(v) => Some(parse_duration(v).map_err(|m| invalid("PROXY_TOTAL_TIMEOUT", m))?),
            },
            header_read: duration("PROXY_HEADER_READ_TIMEOUT", self.header_read, 10)?,
        };
        for (setting, value) in [
            ("PROXY_CONNECT_TIMEOUT", timeouts.connect),
            ("PROXY_FIRST_BYTE_TIMEOUT", timeouts.first_byte),
            ("PROXY_IDLE_TIMEOUT", timeouts.idle),
            (
                "PROXY_TOTAL_TIMEOUT",
                timeouts.total.unwrap_or(Duration::MAX),
            ),
            ("PROXY_HEADER_READ_TIMEOUT", timeouts.header_read),
        ] {
            if value.is_zero() {
                return Err(invalid(setting, "must be greater than zero"));
            }
        }
        Ok(timeouts)
    }
}
