//! The `memoctopus` binary: read the settings, bind, serve until SIGTERM or SIGINT.

use std::process::ExitCode;

use memoctopus::cli::{self, Command};
use memoctopus::inbound::{listener, panics};
use memoctopus::{telemetry, Config};
use tokio::net::TcpListener;

/// EX_USAGE from sysexits.h: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;
/// EX_UNAVAILABLE: the address could not be bound, or the runtime could not start.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("memoctopus: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("memoctopus {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::CheckConfig | Command::Serve => {}
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("memoctopus: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if command == Command::CheckConfig {
        print!("{}", config.describe());
        for warning in &config.warnings {
            println!("warning: {warning}");
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format);
    panics::install_hook(&config);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    // Pinned to one core (taskset, a CPU limit of 1), one thread does all the work without
    // hand-offs; otherwise one worker per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memoctopus: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let status = runtime.block_on(serve(config));
    // A blocking read still stuck in the kernel (a hung volume) must not keep a drained
    // process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    status
}

async fn serve(config: Config) -> ExitCode {
    let listener = match listener::bind(config.listen, config.listen_backlog) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %config.listen, %error, "cannot bind HOST:PORT");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let metrics_listener = match config.metrics_addr {
        None => None,
        Some(address) => match TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(%address, %error, "cannot bind PROXY_METRICS_ADDR");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        },
    };
    let address = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%address, upstream = %config.upstream_url(), "memoctopus listening");
    if let Some(admin) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(address = %admin, "admin listener (/health, /ready, /metrics) listening");
    }
    match memoctopus::run_with_admin_listener(listener, metrics_listener, config, shutdown_signal())
        .await
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot serve");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// Completes at the first SIGTERM (Kubernetes, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
