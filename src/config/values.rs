//! A setting's declaration, the value parsers every group of settings uses, and the error that
//! names the setting.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    /// The default, as `--help` shows it; where it is a value, parsing starts from it.
    pub default: &'static str,
    /// What it does, in a line.
    pub meaning: &'static str,
}

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

/// One setting's value as found, beside its declaration: errors name the setting, and an
/// absent value falls back to the declared default wherever that is a value.
#[derive(Clone, Copy)]
pub(crate) struct Value<'a> {
    setting: &'static Setting,
    value: Option<&'a str>,
}

impl<'a> Value<'a> {
    pub(crate) fn new(setting: &'static Setting, value: &'a Option<String>) -> Value<'a> {
        Value {
            setting,
            value: present(value),
        }
    }

    /// The value, trimmed; `None` when unset or empty.
    pub(crate) fn get(&self) -> Option<&'a str> {
        self.value
    }

    /// The value, or the declared default.
    pub(crate) fn or_default(&self) -> &'a str {
        self.value.unwrap_or(self.setting.default)
    }

    /// The setting's name, as the operator writes it.
    pub(crate) fn name(&self) -> &'static str {
        self.setting.name
    }

    /// Whether the value means what unset means: absent, or written as the declared default.
    pub(crate) fn is_default(&self) -> bool {
        // "unset", "none" and the like describe the absence of a value and are never one.
        let describes_absence = matches!(self.setting.default, "unset" | "none" | "required");
        self.value
            .is_none_or(|v| v == self.setting.default && !describes_absence)
    }

    pub(crate) fn invalid(&self, message: impl Into<String>) -> ConfigError {
        invalid(self.setting.name, message)
    }

    /// A duration, the default's when unset.
    pub(crate) fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(self.or_default()).map_err(|m| self.invalid(m))
    }

    /// A duration, or `None` when unset.
    pub(crate) fn optional_duration(&self) -> Result<Option<Duration>, ConfigError> {
        self.value
            .map(|v| parse_duration(v).map_err(|m| self.invalid(m)))
            .transpose()
    }

    /// A number, the default's when unset.
    pub(crate) fn number<T: std::str::FromStr>(&self) -> Result<T, ConfigError> {
        let v = self.or_default();
        v.parse()
            .map_err(|_| self.invalid(format!("{v:?} is not a valid whole number in range")))
    }

    /// A number that must be at least 1, the default's when unset.
    pub(crate) fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(
        &self,
    ) -> Result<T, ConfigError> {
        let n = self.number::<T>()?;
        if n == T::from(0) {
            return Err(self.invalid("must be at least 1"));
        }
        Ok(n)
    }

    /// An optional whole number that must be at least 1 when set.
    pub(crate) fn positive(&self) -> Result<Option<u32>, ConfigError> {
        match self.value {
            None => Ok(None),
            Some(_) => match self.number::<u32>()? {
                0 => Err(self.invalid("must be at least 1 (leave it unset for no limit)")),
                n => Ok(Some(n)),
            },
        }
    }

    /// An optional header value.
    pub(crate) fn header(&self) -> Result<Option<HeaderValue>, ConfigError> {
        self.value
            .map(|v| {
                HeaderValue::from_str(v)
                    .map_err(|_| self.invalid("contains characters not allowed in a header"))
            })
            .transpose()
    }

    /// One of `choices`, by its word (the default's when unset).
    pub(crate) fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Result<T, ConfigError> {
        let word = self.or_default();
        choices
            .iter()
            .find(|(name, _)| *name == word)
            .map(|&(_, value)| value)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                match names[..] {
                    [one, other] => {
                        self.invalid(format!("{word:?} is neither {one:?} nor {other:?}"))
                    }
                    _ => self.invalid(format!("{word:?} is none of {}", names.join(", "))),
                }
            })
    }

    /// The comma-separated entries, trimmed, empty ones left out.
    pub(crate) fn list(&self) -> impl Iterator<Item = &'a str> {
        self.value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// Treats an empty value like an absent one, as `.env` templates leave optional ones blank.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
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
