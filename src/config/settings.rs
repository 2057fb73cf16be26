//! Every setting the proxy reads, declared once: its name, its default as people write it, and
//! what it does in a line. Parsing reads each value beside its declaration (and the default
//! from it), `--help` prints this table, the start-up check warns about a `PROXY_*` variable
//! that is not in it, and a test holds the README and `config/example.env` to it.

use super::values::{Setting, Value};

/// Declares the settings: the table, a constant per setting in [`declared`], the [`Values`] that
/// envy fills, and [`Found`], each value beside its declaration. A `read` setting is read
/// through envy; an `egress` one (curl's forward-proxy variables, whose case matters) by its
/// exact name in `egress.rs`.
macro_rules! settings {
    ($($kind:ident $field:ident: $name:literal = $default:literal, $meaning:literal;)*) => {
        /// Each setting's declaration, by its field's name.
        #[allow(non_upper_case_globals)]
        pub(crate) mod declared {
            use crate::config::values::Setting;
            $(pub(crate) const $field: Setting = Setting {
                name: $name,
                default: $default,
                meaning: $meaning,
            };)*
        }

        /// All of them, in the order `--help` lists them.
        pub const SETTINGS: &[Setting] = &[$(declared::$field),*];

        /// Each setting's field beside its name: envy finds a value by the field's name.
        #[cfg(test)]
        const FIELDS: &[(&str, &str)] = &[$((stringify!($field), $name)),*];

        settings!(@values [] $($kind $field)*);
    };
    (@values [$($read:ident)*] read $field:ident $($rest:tt)*) => {
        settings!(@values [$($read)* $field] $($rest)*);
    };
    (@values [$($read:ident)*] egress $field:ident $($rest:tt)*) => {
        settings!(@values [$($read)*] $($rest)*);
    };
    (@values [$($read:ident)*]) => {
        /// The settings exactly as found, before validation: envy fills it from `NAME=value`
        /// pairs.
        #[derive(serde::Deserialize, Default)]
        pub(crate) struct Values {
            $($read: Option<String>,)*
        }

        /// Each value as found, beside its declaration.
        pub(crate) struct Found<'a> {
            $(pub(crate) $read: Value<'a>,)*
        }

        impl Values {
            pub(crate) fn found(&self) -> Found<'_> {
                Found {
                    $($read: Value::new(&declared::$read, &self.$read),)*
                }
            }
        }
    };
}

settings! {
    read openai_api_key: "OPENAI_API_KEY" = "required", "the server-held key (or the file below), never shown to clients";
    read openai_api_key_file: "OPENAI_API_KEY_FILE" = "unset", "a file holding the key instead; re-read while serving";
    read openai_base_url: "OPENAI_BASE_URL" = "https://api.openai.com/v1", "the upstream; http:// works for local upstreams";
    read openai_organization: "OPENAI_ORGANIZATION" = "unset", "sent upstream as OpenAI-Organization";
    read openai_project: "OPENAI_PROJECT" = "unset", "sent upstream as OpenAI-Project";
    read proxy_upstream_auth: "PROXY_UPSTREAM_AUTH" = "bearer", "bearer (Authorization: Bearer) or api-key (Azure OpenAI)";
    read proxy_upstream_query: "PROXY_UPSTREAM_QUERY" = "unset", "name=value&... added to every upstream URL (api-version=...)";
    read proxy_upstreams_file: "PROXY_UPSTREAMS_FILE" = "unset", "a TOML file of several upstreams and their keys, with failover; re-read while serving";
    read proxy_upstream_ca: "PROXY_UPSTREAM_CA" = "unset", "a PEM file of certificates trusted upstream besides the built-in roots";
    read proxy_upstream_protocol: "PROXY_UPSTREAM_PROTOCOL" = "auto", "auto, http1 or http2: what ALPN offers the upstream";
    // RFC 9113 asks peers to allow at least 100 concurrent streams; OpenAI's edge and nginx
    // allow about that many.
    read proxy_upstream_max_streams: "PROXY_UPSTREAM_MAX_STREAMS" = "100", "streams on one upstream HTTP/2 connection before another opens";
    egress https_proxy: "HTTPS_PROXY" = "unset", "an http:// forward proxy for egress (also HTTP_PROXY, ALL_PROXY)";
    egress http_proxy: "HTTP_PROXY" = "unset", "the same, for http:// upstreams";
    egress all_proxy: "ALL_PROXY" = "unset", "the same, for either";
    egress no_proxy: "NO_PROXY" = "unset", "names, domains, IPs and CIDRs reached without the forward proxy";
    read host: "HOST" = "0.0.0.0", "IP address to listen on (or localhost)";
    read port: "PORT" = "8000", "port to listen on";
    read proxy_listen_backlog: "PROXY_LISTEN_BACKLOG" = "4096", "connections the kernel queues before they are accepted";
    read proxy_connect_timeout: "PROXY_CONNECT_TIMEOUT" = "10s", "TCP + TLS connect to the upstream";
    read proxy_first_byte_timeout: "PROXY_FIRST_BYTE_TIMEOUT" = "600s", "request start to the upstream's response head";
    read proxy_idle_timeout: "PROXY_IDLE_TIMEOUT" = "300s", "longest gap between body frames, either direction";
    read proxy_total_timeout: "PROXY_TOTAL_TIMEOUT" = "none", "optional cap on a whole exchange";
    read proxy_header_read_timeout: "PROXY_HEADER_READ_TIMEOUT" = "10s", "a client's request head, and a connection without a request, within this";
    read proxy_max_body_bytes: "PROXY_MAX_BODY_BYTES" = "33554432", "largest request body (32 MiB)";
    read proxy_max_connections: "PROXY_MAX_CONNECTIONS" = "10000", "inbound connections held at once";
    read proxy_shutdown_delay: "PROXY_SHUTDOWN_DELAY" = "0s", "after SIGTERM, /ready says 503 this long while serving";
    read proxy_shutdown_grace: "PROXY_SHUTDOWN_GRACE" = "30s", "then in-flight exchanges get this long before they are cut";
    read proxy_client_keys: "PROXY_CLIENT_KEYS" = "unset", "comma-separated name:key (or bare key) clients must present";
    read proxy_client_keys_file: "PROXY_CLIENT_KEYS_FILE" = "unset", "the same, one a line; re-read while serving";
    read proxy_client_max_in_flight: "PROXY_CLIENT_MAX_IN_FLIGHT" = "unset", "exchanges one client may have open at once (else 429)";
    read proxy_client_rate: "PROXY_CLIENT_RATE" = "unset", "requests a minute per client, a token bucket (else 429)";
    read proxy_client_rate_burst: "PROXY_CLIENT_RATE_BURST" = "rate/6", "requests a quiet client may send at once";
    read proxy_client_token_budget: "PROXY_CLIENT_TOKEN_BUDGET" = "unset", "N/minute, N/hour or N/day: input plus output tokens per client in a UTC window";
    read proxy_client_output_reserve: "PROXY_CLIENT_OUTPUT_RESERVE" = "1024", "tokens a request under a budget reserves for its answer until its count is known";
    read proxy_limits_redis_url: "PROXY_LIMITS_REDIS_URL" = "unset", "redis:// or rediss://: share the client limits with every replica on this Redis";
    read proxy_limits_redis_url_file: "PROXY_LIMITS_REDIS_URL_FILE" = "unset", "a file holding that URL instead (a mounted Secret)";
    read proxy_limits_redis_prefix: "PROXY_LIMITS_REDIS_PREFIX" = "memoctopus:", "prefix of every key in Redis";
    read proxy_limits_redis_timeout: "PROXY_LIMITS_REDIS_TIMEOUT" = "50ms", "longest wait for Redis; then the fallback applies";
    read proxy_limits_redis_fallback: "PROXY_LIMITS_REDIS_FALLBACK" = "local", "while Redis does not answer: local (each process's limits) or refuse (429)";
    read proxy_limits_redis_lease: "PROXY_LIMITS_REDIS_LEASE" = "30s", "how long a dead replica's in-flight slots stay taken";
    read proxy_limits_redis_ca: "PROXY_LIMITS_REDIS_CA" = "unset", "PEM roots for a rediss:// server, in place of the built-in webpki roots";
    read proxy_usage: "PROXY_USAGE" = "on", "on: read each answer's usage for the metrics, log and budgets; off: pass Accept-Encoding";
    read proxy_usage_max_models: "PROXY_USAGE_MAX_MODELS" = "100", "distinct model label values; the rest count as other";
    read proxy_cors_origins: "PROXY_CORS_ORIGINS" = "unset", "comma-separated origins, or *, allowed from browsers";
    read proxy_extra_routes: "PROXY_EXTRA_ROUTES" = "unset", "more routes, e.g. \"POST /v1/embeddings, GET /v1/models/*\"";
    read proxy_metrics_addr: "PROXY_METRICS_ADDR" = "unset", "an admin listener: /metrics, /health and /ready, no client key";
    read proxy_tls_cert: "PROXY_TLS_CERT" = "unset", "PEM certificate chain: serve HTTPS (with PROXY_TLS_KEY)";
    read proxy_tls_key: "PROXY_TLS_KEY" = "unset", "PEM private key";
    read proxy_log_format: "PROXY_LOG_FORMAT" = "text", "text or json; levels through RUST_LOG (default info)";
    read otel_exporter_otlp_endpoint: "OTEL_EXPORTER_OTLP_ENDPOINT" = "unset", "an OTLP/HTTP collector (http://collector:4318): traces go to its /v1/traces";
    read otel_exporter_otlp_traces_endpoint: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" = "unset", "the traces URL itself, in place of the one above";
    read otel_exporter_otlp_protocol: "OTEL_EXPORTER_OTLP_PROTOCOL" = "http/protobuf", "the only protocol this build exports with";
    read otel_exporter_otlp_traces_protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" = "http/protobuf", "the same, for traces";
    read otel_exporter_otlp_headers: "OTEL_EXPORTER_OTLP_HEADERS" = "unset", "key=value,... sent with every export (never logged)";
    read otel_exporter_otlp_traces_headers: "OTEL_EXPORTER_OTLP_TRACES_HEADERS" = "unset", "the same, for traces, in place of the one above";
    read otel_exporter_otlp_timeout: "OTEL_EXPORTER_OTLP_TIMEOUT" = "10000", "milliseconds one export may take";
    read otel_exporter_otlp_traces_timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" = "unset", "the same, for traces";
    read otel_exporter_otlp_certificate: "OTEL_EXPORTER_OTLP_CERTIFICATE" = "unset", "a PEM file of roots for an https:// collector besides the built-in ones";
    read otel_traces_exporter: "OTEL_TRACES_EXPORTER" = "otlp", "otlp, or none: no traces whatever the endpoint";
    read otel_sdk_disabled: "OTEL_SDK_DISABLED" = "false", "true: no traces whatever the endpoint";
    read otel_service_name: "OTEL_SERVICE_NAME" = "memoctopus", "service.name of every span";
    read otel_resource_attributes: "OTEL_RESOURCE_ATTRIBUTES" = "unset", "key=value,... on every span's resource (deployment.environment.name=prod)";
    read otel_traces_sampler: "OTEL_TRACES_SAMPLER" = "parentbased_always_on", "always_on, always_off, traceidratio or parentbased_ of each: which requests are traced";
    read otel_traces_sampler_arg: "OTEL_TRACES_SAMPLER_ARG" = "1.0", "the ratio, from 0 to 1, of the traceidratio samplers";
    read otel_semconv_stability_opt_in: "OTEL_SEMCONV_STABILITY_OPT_IN" = "unset", "gen_ai_latest_experimental: the GenAI attributes by the newest names";
    read otel_bsp_max_queue_size: "OTEL_BSP_MAX_QUEUE_SIZE" = "2048", "spans waiting for export; more are dropped and counted";
    read otel_bsp_max_export_batch_size: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" = "512", "spans in one export";
    read otel_bsp_schedule_delay: "OTEL_BSP_SCHEDULE_DELAY" = "5000", "milliseconds a span waits at most before its batch is exported";
}

/// The setting named `name`, if there is one.
pub(crate) fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The setting whose name is closest to `name`, for a hint about a misspelling.
pub(crate) fn closest(name: &str) -> &'static str {
    SETTINGS
        .iter()
        .map(|s| (strsim::levenshtein(name, s.name), s.name))
        .min()
        .map_or("", |(_, name)| name)
}

/// Whether `name` is one that Kubernetes injects for a Service named `proxy` (service links:
/// `PROXY_SERVICE_HOST`, `PROXY_SERVICE_PORT_HTTP`, `PROXY_PORT_8000_TCP_ADDR`, ...).
pub(crate) fn is_service_link(name: &str) -> bool {
    name == "PROXY_PORT"
        || name.starts_with("PROXY_SERVICE_HOST")
        || name.starts_with("PROXY_SERVICE_PORT")
        || name
            .strip_prefix("PROXY_PORT_")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// A warning for every `PROXY_*` variable that is not a setting, naming the closest one. The
/// value is never shown.
pub(crate) fn unknown_warnings<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|n| n.starts_with("PROXY_") && find(n).is_none() && !is_service_link(n))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| {
            format!(
                "{name} is not a setting and is ignored; did you mean {}?",
                closest(name)
            )
        })
        .collect()
}

/// The SETTINGS section of `--help`.
pub(crate) fn help_table() -> String {
    let mut out = String::new();
    for s in SETTINGS {
        out.push_str(&format!(
            "    {:<27} {:<26} {}\n",
            s.name, s.default, s.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelling_names_the_setting_meant() {
        let warnings = unknown_warnings(["PROXY_CLIENT_KEY", "PROXY_PORT", "PROXY_CLIENT_KEYS"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did you mean PROXY_CLIENT_KEYS?"));
        assert!(is_service_link("PROXY_SERVICE_HOST"));
        assert!(is_service_link("PROXY_PORT_8000_TCP_ADDR"));
        assert!(!is_service_link("PROXY_PORTS"));
    }

    #[test]
    fn each_field_is_its_setting_in_lower_case() {
        for (field, name) in FIELDS {
            assert_eq!(field.to_ascii_uppercase(), *name);
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[i + 1..].iter().all(|o| o.name != s.name),
                "{}",
                s.name
            );
        }
    }
}
