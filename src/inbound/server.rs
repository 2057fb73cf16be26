//! The entry point: the proxy's port and the admin listener served, then the drain. Graceful
//! shutdown is in three steps: `/ready` answers 503 for `PROXY_SHUTDOWN_DELAY` while the
//! listener still accepts, then it closes and idle connections are closed, and exchanges in
//! flight get `PROXY_SHUTDOWN_GRACE` to finish before they are cut.

use crate::upstreams::Upstreams;
use crate::watch;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bounds::ADMIN_MAX_CONNECTIONS;
use crate::config::Config;
use crate::drain::{DrainReport, DrainState};
use crate::inbound::accept::Acceptor;
use crate::inbound::connection::Builders;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::proxy::{Admin, Proxy};
use crate::traces::Tracing;

/// Serves `listener` until `shutdown` completes, then drains: `/ready` answers 503 for
/// `PROXY_SHUTDOWN_DELAY` while we still accept, then the listener closes, idle connections are
/// closed, and exchanges in flight get `PROXY_SHUTDOWN_GRACE` to finish before they are cut.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainReport> {
    run_with_admin_listener(listener, None, config, shutdown).await
}

/// [`run`], with the admin listener (`/metrics`, `/health`, `/ready`, no client key) served on
/// `admin_listener`, bound from `PROXY_METRICS_ADDR`.
pub async fn run_with_admin_listener(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainReport> {
    let mut server = Server::start(listener, admin_listener, config)?;
    server.serve_until(shutdown).await;
    Ok(server.drain().await)
}

/// A running proxy: its accept loops and the tasks that serve beside them.
struct Server {
    config: Config,
    proxy: Proxy,
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
    acceptor: Acceptor<Proxy>,
    /// The admin listener's accept loop. It runs until the drain has ended: the kubelet's
    /// probes see `/ready` go 503.
    admin: Option<JoinHandle<()>>,
    /// The key files' watcher, and the task that hands freed heap back to the OS.
    helpers: [JoinHandle<()>; 2],
}

impl Server {
    /// Builds the proxy from `config` and starts accepting on both listeners.
    fn start(
        listener: TcpListener,
        admin_listener: Option<TcpListener>,
        config: Config,
    ) -> io::Result<Server> {
        let drain = Arc::new(DrainState::default());
        let metrics = Arc::new(Metrics::new(&config.routes, config.usage.max_models));
        let keys = Arc::new(Keys::new(&config.keys));
        let upstreams = Upstreams::new(&config.upstreams, config.timeouts.connect, metrics.clone())
            .map_err(io::Error::other)?;
        let targets = watch::Targets {
            keys: keys.clone(),
            upstreams: upstreams.clone(),
            upstreams_file: config.upstreams_file.clone(),
        };
        let watched = config.clone();
        let watcher_metrics = metrics.clone();
        let key_watcher =
            tokio::spawn(async move { watch::watch(targets, &watched, watcher_metrics).await });
        let tracing =
            Tracing::start(config.traces.as_ref(), metrics.clone()).map_err(io::Error::other)?;
        let proxy = Proxy::new(
            config.clone(),
            keys,
            upstreams,
            drain.clone(),
            metrics.clone(),
            tracing,
        )
        .map_err(io::Error::other)?;
        let trimmer = tokio::spawn(crate::trim::trim_when_idle());
        let builders = Arc::new(Builders::new(&config));
        // The admin listener serves the proxy's own endpoints with the same accept loop,
        // limits and timeouts, under a connection cap of its own, so that it can never use up
        // the file descriptors the proxy's port needs.
        let header_read = config.timeouts.header_read;
        let admin = admin_listener.map(|listener| {
            let admin = Admin::new(drain.clone(), metrics.clone());
            let mut admin = Acceptor::new(
                listener,
                admin,
                ADMIN_MAX_CONNECTIONS,
                None,
                &metrics,
                &builders,
                header_read,
            );
            tokio::spawn(async move { admin.accept_until(std::future::pending()).await })
        });
        let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let acceptor = Acceptor::new(
            listener,
            proxy.clone(),
            config.max_connections,
            tls,
            &metrics,
            &builders,
            header_read,
        );
        Ok(Server {
            config,
            proxy,
            drain,
            metrics,
            acceptor,
            admin,
            helpers: [key_watcher, trimmer],
        })
    }

    /// Accepts until `shutdown`, then for `PROXY_SHUTDOWN_DELAY` more with `/ready` at 503.
    async fn serve_until(&mut self, shutdown: impl Future<Output = ()>) {
        self.acceptor.accept_until(shutdown).await;
        self.drain.start_draining();
        self.metrics.connections.drain_started();
        let delay = self.config.shutdown_delay;
        tracing::info!(?delay, "shutdown signal received; /ready answers 503");
        self.acceptor.accept_until(tokio::time::sleep(delay)).await;
    }

    /// Closes the listener and waits for the exchanges in flight, cutting what is left when
    /// the grace runs out; with shared limits, writes the finished exchanges to Redis.
    async fn drain(self) -> DrainReport {
        let Server {
            config,
            proxy,
            drain,
            acceptor,
            admin,
            helpers,
            ..
        } = self;
        let Acceptor {
            listener,
            closing,
            mut connections,
            ..
        } = acceptor;
        drop(listener);
        tracing::info!(
            connections = connections.len(),
            grace = ?config.shutdown_grace,
            "listener closed; waiting for exchanges in flight"
        );
        // WebSocket sessions outlive the connections they were upgraded from: the grace is for
        // both. With shared limits, its last part is kept for writing the finished exchanges'
        // slots and tokens to Redis.
        let grace_ends = Instant::now() + config.shutdown_grace;
        let settle_part = if proxy.shares_limits() {
            (config.shutdown_grace / 4).min(MAX_SETTLE_PART)
        } else {
            Duration::ZERO
        };
        let drained = async {
            closing.close_all().await;
            drain.sessions_closed().await;
        };
        if tokio::time::timeout(config.shutdown_grace - settle_part, drained)
            .await
            .is_err()
        {
            drain.start_cutting();
            connections.abort_all();
        }
        while connections.join_next().await.is_some() {}
        proxy
            .settle_limits(grace_ends.max(Instant::now() + settle_part))
            .await;
        proxy.flush_traces(TRACE_FLUSH).await;
        for task in admin.into_iter().chain(helpers) {
            task.abort();
        }
        let report = drain.report();
        tracing::info!(finished = report.finished, cut = report.cut, "drained");
        report
    }
}

/// The longest a drain waits, at its end, for the spans of the exchanges it finished to be
/// exported.
const TRACE_FLUSH: Duration = Duration::from_secs(2);

/// The most of `PROXY_SHUTDOWN_GRACE` kept for writing to the shared limits' Redis at the end
/// of a drain (a quarter of it, up to this).
const MAX_SETTLE_PART: Duration = Duration::from_secs(5);
