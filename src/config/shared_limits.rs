//! The shared store of client limits: `PROXY_LIMITS_REDIS_URL` (or `_FILE`), its prefix, its
//! timeout, what a request meets while Redis does not answer, the in-flight slots' lease, and
//! the CA a `rediss://` server's certificate is checked against. A URL may hold a password:
//! no message and no `Debug` ever shows it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::keys::read;
use super::settings::Found;
use super::values::{invalid, ConfigError};

/// What a request meets while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Each process's own limits decide (the default).
    Local,
    /// Every request of a client with limits is refused with 429.
    Refuse,
}

/// The shared limits' settings; `None` in [`super::Config`] when no URL is set.
#[derive(Clone)]
pub(crate) struct SharedLimitsSettings {
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
    pub(crate) fn shown_url(&self) -> String {
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

/// `PROXY_LIMITS_REDIS_*`: `None` without a URL, and then none of the others may be set.
pub(super) fn validate(found: &Found<'_>) -> Result<Option<SharedLimitsSettings>, ConfigError> {
    let (url_value, url_file) = (
        found.proxy_limits_redis_url,
        found.proxy_limits_redis_url_file,
    );
    let url = match (url_value.get(), url_file.get()) {
        (Some(_), Some(_)) => {
            return Err(url_value
                .invalid("and PROXY_LIMITS_REDIS_URL_FILE are both set; set exactly one of them"))
        }
        (Some(url), None) => url.to_owned(),
        (None, Some(path)) => {
            let bytes = read(Path::new(path)).map_err(|m| url_file.invalid(m))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| url_file.invalid(format!("{path}: not text")))?;
            let url = text.trim();
            if url.is_empty() {
                return Err(url_file.invalid(format!("{path}: the file is empty")));
            }
            url.to_owned()
        }
        (None, None) => {
            // Written at its default (as config/example.env lists it), a setting means what
            // unset means and is accepted alone; any other value would be silently ignored, so
            // every such line is named at once.
            let orphans: Vec<&str> = [
                found.proxy_limits_redis_prefix,
                found.proxy_limits_redis_timeout,
                found.proxy_limits_redis_fallback,
                found.proxy_limits_redis_lease,
                found.proxy_limits_redis_ca,
            ]
            .into_iter()
            .filter(|value| !value.is_default())
            .map(|value| value.name())
            .collect();
            return match orphans.first() {
                None => Ok(None),
                Some(&first) => Err(invalid(
                    first,
                    format!(
                        "means something only with PROXY_LIMITS_REDIS_URL (or its _FILE), which is unset: set the URL, or remove or comment out {}: {}",
                        if orphans.len() == 1 { "this line" } else { "these lines" },
                        orphans.join(", ")
                    ),
                )),
            };
        }
    };
    let source = if url_value.get().is_some() {
        url_value
    } else {
        url_file
    };
    check_url(&url).map_err(|m| source.invalid(m))?;
    let prefix = found.proxy_limits_redis_prefix;
    if prefix.or_default().len() > 64 || !prefix.or_default().bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(prefix.invalid("is at most 64 printable characters without spaces"));
    }
    let timeout = found.proxy_limits_redis_timeout;
    let wait = timeout.duration()?;
    if wait.is_zero() || wait > Duration::from_secs(10) {
        return Err(timeout.invalid("must be between 1ms and 10s"));
    }
    let fallback = found
        .proxy_limits_redis_fallback
        .choice(&[("local", Fallback::Local), ("refuse", Fallback::Refuse)])?;
    let lease = found.proxy_limits_redis_lease;
    let lease_time = lease.duration()?;
    if lease_time < Duration::from_secs(3) {
        return Err(lease.invalid("must be at least 3s: slots are refreshed a third of it apart"));
    }
    let ca = found.proxy_limits_redis_ca;
    let ca_pem = ca
        .get()
        .map(|path| {
            let pem = read(Path::new(path)).map_err(|m| ca.invalid(m))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(ca.invalid(format!("{path}: holds no PEM certificate")));
            }
            Ok(pem)
        })
        .transpose()?;
    if ca_pem.is_some() && !url.starts_with("rediss://") {
        return Err(ca.invalid("is for a rediss:// URL"));
    }
    Ok(Some(SharedLimitsSettings {
        url,
        prefix: prefix.or_default().to_owned(),
        timeout: wait,
        fallback,
        lease: lease_time,
        ca_pem,
    }))
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
