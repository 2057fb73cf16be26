//! The shared store of client limits: `PROXY_LIMITS_REDIS_URL` (or `_FILE`), its prefix, its
//! timeout, what a request meets while Redis does not answer, the in-flight slots' lease, and
//! the CA a `rediss://` server's certificate is checked against. A URL may hold a password:
//! no message and no `Debug` ever shows it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::keys::read;
use super::values::{duration, invalid, present, ConfigError};

/// What a request meets while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Each process's own limits decide (the default).
    Local,
    /// Every request of a client with limits is refused with 429.
    Refuse,
}

/// The shared limits' settings; `None` in [`super::Config`] when no URL is set.
#[derive(Clone)]
pub struct SharedLimitsSettings {
    /// The URL, password included: handed to the Redis client and nowhere else.
    pub url: String,
    pub prefix: String,
    pub timeout: Duration,
    pub fallback: Fallback,
    /// How long an in-flight slot outlives its replica: slots are refreshed a third of this
    /// apart, and one whose replica is gone expires after it.
    pub lease: Duration,
    /// `PROXY_LIMITS_REDIS_CA`: PEM roots for a `rediss://` server, in place of webpki's.
    pub ca_pem: Option<Vec<u8>>,
}

impl SharedLimitsSettings {
    /// The URL without its user and password, for `--check-config` and logs.
    pub fn shown_url(&self) -> String {
        masked(&self.url)
    }
}

impl fmt::Debug for SharedLimitsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimitsSettings")
            .field("url", &self.shown_url())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .field("lease", &self.lease)
            .finish()
    }
}

/// `scheme://host...` with anything before an `@` in the authority replaced by `***`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

pub(super) struct RawSharedLimits<'a> {
    pub url: &'a Option<String>,
    pub url_file: &'a Option<String>,
    pub prefix: &'a Option<String>,
    pub timeout: &'a Option<String>,
    pub fallback: &'a Option<String>,
    pub lease: &'a Option<String>,
    pub ca: &'a Option<String>,
}

impl RawSharedLimits<'_> {
    pub(super) fn validate(&self) -> Result<Option<SharedLimitsSettings>, ConfigError> {
        let url = match (present(self.url), present(self.url_file)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "PROXY_LIMITS_REDIS_URL",
                    "and PROXY_LIMITS_REDIS_URL_FILE are both set; set exactly one of them",
                ))
            }
            (Some(url), None) => url.to_owned(),
            (None, Some(path)) => {
                let bytes =
                    read(Path::new(path)).map_err(|m| invalid("PROXY_LIMITS_REDIS_URL_FILE", m))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    invalid("PROXY_LIMITS_REDIS_URL_FILE", format!("{path}: not text"))
                })?;
                let url = text.trim();
                if url.is_empty() {
                    return Err(invalid(
                        "PROXY_LIMITS_REDIS_URL_FILE",
                        format!("{path}: the file is empty"),
                    ));
                }
                url.to_owned()
            }
            (None, None) => {
                for (name, value) in [
                    ("PROXY_LIMITS_REDIS_PREFIX", self.prefix),
                    ("PROXY_LIMITS_REDIS_TIMEOUT", self.timeout),
                    ("PROXY_LIMITS_REDIS_FALLBACK", self.fallback),
                    ("PROXY_LIMITS_REDIS_LEASE", self.lease),
                    ("PROXY_LIMITS_REDIS_CA", self.ca),
                ] {
                    if present(value).is_some() {
                        return Err(invalid(name, "needs PROXY_LIMITS_REDIS_URL (or its _FILE)"));
                    }
                }
                return Ok(None);
            }
        };
        let setting = if present(self.url).is_some() {
            "PROXY_LIMITS_REDIS_URL"
        } else {
            "PROXY_LIMITS_REDIS_URL_FILE"
        };
        check_url(&url).map_err(|m| invalid(setting, m))?;
        let prefix = present(self.prefix).unwrap_or("memoctopus:").to_owned();
        if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "PROXY_LIMITS_REDIS_PREFIX",
                "is at most 64 printable characters without spaces",
            ));
        }
        let timeout = match present(self.timeout) {
            None => Duration::from_millis(50),
            Some(_) => duration("PROXY_LIMITS_REDIS_TIMEOUT", self.timeout, 0)?,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(10) {
            return Err(invalid(
                "PROXY_LIMITS_REDIS_TIMEOUT",
                "must be between 1ms and 10s",
            ));
        }
        let fallback = match present(self.fallback).unwrap_or("local") {
            "local" => Fallback::Local,
            "refuse" => Fallback::Refuse,
            other => {
                return Err(invalid(
                    "PROXY_LIMITS_REDIS_FALLBACK",
                    format!("{other:?} is neither \"local\" nor \"refuse\""),
                ))
            }
        };
        let lease = duration("PROXY_LIMITS_REDIS_LEASE", self.lease, 30)?;
        if lease < Duration::from_secs(3) {
            return Err(invalid(
                "PROXY_LIMITS_REDIS_LEASE",
                "must be at least 3s: slots are refreshed a third of it apart",
            ));
        }
        let ca_pem = present(self.ca)
            .map(|path| {
                let pem = read(Path::new(path)).map_err(|m| invalid("PROXY_LIMITS_REDIS_CA", m))?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        "PROXY_LIMITS_REDIS_CA",
                        format!("{path}: holds no PEM certificate"),
                    ));
                }
                Ok(pem)
            })
            .transpose()?;
        if ca_pem.is_some() && !url.starts_with("rediss://") {
            return Err(invalid("PROXY_LIMITS_REDIS_CA", "is for a rediss:// URL"));
        }
        Ok(Some(SharedLimitsSettings {
            url,
            prefix,
            timeout,
            fallback,
            lease,
            ca_pem,
        }))
    }
}

/// A `redis://` or `rediss://` URL the Redis client can use. The message never repeats it.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss://".to_owned());
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|_| format!("{} is not a Redis URL this proxy can use", masked(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            masked("rediss://app:s3cret@redis:6380/0"),
            "rediss://***@redis:6380/0"
        );
        assert_eq!(masked("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(masked("redis://:p@ss@h:1"), "redis://***@h:1");
        assert!(check_url("http://redis:6379").is_err());
        let err = check_url("redis://:pw-secret@[bad").unwrap_err();
        assert!(!err.contains("pw-secret"), "{err}");
    }
}
