//! `--check-config`: the effective settings, one `NAME=value` per line. Keys are never shown,
//! only whether and how they are set. Every name comes from the settings table's declaration
//! ([`declared`](super::settings::declared)); a line per group of settings, in `--help`'s order.

use std::fmt::Write as _;
use std::path::PathBuf;

use http::HeaderValue;

use super::settings::declared as d;
use super::values::Setting;
use super::{Config, Fallback, LogFormat};
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

fn or_unset(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(unset)".to_owned())
}

fn header(value: &Option<HeaderValue>) -> String {
    or_unset(
        value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    )
}

/// A key's description, and the file it comes from if it does.
fn from_file(path: &Option<PathBuf>, what: String) -> String {
    match path {
        Some(path) => format!("{what}, from {}, reloaded when it changes", path.display()),
        None => what,
    }
}

/// The setting read from a file if `file` is set, else the plain one.
fn file_or(file: &Option<PathBuf>, plain: Setting, from_file: Setting) -> &'static str {
    if file.is_some() {
        from_file.name
    } else {
        plain.name
    }
}

/// The lines written so far.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, name: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}={value}");
    }

    fn set(&mut self, setting: Setting, value: impl std::fmt::Display) {
        self.line(setting.name, value);
    }
}

impl Config {
    /// The effective settings, one `NAME=value` per line, for `--check-config`. Keys are
    /// never shown, only whether and how they are set.
    pub fn describe(&self) -> String {
        let mut lines = Lines::default();
        self.describe_upstream(&mut lines);
        self.describe_serving(&mut lines);
        self.describe_clients(&mut lines);
        self.describe_features(&mut lines);
        lines.0
    }

    /// The server's key, the upstream and the way to it.
    fn describe_upstream(&self, lines: &mut Lines) {
        let (keys, upstream) = (&self.keys, &self.upstream);
        match (&keys.api_key, &self.upstreams_file) {
            (Some(key), _) => {
                lines.line(
                    file_or(
                        &keys.api_key_file,
                        d::openai_api_key,
                        d::openai_api_key_file,
                    ),
                    from_file(
                        &keys.api_key_file,
                        format!("(set, {} characters, masked)", key.len()),
                    ),
                );
                lines.set(
                    d::openai_base_url,
                    format_args!(
                        "{}://{}{}",
                        upstream.scheme, upstream.authority, upstream.base_path
                    ),
                );
                // Each entry of an upstreams file gives its own.
                lines.set(d::proxy_upstream_auth, upstream.auth.as_str());
                lines.set(d::proxy_upstream_query, query(&upstream.query));
            }
            (None, file) => {
                let entries: Vec<String> = self
                    .upstreams
                    .entries
                    .iter()
                    .map(|e| {
                        let s = &e.settings;
                        format!(
                            "{} {}://{}{} auth={} query={} priority={} weight={} (key set, {} characters, masked)",
                            e.name, s.scheme, s.authority, s.base_path, s.auth.as_str(), query(&s.query), e.priority, e.weight, e.api_key.len()
                        )
                    })
                    .collect();
                lines.set(
                    d::proxy_upstreams_file,
                    format_args!(
                        "{}, reloaded when it changes: {}",
                        file.as_ref()
                            .map_or_else(String::new, |f| f.path.display().to_string()),
                        entries.join("; ")
                    ),
                );
            }
        }
        lines.set(d::proxy_upstream_protocol, upstream.protocol.as_str());
        lines.set(d::proxy_upstream_max_streams, upstream.max_streams);
        lines.set(
            d::proxy_upstream_ca,
            match upstream.extra_roots.len() {
                0 => "(unset)".to_owned(),
                n => format!("({n} certificates added to the built-in roots)"),
            },
        );
        let egress = [d::https_proxy, d::http_proxy, d::all_proxy, d::no_proxy]
            .map(|s| s.name)
            .join(", ");
        lines.line(
            &format!("FORWARD_PROXY (from {egress})"),
            or_unset(upstream.egress.as_ref().map(|p| {
                let auth = if p.authorization.is_some() {
                    " (credentials masked)"
                } else {
                    ""
                };
                format!("http://{}{auth}", p.name())
            })),
        );
        lines.set(d::openai_organization, header(&upstream.organization));
        lines.set(d::openai_project, header(&upstream.project));
    }

    /// Where the proxy listens, its timeouts, its bounds and its drain.
    fn describe_serving(&self, lines: &mut Lines) {
        let timeouts = &self.timeouts;
        lines.set(d::host, self.listen.ip());
        lines.set(d::port, self.listen.port());
        lines.set(d::proxy_connect_timeout, show(timeouts.connect));
        lines.set(d::proxy_first_byte_timeout, show(timeouts.first_byte));
        lines.set(d::proxy_idle_timeout, show(timeouts.idle));
        lines.set(d::proxy_total_timeout, or_unset(timeouts.total.map(show)));
        lines.set(d::proxy_header_read_timeout, show(timeouts.header_read));
        lines.set(d::proxy_max_body_bytes, self.max_body_bytes);
        lines.set(d::proxy_max_connections, self.max_connections);
        lines.set(d::proxy_listen_backlog, self.listen_backlog);
        lines.set(d::proxy_shutdown_delay, show(self.shutdown_delay));
        lines.set(d::proxy_shutdown_grace, show(self.shutdown_grace));
    }

    /// Who the clients are, and their limits.
    fn describe_clients(&self, lines: &mut Lines) {
        let (keys, limits) = (&self.keys, &self.client_limits);
        lines.line(
            file_or(
                &keys.client_keys_file,
                d::proxy_client_keys,
                d::proxy_client_keys_file,
            ),
            match (keys.client_keys.len(), &keys.client_keys_file) {
                (0, None) => "(unset: no client check)".to_owned(),
                (n, path) => from_file(
                    path,
                    format!("({n} key{}, masked)", if n == 1 { "" } else { "s" }),
                ),
            },
        );
        lines.set(
            d::proxy_client_max_in_flight,
            or_unset(limits.max_in_flight.map(|n| n.to_string())),
        );
        lines.set(
            d::proxy_client_rate,
            or_unset(limits.rate.map(|r| {
                format!(
                    "{} a minute, burst {} ({})",
                    r.per_minute,
                    r.burst,
                    d::proxy_client_rate_burst.name
                )
            })),
        );
        lines.set(
            d::proxy_client_token_budget,
            or_unset(limits.token_budget.map(|b| format!("{b} tokens"))),
        );
        lines.set(
            d::proxy_client_output_reserve,
            format_args!("{} tokens", self.output_reserve),
        );
        lines.set(
            d::proxy_limits_redis_url,
            match &self.shared_limits {
                None => "(unset: limits per process)".to_owned(),
                Some(shared) => format!(
                    "{} (prefix {:?}, timeout {:?}, fallback {}, lease {:?}{})",
                    shared.shown_url(),
                    shared.prefix,
                    shared.timeout,
                    match shared.fallback {
                        Fallback::Local => "local",
                        Fallback::Refuse => "refuse",
                    },
                    shared.lease,
                    if shared.ca_pem.is_some() {
                        format!(", {}", d::proxy_limits_redis_ca.name)
                    } else {
                        String::new()
                    }
                ),
            },
        );
    }

    /// Usage, CORS, routes, the admin listener, TLS and logs.
    fn describe_features(&self, lines: &mut Lines) {
        lines.set(
            d::proxy_usage,
            format_args!(
                "{} ({} {})",
                if self.usage.enabled { "on" } else { "off" },
                d::proxy_usage_max_models.name,
                self.usage.max_models
            ),
        );
        lines.set(
            d::proxy_cors_origins,
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
        );
        lines.set(
            d::proxy_extra_routes,
            match self.routes.describe_extra() {
                routes if routes.is_empty() => "(unset)".to_owned(),
                routes => routes,
            },
        );
        lines.set(
            d::proxy_metrics_addr,
            or_unset(self.metrics_addr.map(|a| a.to_string())),
        );
        lines.line(
            &format!("{} and {}", d::proxy_tls_cert.name, d::proxy_tls_key.name),
            if self.tls.is_some() {
                "(set: clients speak HTTPS)"
            } else {
                "(unset: clients speak plain HTTP)"
            },
        );
        lines.set(
            d::proxy_log_format,
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        );
        self.describe_traces(lines);
    }

    /// Where traces go, if anywhere; the export headers by name only.
    fn describe_traces(&self, lines: &mut Lines) {
        let Some(traces) = &self.traces else {
            lines.line(
                "traces",
                "(off: OTEL_EXPORTER_OTLP_ENDPOINT unset, or disabled)",
            );
            return;
        };
        lines.line(
            "traces",
            format_args!(
                "OTLP http/protobuf to {} as {}, sampler {:?}, queue {}, batch {} every {}",
                traces.endpoint,
                traces.service_name,
                traces.sampling,
                traces.max_queue,
                traces.max_batch,
                show(traces.delay)
            ),
        );
        let names: Vec<&str> = traces.headers.iter().map(|(n, _)| n.as_str()).collect();
        lines.line(
            "OTEL_EXPORTER_OTLP_HEADERS",
            if names.is_empty() {
                "(unset)".to_owned()
            } else {
                format!("{} (values hidden)", names.join(", "))
            },
        );
    }
}

/// An upstream query as it is sent, or `(unset)`.
fn query(query: &crate::policy::routes::UpstreamQuery) -> String {
    match query.describe() {
        q if q.is_empty() => "(unset)".to_owned(),
        q => q,
    }
}
