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

/// `--help`: the usage, every setting from the settings table, and the exit statuses.
pub fn help() -> String {
    format!(
        "\
memoctopus: a small, fast OpenAI passthrough proxy

USAGE:
    memoctopus                 serve (settings from the environment and ./.env)
    memoctopus --check-config  validate the settings, print them with the keys masked
    memoctopus --version       print the version
    memoctopus --help          print this help

SETTINGS (environment variables; non-empty ones win over ./.env; durations: 30, 30s, 250ms, 5m, 1h):
{}
EXIT STATUS:
    0   served until SIGTERM or SIGINT and drained; or --check-config found the settings usable
    64  a setting is missing or malformed (the message names it), or an unknown argument
    69  HOST:PORT or PROXY_METRICS_ADDR could not be bound (in use, or not this machine's)
",
        crate::config::settings::help_table()
    )
}

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
    fn help_lists_every_setting_and_exit_status() {
        let help = help();
        for setting in crate::config::settings::SETTINGS {
            assert!(
                help.contains(setting.name),
                "{} missing from --help",
                setting.name
            );
        }
        for status in ["64 ", "69 "] {
            assert!(help.contains(status), "exit status {status}missing");
        }
    }
}
