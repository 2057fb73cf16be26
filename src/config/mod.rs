//! Settings: the environment (over an optional `.env` file) turned once, at start, into typed
//! values. A bad value is reported with the name of the setting and never reaches a socket.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use serde::Deserialize;

mod upstream;

pub use upstream::{EgressProxy, Protocol, Upstream, DEFAULT_BASE_URL, EGRESS_VARIABLES};

use crate::policy::client_keys::ClientKeys;
use crate::policy::cors::CorsOrigins;
use crate::policy::routes::{ExtraRoute, Routes};

/// The proxy's whole configuration. Built by [`Config::from_vars`] or [`Config::load`].
#[derive(Clone, Debug)]
pub struct Config {
    /// `Bearer $OPENAI_API_KEY`, marked sensitive so that neither `Debug` nor HTTP/2's HPACK
    /// table ever holds it in the clear.
    pub authorization: HeaderValue,
    /// Where every proxied request goes.
    pub upstream: Upstream,
    /// Sent as `OpenAI-Organization` when set; the client's own value is never forwarded.
    pub organization: Option<HeaderValue>,
    /// Sent as `OpenAI-Project` when set; the client's own value is never forwarded.
    pub project: Option<HeaderValue>,
    /// `HOST`:`PORT`, the address `main` binds.
    pub listen: SocketAddr,
    /// `PROXY_LISTEN_BACKLOG`: connections the kernel queues before they are accepted.
    pub listen_backlog: u32,
    /// The upstream and client timeouts.
    pub timeouts: Timeouts,
    /// The largest request body forwarded; above it the client gets 413.
    pub max_body_bytes: u64,
    /// Inbound connections held at once. Further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After the shutdown signal, how long `/ready` reports 503 while we still accept.
    pub shutdown_delay: Duration,
    /// After the delay, how long in-flight exchanges may run before they are cut.
    pub shutdown_grace: Duration,
    /// Bearer tokens that clients must present; empty means no inbound check.
    pub client_keys: ClientKeys,
    /// Browser origins allowed by CORS; `None` means no CORS headers at all.
    pub cors_origins: Option<CorsOrigins>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The routes forwarded upstream: the two built-in ones plus `PROXY_EXTRA_ROUTES`.
    pub routes: Routes,
    /// `PROXY_METRICS_ADDR`: serve `/metrics` on its own listener instead of the proxy's port.
    pub metrics_addr: Option<SocketAddr>,
    /// `PROXY_TLS_CERT` and `PROXY_TLS_KEY`, loaded: serve HTTPS (h2 and http/1.1 by ALPN).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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

/// The settings exactly as found, before validation. envy fills it from `NAME=value` pairs.
#[derive(Deserialize, Default)]
struct RawConfig {
    openai_api_key: Option<String>,
    openai_base_url: Option<String>,
    openai_organization: Option<String>,
    openai_project: Option<String>,
    host: Option<String>,
    port: Option<String>,
    proxy_connect_timeout: Option<String>,
    proxy_first_byte_timeout: Option<String>,
    proxy_idle_timeout: Option<String>,
    proxy_total_timeout: Option<String>,
    proxy_header_read_timeout: Option<String>,
    proxy_max_body_bytes: Option<String>,
    proxy_max_connections: Option<String>,
    proxy_listen_backlog: Option<String>,
    proxy_shutdown_delay: Option<String>,
    proxy_shutdown_grace: Option<String>,
    proxy_client_keys: Option<String>,
    proxy_cors_origins: Option<String>,
    proxy_log_format: Option<String>,
    proxy_extra_routes: Option<String>,
    proxy_metrics_addr: Option<String>,
    proxy_tls_cert: Option<String>,
    proxy_tls_key: Option<String>,
    proxy_upstream_ca: Option<String>,
    proxy_upstream_protocol: Option<String>,
    proxy_upstream_max_streams: Option<String>,
    /// The forward-proxy variables, by their exact names; envy would fold their cases.
    #[serde(skip)]
    egress: HashMap<String, String>,
}

impl Config {
    /// Reads the process environment over `.env` in the working directory, if there is one.
    pub fn from_env() -> Result<Config, ConfigError> {
        // `vars_os` because `vars` panics on a variable that is not UTF-8; such a variable
        // cannot be one of ours, so it is skipped.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Config::load(env, Some(Path::new(".env")))
    }

    /// Merges `dotenv` (when the file exists) under `env`, whose values win, and validates.
    pub fn load(
        env: impl IntoIterator<Item = (String, String)>,
        dotenv: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        if let Some(path) = dotenv.filter(|p| p.exists()) {
            let entries = dotenvy::from_path_iter(path)
                .map_err(|e| invalid(".env", format!("cannot read {}: {e}", path.display())))?;
            for entry in entries {
                let (k, v) = entry.map_err(|e| invalid(".env", e.to_string()))?;
                vars.insert(k, v);
            }
        }
        vars.extend(env);
        Config::from_vars(vars)
    }

    /// Validates settings given as `NAME=value` pairs. Tests call this with a map.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Config, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        // Only our own names go to envy, so that unrelated variables never cause errors; a
        // later pair wins over an earlier one with the same name.
        let mut ours: HashMap<String, String> = HashMap::new();
        let mut egress: HashMap<String, String> = HashMap::new();
        for (k, v) in vars.into_iter().map(|(k, v)| (k.into(), v.into())) {
            if EGRESS_VARIABLES.contains(&k.as_str()) {
                egress.insert(k, v);
            } else if is_our_setting(&k) {
                ours.insert(k, v);
            }
        }
        let mut raw: RawConfig =
            envy::from_iter(ours).map_err(|e| invalid("environment", e.to_string()))?;
        raw.egress = egress;
        raw.validate()
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
        let key_len = self.authorization.len().saturating_sub("Bearer ".len());
        let lines = [
            (
                "OPENAI_API_KEY",
                format!("(set, {key_len} characters, masked)"),
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
            ("OPENAI_ORGANIZATION", header(&self.organization)),
            ("OPENAI_PROJECT", header(&self.project)),
            ("HOST", self.listen.ip().to_string()),
            ("PORT", self.listen.port().to_string()),
            (
                "PROXY_CONNECT_TIMEOUT",
                format!("{:?}", self.timeouts.connect),
            ),
            (
                "PROXY_FIRST_BYTE_TIMEOUT",
                format!("{:?}", self.timeouts.first_byte),
            ),
            ("PROXY_IDLE_TIMEOUT", format!("{:?}", self.timeouts.idle)),
            (
                "PROXY_TOTAL_TIMEOUT",
                or_unset(self.timeouts.total.map(|t| format!("{t:?}"))),
            ),
            (
                "PROXY_HEADER_READ_TIMEOUT",
                format!("{:?}", self.timeouts.header_read),
            ),
            ("PROXY_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("PROXY_MAX_CONNECTIONS", self.max_connections.to_string()),
            ("PROXY_LISTEN_BACKLOG", self.listen_backlog.to_string()),
            ("PROXY_SHUTDOWN_DELAY", format!("{:?}", self.shutdown_delay)),
            ("PROXY_SHUTDOWN_GRACE", format!("{:?}", self.shutdown_grace)),
            (
                "PROXY_CLIENT_KEYS",
                format!("({} keys, masked)", self.client_keys.0.len()),
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
            ("PROXY_EXTRA_ROUTES", self.routes.describe_extra()),
            (
                "PROXY_METRICS_ADDR",
                or_unset(self.metrics_addr.map(|a| a.to_string())),
            ),
            (
                "PROXY_TLS",
                if self.tls.is_some() {
                    "on".to_owned()
                } else {
                    "off".to_owned()
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

fn is_our_setting(name: &str) -> bool {
    name.starts_with("OPENAI_") || name.starts_with("PROXY_") || name == "HOST" || name == "PORT"
}

/// Treats an empty value like an absent one, as `.env` templates leave optional ones blank.
pub(crate) fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl RawConfig {
    fn validate(&self) -> Result<Config, ConfigError> {
        let key = present(&self.openai_api_key).ok_or_else(|| {
            invalid(
                "OPENAI_API_KEY",
                "is required; set it in the environment or in .env (see config/example.env)",
            )
        })?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
            invalid(
                "OPENAI_API_KEY",
                "contains characters not allowed in a header",
            )
        })?;
        authorization.set_sensitive(true);

        let upstream = upstream::RawUpstream {
            base_url: present(&self.openai_base_url),
            ca: present(&self.proxy_upstream_ca),
            protocol: present(&self.proxy_upstream_protocol),
            max_streams: &self.proxy_upstream_max_streams,
            egress: &self.egress,
        }
        .validate()?;
        let organization = optional_header("OPENAI_ORGANIZATION", &self.openai_organization)?;
        let project = optional_header("OPENAI_PROJECT", &self.openai_project)?;

        let host = present(&self.host).unwrap_or("0.0.0.0");
        // `localhost` is what people write for loopback; other names would need a lookup.
        let host: IpAddr = match host {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    invalid(
                        "HOST",
                        format!("{host:?} is not an IP address or localhost"),
                    )
                })?,
        };
        let port = parse_number::<u16>("PORT", &self.port, 8000)?;

        let timeouts = Timeouts {
            connect: duration("PROXY_CONNECT_TIMEOUT", &self.proxy_connect_timeout, 10)?,
            first_byte: duration(
                "PROXY_FIRST_BYTE_TIMEOUT",
                &self.proxy_first_byte_timeout,
                600,
            )?,
            idle: duration("PROXY_IDLE_TIMEOUT", &self.proxy_idle_timeout, 300)?,
            total: match present(&self.proxy_total_timeout) {
                None => None,
                Some(v) => Some(parse_duration(v).map_err(|m| invalid("PROXY_TOTAL_TIMEOUT", m))?),
            },
            header_read: duration(
                "PROXY_HEADER_READ_TIMEOUT",
                &self.proxy_header_read_timeout,
                10,
            )?,
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

        let max_body_bytes =
            parse_number::<u64>("PROXY_MAX_BODY_BYTES", &self.proxy_max_body_bytes, 32 << 20)?;
        let listen_backlog =
            parse_number::<u32>("PROXY_LISTEN_BACKLOG", &self.proxy_listen_backlog, 4096)?;
        if listen_backlog == 0 {
            return Err(invalid("PROXY_LISTEN_BACKLOG", "must be at least 1"));
        }
        let max_connections =
            parse_number::<usize>("PROXY_MAX_CONNECTIONS", &self.proxy_max_connections, 10_000)?;
        if max_connections == 0 {
            return Err(invalid("PROXY_MAX_CONNECTIONS", "must be at least 1"));
        }

        let metrics_addr = present(&self.proxy_metrics_addr)
            .map(|v| {
                v.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "PROXY_METRICS_ADDR",
                        format!("{v:?} is not an address such as 127.0.0.1:9090"),
                    )
                })
            })
            .transpose()?;
        let mut routes = Routes::with_extra(parse_extra_routes(&self.proxy_extra_routes)?);
        if metrics_addr.is_some() {
            routes = routes.without_metrics();
        }

        Ok(Config {
            authorization,
            upstream,
            organization,
            project,
            listen: SocketAddr::new(host, port),
            listen_backlog,
            timeouts,
            max_body_bytes,
            max_connections,
            shutdown_delay: duration("PROXY_SHUTDOWN_DELAY", &self.proxy_shutdown_delay, 0)?,
            shutdown_grace: duration("PROXY_SHUTDOWN_GRACE", &self.proxy_shutdown_grace, 30)?,
            client_keys: parse_client_keys(&self.proxy_client_keys)?,
            cors_origins: parse_cors_origins(&self.proxy_cors_origins)?,
            log_format: match present(&self.proxy_log_format).unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "PROXY_LOG_FORMAT",
                        format!("{other:?} is neither \"text\" nor \"json\""),
                    ))
                }
            },
            routes,
            metrics_addr,
            tls: match (present(&self.proxy_tls_cert), present(&self.proxy_tls_key)) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(load_tls(Path::new(cert), Path::new(key))?),
                (Some(_), None) => {
                    return Err(invalid(
                        "PROXY_TLS_KEY",
                        "is required when PROXY_TLS_CERT is set",
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "PROXY_TLS_CERT",
                        "is required when PROXY_TLS_KEY is set",
                    ))
                }
            },
        })
    }
}

/// Reads a PEM certificate chain and private key into a server configuration that offers
/// HTTP/2 and HTTP/1.1 by ALPN.
fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                "PROXY_TLS_CERT",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            "PROXY_TLS_CERT",
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            "PROXY_TLS_KEY",
            format!("cannot read a private key from {}: {e}", key.display()),
        )
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("PROXY_TLS_CERT", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| {
        invalid(
            "PROXY_TLS_KEY",
            format!("does not match the certificate or is unusable: {e}"),
        )
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn optional_header(
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

fn duration(
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

fn comma_list(value: &Option<String>) -> impl Iterator<Item = &str> {
    present(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn parse_client_keys(value: &Option<String>) -> Result<ClientKeys, ConfigError> {
    let mut keys = Vec::new();
    for key in comma_list(value) {
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "PROXY_CLIENT_KEYS",
                "a key contains spaces or non-printable characters",
            ));
        }
        keys.push(Box::from(key.as_bytes()));
    }
    Ok(ClientKeys(keys))
}

fn parse_cors_origins(value: &Option<String>) -> Result<Option<CorsOrigins>, ConfigError> {
    let origins: Vec<&str> = comma_list(value).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    if origins.contains(&"*") {
        return Ok(Some(CorsOrigins::Any));
    }
    let mut list = Vec::with_capacity(origins.len());
    for origin in origins {
        let uri: Uri = origin
            .parse()
            .map_err(|_| invalid("PROXY_CORS_ORIGINS", format!("{origin:?} is not an origin")))?;
        let is_origin = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && !origin
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .contains('/');
        if !is_origin {
            return Err(invalid(
                "PROXY_CORS_ORIGINS",
                format!("{origin:?} is not an origin such as https://app.example.com"),
            ));
        }
        list.push(
            HeaderValue::from_str(origin)
                .map_err(|_| invalid("PROXY_CORS_ORIGINS", "bad characters"))?,
        );
    }
    Ok(Some(CorsOrigins::List(list)))
}

fn parse_extra_routes(value: &Option<String>) -> Result<Vec<ExtraRoute>, ConfigError> {
    comma_list(value)
        .map(|entry| ExtraRoute::parse(entry).map_err(|m| invalid("PROXY_EXTRA_ROUTES", m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = vec![("OPENAI_API_KEY", "sk-test")];
        vars.extend_from_slice(extra);
        Config::from_vars(vars)
    }

    #[test]
    fn defaults_are_those_documented() {
        let c = with(&[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(c.upstream.scheme, http::uri::Scheme::HTTPS);
        assert_eq!(c.upstream.authority.as_str(), "api.openai.com");
        assert_eq!(c.upstream.base_path, "/v1");
        assert_eq!(c.timeouts.connect, Duration::from_secs(10));
        assert_eq!(c.timeouts.first_byte, Duration::from_secs(600));
        assert_eq!(c.timeouts.idle, Duration::from_secs(300));
        assert_eq!(c.timeouts.total, None);
        assert_eq!(c.max_body_bytes, 33_554_432);
        assert_eq!(c.max_connections, 10_000);
        assert!(c.client_keys.0.is_empty());
        assert!(c.cors_origins.is_none());
    }

    #[test]
    fn missing_key_names_the_setting() {
        let err = Config::from_vars(Vec::<(String, String)>::new()).unwrap_err();
        assert_eq!(err.setting, "OPENAI_API_KEY");
        let err = with(&[("OPENAI_API_KEY", "  ")]).unwrap_err();
        assert_eq!(err.setting, "OPENAI_API_KEY");
    }

    #[test]
    fn malformed_values_name_their_setting() {
        for (name, value) in [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("HOST", "localhost:1"),
            ("OPENAI_BASE_URL", "ftp://x/v1"),
            ("OPENAI_BASE_URL", "not a url"),
            ("OPENAI_BASE_URL", "/v1"),
            ("PROXY_IDLE_TIMEOUT", "5 parsecs"),
            ("PROXY_CONNECT_TIMEOUT", "0"),
            ("PROXY_MAX_BODY_BYTES", "-1"),
            ("PROXY_LOG_FORMAT", "xml"),
            ("PROXY_CORS_ORIGINS", "example.com"),
            ("PROXY_MAX_CONNECTIONS", "0"),
            ("PROXY_METRICS_ADDR", "9090"),
            ("PROXY_EXTRA_ROUTES", "GET /v2/models"),
        ] {
            let err = with(&[(name, value)]).unwrap_err();
            assert_eq!(err.setting, name, "{name}={value}");
        }
    }

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

    #[test]
    fn host_takes_addresses_and_localhost() {
        for (host, expected) in [
            ("localhost", "127.0.0.1"),
            ("::1", "::1"),
            ("[::]", "::"),
            ("10.1.2.3", "10.1.2.3"),
        ] {
            let c = with(&[("HOST", host)]).unwrap();
            assert_eq!(c.listen.ip().to_string(), expected, "{host}");
        }
        assert_eq!(
            with(&[("HOST", "example.com")]).unwrap_err().setting,
            "HOST"
        );
    }

    #[test]
    fn http_base_url_keeps_its_path() {
        let c = with(&[("OPENAI_BASE_URL", "http://127.0.0.1:9000/openai/v1/")]).unwrap();
        assert_eq!(c.upstream.scheme, http::uri::Scheme::HTTP);
        assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(c.upstream.base_path, "/openai/v1");
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = with(&[
            ("OPENAI_API_KEY", "sk-very-secret"),
            ("PROXY_CLIENT_KEYS", "ck-one,ck-two"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(!shown.contains("ck-one"), "{shown}");
        assert!(shown.contains("2 keys"));
    }

    #[test]
    fn dotenv_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("memoctopus-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "OPENAI_API_KEY=sk-from-file\nPORT=9001\nHOST=127.0.0.1\n",
        )
        .unwrap();
        let env = vec![("PORT".to_string(), "9002".to_string())];
        let c = Config::load(env, Some(&path)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(c.authorization.as_bytes(), b"Bearer sk-from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
