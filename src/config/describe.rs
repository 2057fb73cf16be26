//! `--check-config`: the effective settings, one `NAME=value` per line. Keys are never shown,
//! only whether and how they are set.

use http::HeaderValue;

use super::{Config, LogFormat};
use crate::policy::cors::CorsOrigins;

/// A duration as the settings take it: `250ms`, `10s`.
fn show(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl Config {
    /// The effective settings, one `NAME=value` per line, for `--check-config`. Keys are
    /// never shown, only whether and how they are set.
    pub fn describe(&self) -> String {
        fn or_unset(value: Option<String>) -> String {
            value.unwrap_or_else(|| "(unset)".to_owned())
        }
        let header = |v: &Option<HeaderValue>| {
            or_unset(
                v.as_ref()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        };
        let file = |path: &Option<std::path::PathBuf>, what: String| match path {
            Some(path) => format!("{what}, from {}, reloaded when it changes", path.display()),
            None => what,
        };
        let keys = &self.keys;
        let lines = [
            (
                match keys.api_key_file {
                    Some(_) => "OPENAI_API_KEY_FILE",
                    None => "OPENAI_API_KEY",
                },
                file(
                    &keys.api_key_file,
                    format!("(set, {} characters, masked)", keys.api_key.len()),
                ),
            ),
            (
                "OPENAI_BASE_URL",
                format!(
                    "{}://{}{}",
                    self.upstream.scheme, self.upstream.authority, self.upstream.base_path
                ),
            ),
            (
                "PROXY_UPSTREAM_PROTOCOL",
                self.upstream.protocol.as_str().to_owned(),
            ),
            (
                "PROXY_UPSTREAM_MAX_STREAMS",
                self.upstream.max_streams.to_string(),
            ),
            (
                "PROXY_UPSTREAM_AUTH",
                self.upstream.auth.as_str().to_owned(),
            ),
            (
                "PROXY_UPSTREAM_QUERY",
                match self.upstream.query.describe() {
                    q if q.is_empty() => "(unset)".to_owned(),
                    q => q,
                },
            ),
            (
                "PROXY_UPSTREAM_CA",
                match self.upstream.extra_roots.len() {
                    0 => "(unset)".to_owned(),
                    n => format!("({n} certificates added to the built-in roots)"),
                },
            ),
            (
                "FORWARD_PROXY (from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)",
                or_unset(self.upstream.egress.as_ref().map(|p| {
                    let auth = if p.authorization.is_some() {
                        " (credentials masked)"
                    } else {
                        ""
                    };
                    format!("http://{}{auth}", p.name())
                })),
            ),
            ("OPENAI_ORGANIZATION", header(&self.upstream.organization)),
            ("OPENAI_PROJECT", header(&self.upstream.project)),
            ("HOST", self.listen.ip().to_string()),
            ("PORT", self.listen.port().to_string()),
            ("PROXY_CONNECT_TIMEOUT", show(self.timeouts.connect)),
            ("PROXY_FIRST_BYTE_TIMEOUT", show(self.timeouts.first_byte)),
            ("PROXY_IDLE_TIMEOUT", show(self.timeouts.idle)),
            (
                "PROXY_TOTAL_TIMEOUT",
                or_unset(self.timeouts.total.map(show)),
            ),
            ("PROXY_HEADER_READ_TIMEOUT", show(self.timeouts.header_read)),
            ("PROXY_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("PROXY_MAX_CONNECTIONS", self.max_connections.to_string()),
            ("PROXY_LISTEN_BACKLOG", self.listen_backlog.to_string()),
            ("PROXY_SHUTDOWN_DELAY", show(self.shutdown_delay)),
            ("PROXY_SHUTDOWN_GRACE", show(self.shutdown_grace)),
            (
                match keys.client_keys_file {
                    Some(_) => "PROXY_CLIENT_KEYS_FILE",
                    None => "PROXY_CLIENT_KEYS",
                },
                match (keys.client_keys.len(), &keys.client_keys_file) {
                    (0, None) => "(unset: no client check)".to_owned(),
                    (n, path) => file(
                        path,
                        format!("({n} key{}, masked)", if n == 1 { "" } else { "s" }),
                    ),
                },
            ),
            (
                "PROXY_CLIENT_MAX_IN_FLIGHT",
                or_unset(self.client_limits.max_in_flight.map(|n| n.to_string())),
            ),
            (
                "PROXY_CLIENT_RATE",
                or_unset(self.client_limits.rate.map(|r| {
                    format!(
                        "{} a minute, burst {} (PROXY_CLIENT_RATE_BURST)",
                        r.per_minute, r.burst
                    )
                })),
            ),
            (
                "PROXY_CLIENT_TOKEN_BUDGET",
                or_unset(
                    self.client_limits
                        .token_budget
                        .map(|b| format!("{b} tokens")),
                ),
            ),
            (
                "PROXY_CLIENT_OUTPUT_RESERVE",
                format!("{} tokens", self.output_reserve),
            ),
            (
                "PROXY_LIMITS_REDIS_URL",
                match &self.shared_limits {
                    None => "(unset: limits per process)".to_owned(),
                    Some(shared) => format!(
                        "{} (prefix {:?}, timeout {:?}, fallback {}, lease {:?}{})",
                        shared.shown_url(),
                        shared.prefix,
                        shared.timeout,
                        match shared.fallback {
                            crate::config::Fallback::Local => "local",
                            crate::config::Fallback::Refuse => "refuse",
                        },
                        shared.lease,
                        if shared.ca_pem.is_some() {
                            ", PROXY_LIMITS_REDIS_CA"
                        } else {
                            ""
                        }
                    ),
                },
            ),
            (
                "PROXY_USAGE",
                format!(
                    "{} (PROXY_USAGE_MAX_MODELS {})",
                    if self.usage.enabled { "on" } else { "off" },
                    self.usage.max_models
                ),
            ),
            (
                "PROXY_CORS_ORIGINS",
                or_unset(self.cors_origins.as_ref().map(|c| {
                    match c {
                        CorsOrigins::Any => "*".to_owned(),
                        CorsOrigins::List(list) => list
                            .iter()
                            .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
                            .collect::<Vec<_>>()
                            .join(","),
                    }
                })),
            ),
            (
                "PROXY_EXTRA_ROUTES",
                match self.routes.describe_extra() {
                    routes if routes.is_empty() => "(unset)".to_owned(),
                    routes => routes,
                },
            ),
            (
                "PROXY_METRICS_ADDR",
                or_unset(self.metrics_addr.map(|a| a.to_string())),
            ),
            (
                "PROXY_TLS_CERT and PROXY_TLS_KEY",
                if self.tls.is_some() {
                    "(set: clients speak HTTPS)".to_owned()
                } else {
                    "(unset: clients speak plain HTTP)".to_owned()
                },
            ),
            (
                "PROXY_LOG_FORMAT",
                match self.log_format {
                    LogFormat::Text => "text".to_owned(),
                    LogFormat::Json => "json".to_owned(),
                },
            ),
        ];
        lines
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }
}
