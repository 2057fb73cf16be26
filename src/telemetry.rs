//! Log setup: `tracing` to standard output, as text or one JSON object per line.
//!
//! Nothing the proxy logs carries a header value other than request ids, so neither the key
//! nor a client's `Authorization` can appear, whatever `RUST_LOG` says.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Levels come from `RUST_LOG` (`info` by default), as
/// `level` or `target=level` directives separated by commas, such as
/// `warn,memoctopus::access=info`. Plain target filters need no regex engine, which keeps the
/// binary and its idle memory small.
pub fn init(format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
}
