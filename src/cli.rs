//! The command line: `--help`, `--version`, `--check-config`. Everything else is a setting.

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    Help,
    Version,
    CheckConfig,
}

/// Reads the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut command = Command::Serve;
    for arg in args {
        command = match arg.as_str() {
            "-h" | "--help" => Command::Help,
            "-V" | "--version" => Command::Version,
            "--check-config" => Command::CheckConfig,
            other => return Err(format!("unknown argument {other:?}; see memoctopus --help")),
        };
    }
    Ok(command)
}

pub const HELP: &str = "\
memoctopus: a small, fast OpenAI passthrough proxy

USAGE:
    memoctopus                 serve (settings from the environment and ./.env)
    memoctopus --check-config  validate the settings, print them with the key masked, exit 0 or 64
    memoctopus --version       print the version
    memoctopus --help          print this help

SETTINGS (environment variables; real ones win over ./.env; durations: 30, 30s, 250ms, 5m, 1h):
    OPENAI_API_KEY             required (or the file); the server-held key, never shown to clients
    OPENAI_API_KEY_FILE        unset   a file holding the key instead; re-read while serving
    OPENAI_BASE_URL            https://api.openai.com/v1   (http:// works for local upstreams)
    OPENAI_ORGANIZATION        unset; sent upstream as OpenAI-Organization
    OPENAI_PROJECT             unset; sent upstream as OpenAI-Project
    PROXY_UPSTREAM_AUTH        bearer  bearer (Authorization: Bearer) or api-key (Azure OpenAI)
    PROXY_UPSTREAM_QUERY       unset   name=value&... added to every upstream URL (api-version=...)
    HOST                       0.0.0.0
    PORT                       8000
    PROXY_CONNECT_TIMEOUT      10s     TCP + TLS connect to the upstream
    PROXY_FIRST_BYTE_TIMEOUT   600s    request start to the upstream's response head
    PROXY_IDLE_TIMEOUT         300s    longest gap between body frames, either direction
    PROXY_TOTAL_TIMEOUT        none    optional cap on a whole exchange
    PROXY_MAX_BODY_BYTES       33554432 (32 MiB)
    PROXY_HEADER_READ_TIMEOUT  10s     a client must send its request head within this
    PROXY_MAX_CONNECTIONS      10000   inbound connections held at once
    PROXY_SHUTDOWN_DELAY       0s      after SIGTERM, /ready says 503 this long while serving
    PROXY_SHUTDOWN_GRACE       30s     then in-flight exchanges get this long before they are cut
    PROXY_CLIENT_KEYS          unset   comma-separated name:key (or bare key) clients must present
    PROXY_CLIENT_KEYS_FILE     unset   the same, one a line; re-read while serving
    PROXY_CLIENT_MAX_IN_FLIGHT unset   exchanges one client may have open at once (else 429)
    PROXY_CLIENT_RATE          unset   requests a minute per client, a token bucket (else 429)
    PROXY_CLIENT_RATE_BURST    rate/6  requests a quiet client may send at once
    PROXY_CORS_ORIGINS         unset   comma-separated origins, or *, allowed from browsers
    PROXY_EXTRA_ROUTES         empty   more routes, e.g. \"POST /v1/embeddings, GET /v1/models/*\";
                                       \"GET /v1/realtime\" enables the Realtime API's WebSocket
    PROXY_METRICS_ADDR         unset   serve /metrics on this address instead of the proxy's port
    PROXY_TLS_CERT             unset   PEM certificate chain: serve HTTPS (with PROXY_TLS_KEY)
    PROXY_TLS_KEY              unset   PEM private key
    PROXY_LOG_FORMAT           text    text or json; levels through RUST_LOG (default info)

Exit status 64 means a setting is missing or malformed; the message names it.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_are_recognised() {
        assert_eq!(parse(args(&[])), Ok(Command::Serve));
        assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse(args(&["--check-config"])), Ok(Command::CheckConfig));
        assert!(parse(args(&["--port=1"])).is_err());
    }

    #[test]
    fn help_lists_every_setting() {
        for setting in [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_ORGANIZATION",
            "OPENAI_PROJECT",
            "HOST",
            "PORT",
            "PROXY_CONNECT_TIMEOUT",
            "PROXY_FIRST_BYTE_TIMEOUT",
            "PROXY_IDLE_TIMEOUT",
            "PROXY_TOTAL_TIMEOUT",
            "PROXY_MAX_BODY_BYTES",
            "PROXY_HEADER_READ_TIMEOUT",
            "PROXY_MAX_CONNECTIONS",
            "PROXY_SHUTDOWN_DELAY",
            "PROXY_SHUTDOWN_GRACE",
            "PROXY_CLIENT_KEYS",
            "PROXY_CORS_ORIGINS",
            "PROXY_EXTRA_ROUTES",
            "PROXY_METRICS_ADDR",
            "PROXY_TLS_CERT",
            "PROXY_TLS_KEY",
            "PROXY_LOG_FORMAT",
        ] {
            assert!(HELP.contains(setting), "{setting} missing from --help");
        }
    }
}
