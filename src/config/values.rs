//! The value parsers every group of settings uses, and the error that names the setting.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

/// A setting that could not be used, named as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Treats an empty value like an absent one, as `.env` templates leave optional ones blank.
pub(crate) fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(crate) fn optional_header(
    setting: &'static str,
    value: &Option<String>,
) -> Result<Option<HeaderValue>, ConfigError> {
    present(value)
        .map(|v| {
            HeaderValue::from_str(v)
                .map_err(|_| invalid(setting, "contains characters not allowed in a header"))
        })
        .transpose()
}

pub(crate) fn parse_number<T: std::str::FromStr>(
    setting: &'static str,
    value: &Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match present(value) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            invalid(
                setting,
                format!("{v:?} is not a valid whole number in range"),
            )
        }),
    }
}

/// An optional whole number that must be at least 1 when set.
pub(crate) fn positive_number(
    setting: &'static str,
    value: &Option<String>,
) -> Result<Option<u32>, ConfigError> {
    match present(value) {
        None => Ok(None),
        Some(_) => match parse_number::<u32>(setting, value, 0)? {
            0 => Err(invalid(
                setting,
                "must be at least 1 (leave it unset for no limit)",
            )),
            n => Ok(Some(n)),
        },
    }
}

pub(crate) fn duration(
    setting: &'static str,
    value: &Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    match present(value) {
        None => Ok(Duration::from_secs(default_secs)),
        Some(v) => parse_duration(v).map_err(|m| invalid(setting, m)),
    }
}

/// Parses `30` (seconds), `30s`, `250ms`, `5m` or `1h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a duration such as 30, 30s, 250ms or 5m"))?;
    let millis_per_unit = match unit.trim() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{value:?} has an unknown unit; use ms, s, m or h")),
    };
    amount
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{value:?} is too large"))
}

pub(crate) fn comma_list(value: &Option<String>) -> impl Iterator<Item = &str> {
    present(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
