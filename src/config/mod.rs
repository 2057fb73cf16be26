//! Settings: the environment (over an optional `.env` file) turned once, at start, into typed
//! values. A bad value is reported with the name of the setting and never reaches a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod clients;
mod describe;
mod egress;
mod inbound;
mod keys;
pub mod settings;
mod shared_limits;
mod timeouts;
mod traces;
mod upstream;
mod upstreams;
mod values;

pub(crate) use clients::UsageSettings;
pub(crate) use egress::EGRESS_VARIABLES;
pub(crate) use keys::{
    api_key_file, check_entries, client_keys_file, read as read_key_file, EntryRules, KeySettings,
    API_KEY_FILE, CLIENT_KEYS_FILE, UPSTREAMS_FILE,
};
pub(crate) use shared_limits::{Fallback, SharedLimitsSettings};
pub(crate) use timeouts::Timeouts;
pub(crate) use traces::{GenAiNames, Root, Sampling, TraceSettings};
pub(crate) use upstream::{UpstreamProtocol, UpstreamSettings};
pub(crate) use upstreams::{
    FailoverRules, Snapshot, UpstreamEntry, UpstreamSet, UpstreamsFile, DEFAULT_UPSTREAM,
};
pub use values::{parse_duration, ConfigError};

use crate::policy::client_limits::LimitSettings;
use crate::policy::cors::CorsOrigins;
use crate::policy::routes::{ExtraRoute, Routes};
use values::{invalid, Value};

/// `config/example.env`'s stand-in for the key.
const PLACEHOLDER_KEY: &str = "sk-replace-me";

/// The proxy's whole configuration. Built by [`Config::from_vars`] or [`Config::load`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The server's key and the clients' keys, as loaded at start, and the files that
    /// replace them while serving.
    pub(crate) keys: KeySettings,
    /// How every upstream is reached (`OPENAI_BASE_URL`'s, or the base of each entry of
    /// `PROXY_UPSTREAMS_FILE`).
    pub(crate) upstream: UpstreamSettings,
    /// The upstreams requests go to, with their keys: `OPENAI_BASE_URL`'s alone, or the
    /// entries of `PROXY_UPSTREAMS_FILE`.
    pub(crate) upstreams: UpstreamSet,
    /// `PROXY_UPSTREAMS_FILE`: re-read while serving.
    pub(crate) upstreams_file: Option<UpstreamsFile>,
    /// `HOST`:`PORT`, the address `main` binds.
    pub listen: SocketAddr,
    /// `PROXY_LISTEN_BACKLOG`: connections the kernel queues before they are accepted.
    pub listen_backlog: u32,
    /// The upstream and client timeouts.
    pub(crate) timeouts: Timeouts,
    /// The largest request body forwarded; above it the client gets 413.
    pub(crate) max_body_bytes: u64,
    /// Inbound connections held at once. Further clients wait in the listen backlog.
    pub(crate) max_connections: usize,
    /// After the shutdown signal, how long `/ready` reports 503 while we still accept.
    pub(crate) shutdown_delay: Duration,
    /// After the delay, how long in-flight exchanges may run before they are cut.
    pub(crate) shutdown_grace: Duration,
    /// `PROXY_CLIENT_MAX_IN_FLIGHT`, `PROXY_CLIENT_RATE` and `PROXY_CLIENT_TOKEN_BUDGET`: each
    /// client's limits, where its key entry sets none of its own.
    pub(crate) client_limits: LimitSettings,
    /// `PROXY_CLIENT_OUTPUT_RESERVE`: the tokens a request under a budget reserves for its
    /// answer, beside its input's estimate, until the exchange's count is known.
    pub(crate) output_reserve: u64,
    /// `PROXY_USAGE` and `PROXY_USAGE_MAX_MODELS`.
    pub(crate) usage: UsageSettings,
    /// `PROXY_LIMITS_REDIS_*`: the client limits shared by every replica on one Redis; `None`
    /// keeps them per process.
    pub(crate) shared_limits: Option<SharedLimitsSettings>,
    /// Browser origins allowed by CORS; `None` means no CORS headers at all.
    pub(crate) cors_origins: Option<CorsOrigins>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `OTEL_*`: where traces are exported; `None` keeps them off.
    pub(crate) traces: Option<TraceSettings>,
    /// The routes forwarded upstream: the two built-in ones plus `PROXY_EXTRA_ROUTES`.
    pub(crate) routes: Routes,
    /// `PROXY_METRICS_ADDR`: serve `/metrics` on its own listener instead of the proxy's port.
    pub metrics_addr: Option<SocketAddr>,
    /// `PROXY_TLS_CERT` and `PROXY_TLS_KEY`, loaded: serve HTTPS (h2 and http/1.1 by ALPN).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// What start-up should say but not refuse: `PROXY_*` variables that are not settings,
    /// the example's placeholder key, and an open relay. Logged at start and printed by `--check-config`;
    /// never holds a value.
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    ///
    /// The one rule for empty values: an empty value in the environment does not hide the
    /// file's value for the same name (docker compose writes `NAME: ${NAME}` as an empty
    /// variable when the host has none). An empty value with nothing under it is unset.
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
        for (name, value) in env {
            if value.is_empty() {
                vars.entry(name).or_insert(value);
            } else {
                vars.insert(name, value);
            }
        }
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
            // Empty is unset; blank (only whitespace) is a mistake, never a way to switch a
            // guard off.
            if !v.is_empty() && v.trim().is_empty() {
                if let Some(setting) = settings::find(&k) {
                    return Err(invalid(
                        setting.name,
                        "is only whitespace; leave it empty to unset it",
                    ));
                }
            }
            if EGRESS_VARIABLES.contains(&k.as_str()) {
                egress.insert(k, v);
            } else if is_our_setting(&k) {
                ours.insert(k, v);
            }
        }
        let warnings = settings::unknown_warnings(ours.keys().map(String::as_str));
        let values: settings::Values =
            envy::from_iter(ours).map_err(|e| invalid("environment", e.to_string()))?;
        let mut config = validate(&values.found(), &egress)?;
        config.warnings = warnings;
        if config
            .keys
            .api_key
            .as_ref()
            .is_some_and(|key| key.as_bytes() == PLACEHOLDER_KEY.as_bytes())
        {
            config.warnings.push(format!(
                "OPENAI_API_KEY is still {PLACEHOLDER_KEY}, the placeholder from config/example.env: OpenAI refuses it, so every request gets 502 upstream_auth_failed; put your key in .env, or try the proxy against the mock upstream (see the README)"
            ));
        }
        let bare: Vec<String> = config
            .keys
            .client_keys
            .bare_entries()
            .map(|n| n.to_string())
            .collect();
        if !bare.is_empty() {
            config.warnings.push(format!(
                "client key entries {} give a bare key, named by its place in the list (key-N): removing an entry above one renames it in the metrics and logs; write name:key to keep a name",
                bare.join(", ")
            ));
        }
        if config.is_open_relay() {
            config.warnings.push(format!(
                "PROXY_CLIENT_KEYS is unset and HOST {} is not loopback: anyone who can reach this port spends the server's OpenAI key; set client keys, or HOST=127.0.0.1 for a sidecar",
                config.listen.ip()
            ));
        }
        Ok(config)
    }

    /// Whether anyone who reaches the listener spends the server's key: no client keys, on an
    /// address other than loopback.
    fn is_open_relay(&self) -> bool {
        self.keys.client_keys.is_empty()
            && self.keys.client_keys_file.is_none()
            && !self.listen.ip().is_loopback()
    }

    /// One of the client keys loaded at start, if there are any: what a scraper of `/metrics`
    /// on the proxy's port presents.
    pub fn a_client_key(&self) -> Option<&[u8]> {
        self.keys.client_keys.secrets().next()
    }

    /// The upstream's base URL, or the upstreams file, for the start-up line.
    pub fn upstream_url(&self) -> String {
        if let Some(file) = &self.upstreams_file {
            return format!(
                "{} upstreams from {}",
                self.upstreams.entries.len(),
                file.path.display()
            );
        }
        let u = &self.upstream;
        format!("{}://{}{}", u.scheme, u.authority, u.base_path)
    }
}

/// Every setting checked and turned into its typed value, each group by its own file.
fn validate(
    found: &settings::Found<'_>,
    egress: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut keys = keys::validate(found)?;
    let upstream = upstream::validate(found, egress)?;
    let timeouts = timeouts::validate(found)?;
    let client_limits = clients::client_limits(found)?;
    let usage = clients::usage(found)?;
    if !usage.enabled && client_limits.token_budget.is_some() {
        // A budget counts what the meter reads: without it, a budget would never close.
        return Err(found
            .proxy_client_token_budget
            .invalid("needs the usage meter, and PROXY_USAGE is off"));
    }
    keys.rules = EntryRules {
        metered: usage.enabled,
        budget_by_default: client_limits.token_budget.is_some(),
    };
    keys::check_entries(&keys.client_keys, keys.rules).map_err(|m| {
        if keys.client_keys_file.is_some() {
            found.proxy_client_keys_file.invalid(m)
        } else {
            found.proxy_client_keys.invalid(m)
        }
    })?;
    let shared_limits = shared_limits::validate(found)?;
    let listen = inbound::listen(found)?;
    let (upstreams, upstreams_file) = match &keys.api_key {
        Some(key) => {
            upstream::not_this_proxy(&upstream, listen)?;
            (upstreams::single(&upstream, key), None)
        }
        None => upstreams_file(found, &upstream, egress, listen)?,
    };
    let metrics_addr = inbound::metrics_addr(found.proxy_metrics_addr)?;
    let mut routes = Routes::with_extra(parse_extra_routes(found.proxy_extra_routes)?);
    if metrics_addr.is_some() {
        routes = routes.without_metrics();
    }
    Ok(Config {
        keys,
        upstream,
        upstreams,
        upstreams_file,
        listen,
        listen_backlog: found.proxy_listen_backlog.at_least_one()?,
        timeouts,
        max_body_bytes: found.proxy_max_body_bytes.number()?,
        max_connections: found.proxy_max_connections.at_least_one()?,
        shutdown_delay: found.proxy_shutdown_delay.duration()?,
        shutdown_grace: found.proxy_shutdown_grace.duration()?,
        client_limits,
        output_reserve: found.proxy_client_output_reserve.number()?,
        usage,
        shared_limits,
        cors_origins: inbound::cors_origins(found.proxy_cors_origins)?,
        log_format: found
            .proxy_log_format
            .choice(&[("text", LogFormat::Text), ("json", LogFormat::Json)])?,
        routes,
        metrics_addr,
        traces: traces::validate(found)?,
        tls: inbound::tls(found.proxy_tls_cert, found.proxy_tls_key)?,
        warnings: Vec::new(),
    })
}

/// `PROXY_UPSTREAMS_FILE`, read against the shared upstream settings. The settings it replaces
/// must not be set beside it: two answers to "where do requests go" is a mistake.
fn upstreams_file(
    found: &settings::Found<'_>,
    base: &UpstreamSettings,
    egress: &HashMap<String, String>,
    listen: SocketAddr,
) -> Result<(UpstreamSet, Option<UpstreamsFile>), ConfigError> {
    let setting = found.proxy_upstreams_file;
    for replaced in [
        found.openai_base_url,
        found.proxy_upstream_auth,
        found.proxy_upstream_query,
    ] {
        if !replaced.is_default() {
            return Err(replaced.invalid(
                "is set, and so is PROXY_UPSTREAMS_FILE, whose entries each give their own; unset one of them",
            ));
        }
    }
    let path = setting.get().map(std::path::PathBuf::from).ok_or_else(|| {
        found.openai_api_key.invalid(
            "is required (or OPENAI_API_KEY_FILE, or PROXY_UPSTREAMS_FILE); set it in the environment or in .env (see config/example.env)",
        )
    })?;
    let snapshot = UpstreamsFile::read(&path).map_err(|m| setting.invalid(m))?;
    let file = UpstreamsFile {
        path,
        base: base.clone(),
        egress: egress.clone(),
        listen,
        loaded: Arc::new(snapshot),
    };
    let set = file.parse(&file.loaded).map_err(|m| setting.invalid(m))?;
    Ok((set, Some(file)))
}

fn is_our_setting(name: &str) -> bool {
    name.starts_with("OPENAI_")
        || name.starts_with("PROXY_")
        || name.starts_with("OTEL_")
        || name == "HOST"
        || name == "PORT"
}

fn parse_extra_routes(value: Value<'_>) -> Result<Vec<ExtraRoute>, ConfigError> {
    value
        .list()
        .map(|entry| ExtraRoute::parse(entry).map_err(|m| value.invalid(m)))
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
        assert!(c.keys.client_keys.is_empty());
        assert_eq!(c.client_limits, LimitSettings::default());
        assert_eq!(
            c.upstream.auth,
            crate::policy::headers::UpstreamAuth::Bearer
        );
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
            ("PROXY_CLIENT_KEYS", "a:ck-1,a:ck-2"),
            ("PROXY_CLIENT_MAX_IN_FLIGHT", "0"),
            ("PROXY_CLIENT_RATE", "fast"),
            ("PROXY_CLIENT_RATE_BURST", "5"),
            ("PROXY_UPSTREAM_AUTH", "basic"),
            ("PROXY_UPSTREAM_QUERY", "api-version"),
            ("PROXY_CLIENT_KEYS_FILE", "/nonexistent/memoctopus-keys"),
        ] {
            let err = with(&[(name, value)]).unwrap_err();
            assert_eq!(err.setting, name, "{name}={value}");
        }
    }

    #[test]
    fn key_files_are_read_at_start_and_exactly_one_source_is_set() {
        let dir = std::env::temp_dir().join(format!("memoctopus-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        let clients = dir.join("clients");
        std::fs::write(&key, "  sk-from-a-file \n").unwrap();
        std::fs::write(&clients, "# apps\n\nweb:ck-web\n ck-bare \n").unwrap();
        let (key, clients) = (key.to_str().unwrap(), clients.to_str().unwrap());
        let c = Config::from_vars([
            ("OPENAI_API_KEY_FILE", key),
            ("PROXY_CLIENT_KEYS_FILE", clients),
        ])
        .unwrap();
        assert_eq!(c.upstreams.entries[0].api_key.as_bytes(), b"sk-from-a-file");
        assert_eq!(c.keys.client_keys.len(), 2);
        assert!(c.describe().contains("reloaded when it changes"));
        let both = with(&[("OPENAI_API_KEY_FILE", key)]).unwrap_err();
        assert_eq!(both.setting, "OPENAI_API_KEY");
        let both = with(&[
            ("PROXY_CLIENT_KEYS", "ck-1"),
            ("PROXY_CLIENT_KEYS_FILE", clients),
        ]);
        assert_eq!(both.unwrap_err().setting, "PROXY_CLIENT_KEYS");
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let empty = dir.join("empty");
        let err =
            Config::from_vars([("OPENAI_API_KEY_FILE", empty.to_str().unwrap())]).unwrap_err();
        assert_eq!(err.setting, "OPENAI_API_KEY_FILE");
        std::fs::remove_dir_all(&dir).unwrap();
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
        assert_eq!(c.upstreams.entries[0].api_key.as_bytes(), b"sk-from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
