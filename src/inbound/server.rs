//! The accept loop: HTTP/1.1 and h2c on one port, the connection limit, and graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bounds::{
    ADMIN_MAX_CONNECTIONS, H2_MAX_CONCURRENT_STREAMS, H2_MAX_HEADER_LIST_BYTES,
    H2_MAX_LOCAL_ERROR_RESETS, H2_MAX_PENDING_RESETS, MAX_REQUEST_HEAD_BYTES,
};
use crate::config::Config;
use crate::drain::{DrainReport, DrainState};
use crate::error::ProxyError;
use crate::exchange::body::ProxyBody;
use crate::exchange::session::Handoff;
use crate::inbound::closing::{Closing, Watcher};
use crate::inbound::framing::{FramingGuard, Refusals};
use crate::inbound::panics::CatchUnwind;
use crate::inbound::streams::{self, Streams, Tracked};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::policy::websocket;
use crate::proxy::{refused as refused_response, Admin, Proxy};

/// Serves `listener` until `shutdown` completes, then drains: `/ready` answers 503 for
/// `PROXY_SHUTDOWN_DELAY` while we still accept, then the listener closes, idle connections are
/// closed, and exchanges in flight get `PROXY_SHUTDOWN_GRACE` to finish before they are cut.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainReport> {
    run_with_metrics_listener(listener, None, config, shutdown).await
}

/// [`run`], with `/metrics` served on `metrics_listener` (bound from `PROXY_METRICS_ADDR`)
/// instead of the proxy's own port.
pub async fn run_with_metrics_listener(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainReport> {
    let drain = Arc::new(DrainState::default());
    let metrics = Arc::new(Metrics::new(&config.routes, config.usage.max_models));
    let keys = Arc::new(Keys::new(&config.keys, config.upstream.auth));
    let key_watcher = tokio::spawn(crate::keys::watch::watch(
        keys.clone(),
        config.keys.clone(),
        metrics.clone(),
    ));
    let proxy = Proxy::new(config.clone(), keys, drain.clone(), metrics.clone())
        .map_err(io::Error::other)?;
    let trimmer = tokio::spawn(crate::trim::trim_when_idle());
    let builders = Arc::new(Builders::new(&config));
    // The admin listener serves the proxy's own endpoints with the same accept loop, limits
    // and timeouts, under a connection cap of its own, so that it can never use up the file
    // descriptors the proxy's port needs. It runs until the drain has ended: the kubelet's
    // probes see `/ready` go 503.
    let header_read = config.timeouts.header_read;
    let admin_server = metrics_listener.map(|listener| {
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
    let mut acceptor = Acceptor::new(
        listener,
        proxy.clone(),
        config.max_connections,
        tls,
        &metrics,
        &builders,
        header_read,
    );

    acceptor.accept_until(shutdown).await;
    drain.start_draining();
    tracing::info!(delay = ?config.shutdown_delay, "shutdown signal received; /ready answers 503");
    acceptor
        .accept_until(tokio::time::sleep(config.shutdown_delay))
        .await;

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
    if let Some(admin_server) = admin_server {
        admin_server.abort();
    }
    trimmer.abort();
    key_watcher.abort();
    let report = drain.report();
    tracing::info!(finished = report.finished, cut = report.cut, "drained");
    Ok(report)
}

/// The most of `PROXY_SHUTDOWN_GRACE` kept for writing to the shared limits' Redis at the end
/// of a drain (a quarter of it, up to this).
const MAX_SETTLE_PART: Duration = Duration::from_secs(5);

/// hyper's settings for each protocol a client may speak.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &Config) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.timeouts.header_read)
            .max_buf_size(MAX_REQUEST_HEAD_BYTES);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_BYTES)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
        Self { http1, http2 }
    }
}

/// What answers the requests of one listener's connections: the [`Proxy`] on the proxy's
/// port, [`Admin`] on the admin listener.
trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

impl Handler for Proxy {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        Proxy::handle(self, request)
    }
}

impl Handler for Admin {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        std::future::ready(Admin::handle(self, &request))
    }
}

struct Acceptor<H> {
    listener: TcpListener,
    handler: H,
    metrics: Arc<Metrics>,
    builders: Arc<Builders>,
    closing: Closing,
    /// One permit per open connection: at the limit, new clients wait in the listen backlog
    /// and the connections already open are untouched.
    slots: Arc<Semaphore>,
    connections: JoinSet<()>,
    /// `PROXY_HEADER_READ_TIMEOUT`, for the bytes before hyper takes over.
    header_read: Duration,
    /// Set with `PROXY_TLS_CERT` and `PROXY_TLS_KEY`: clients speak HTTPS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl<H: Handler> Acceptor<H> {
    /// A listener whose connections `handler` answers, at most `max_connections` at once.
    fn new(
        listener: TcpListener,
        handler: H,
        max_connections: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
        metrics: &Arc<Metrics>,
        builders: &Arc<Builders>,
        header_read: Duration,
    ) -> Self {
        Acceptor {
            listener,
            handler,
            metrics: metrics.clone(),
            builders: builders.clone(),
            closing: Closing::default(),
            slots: Arc::new(Semaphore::new(max_connections)),
            connections: JoinSet::new(),
            header_read,
            tls,
        }
    }

    /// Accepts connections, each under a slot, until `stop` completes.
    async fn accept_until(&mut self, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        loop {
            let slot = tokio::select! {
                biased;
                _ = &mut stop => return,
                slot = self.slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => self.spawn_connection(stream, slot),
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.reap_ended();
        }
    }

    /// Serves one accepted connection on a task of its own, holding `slot` to its end.
    fn spawn_connection(&mut self, stream: TcpStream, slot: OwnedSemaphorePermit) {
        // Each SSE event must leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        self.metrics.connections.open.inc();
        let serving = Serving {
            builders: self.builders.clone(),
            watcher: self.closing.watcher(),
            metrics: self.metrics.clone(),
            header_read: self.header_read,
        };
        let handler = self.handler.clone();
        let tls = self.tls.clone();
        self.connections.spawn(async move {
            let _open = CountedConnection(serving.metrics.clone());
            let _slot = slot;
            // Boxed per request: hyper keeps a slot the size of the service's future for the
            // connection's life, idle or not, and the exchange's future is large.
            let handle = move |request| Box::pin(async move { handler.handle(request).await });
            match tls {
                None => serve_plain(stream, serving, handle).await,
                Some(tls) => serve_tls(stream, &tls, serving, handle).await,
            }
        });
    }

    /// Collects the connection tasks that have ended; a panicked one is logged.
    fn reap_ended(&mut self) {
        while let Some(ended) = self.connections.try_join_next() {
            if let Err(error) = ended {
                if error.is_panic() {
                    tracing::error!("a connection task panicked; the proxy goes on serving");
                }
            }
        }
    }
}

/// A plain connection: HTTP/1 or h2c, told apart by the first bytes.
async fn serve_plain<H, F>(stream: TcpStream, serving: Serving, handle: H)
where
    H: FnOnce(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // hyper's header read timeout starts only once it knows the protocol; a client that sends
    // nothing, or a lone prefix of the HTTP/2 preface, would otherwise hold the connection and
    // its slot forever.
    let Ok(protocol) = tokio::time::timeout(serving.header_read, protocol_decided(&stream)).await
    else {
        return;
    };
    Box::pin(serve_connection(stream, protocol, serving, handle)).await;
}

/// A TLS connection: the handshake within the header read timeout, then the protocol ALPN chose.
async fn serve_tls<H, F>(
    stream: TcpStream,
    tls: &tokio_rustls::TlsAcceptor,
    serving: Serving,
    handle: H,
) where
    H: FnOnce(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // Boxed: the handshake's state is large and short-lived, and the task would otherwise keep
    // room for it for the connection's life.
    let handshake = Box::pin(tokio::time::timeout(
        serving.header_read,
        tls.accept(stream),
    ));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    // ALPN has decided the protocol; hyper need not guess it from the bytes.
    let protocol = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        ClientProtocol::Http2
    } else {
        ClientProtocol::Http1
    };
    Box::pin(serve_connection(stream, protocol, serving, handle)).await;
}

/// Serves one client connection until it ends or the drain closes it. HTTP/1 goes through
/// the [`FramingGuard`], whose refusals the service answers. A request whose `handle` panics
/// gets a 500, and the connection goes on.
async fn serve_connection<I, H, F>(io: I, protocol: ClientProtocol, serving: Serving, handle: H)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: FnOnce(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let Serving {
        builders,
        watcher,
        metrics,
        header_read,
    } = serving;
    let refusals = Arc::new(Refusals::default());
    let requests = Arc::new(AtomicU64::new(0));
    let streams = (protocol == ClientProtocol::Http2).then(|| Streams::new(metrics.clone()));
    // An HTTP/2 connection's own reason to close (idle, or its requests used up), and when a
    // close it has begun gives up waiting for the client.
    let done = for_http2(streams.clone(), |s| streams::until_done(s, header_read));
    let abandon = for_http2(streams.clone(), |s| streams::until_idle(s, header_read));
    // Where the service leaves a WebSocket session, to run here once hyper lets go of the
    // connection: it keeps the connection's slot, and the drain cuts it with the connection.
    let handoff = Handoff::default();
    let service = {
        let refusals = refusals.clone();
        let handoff = handoff.clone();
        let requests = requests.clone();
        let streams = streams.clone();
        service_fn(move |mut request: Request<Incoming>| {
            let index = requests.fetch_add(1, Ordering::Relaxed);
            let refused = refusals.of(index);
            let stream = streams.as_ref().map(|streams| streams.opened(index));
            if protocol == ClientProtocol::Http1 && websocket::is_upgrade(request.headers()) {
                request.extensions_mut().insert(handoff.clone());
            }
            let handle = handle.clone();
            let metrics = metrics.clone();
            async move {
                let response = match refused {
                    Some(why) => {
                        metrics.connections.head_refused(why);
                        refused_response(why)
                    }
                    None => CatchUnwind::new(handle(request))
                        .await
                        .unwrap_or_else(|()| {
                            ProxyError::Internal("the request handler panicked").into_response()
                        }),
                };
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, stream)))
            }
        })
    };
    let ended = match protocol {
        ClientProtocol::Http1 => {
            let io = TokioIo::new(FramingGuard::new(io, refusals));
            let connection = pin!(builders.http1.serve_connection(io, service).with_upgrades());
            // hyper closes an HTTP/1 connection that sends no head within the header read
            // timeout by itself: `done` never completes here.
            watcher.serve(connection, done, abandon).await
        }
        ClientProtocol::Http2 => {
            let io = TokioIo::new(io);
            // An HTTP/2 connection's state is larger than an HTTP/1 one's, and this future is
            // as large as its largest branch: HTTP/1 connections do not carry its size.
            let mut connection = Box::pin(builders.http2.serve_connection(io, service));
            watcher.serve(connection.as_mut(), done, abandon).await
        }
    };
    match ended {
        Some(Err(error)) => tracing::debug!(error = %error, "connection ended with an error"),
        None => tracing::debug!("connection dropped: its close was never acknowledged"),
        Some(Ok(())) => {}
    }
    if let Some(session) = handoff.take() {
        session.await;
    }
}

/// `watch` of an HTTP/2 connection's streams; for an HTTP/1 connection (no streams), never.
async fn for_http2<F: Future<Output = ()>>(
    streams: Option<Arc<Streams>>,
    watch: impl FnOnce(Arc<Streams>) -> F,
) {
    match streams {
        Some(streams) => watch(streams).await,
        None => std::future::pending().await,
    }
}

/// What every client connection is served with.
struct Serving {
    builders: Arc<Builders>,
    watcher: Watcher,
    metrics: Arc<Metrics>,
    /// `PROXY_HEADER_READ_TIMEOUT`: also how long an HTTP/2 connection may go without a
    /// stream open.
    header_read: Duration,
}

/// The HTTP/2 connection preface; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientProtocol {
    Http1,
    Http2,
}

/// Waits, without consuming anything, until the client has sent enough to tell HTTP/1 from
/// HTTP/2, or has closed (which hyper's HTTP/1 side then sees).
async fn protocol_decided(stream: &TcpStream) -> ClientProtocol {
    let mut buf = [0u8; 24];
    loop {
        let Ok(n) = stream.peek(&mut buf).await else {
            return ClientProtocol::Http1;
        };
        if n == H2_PREFACE.len() && buf == H2_PREFACE {
            return ClientProtocol::Http2;
        }
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return ClientProtocol::Http1;
        }
        // A prefix of the preface and nothing more yet: peek would return at once, so wait.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keeps the open-connections gauge right however the connection task ends, aborted included.
struct CountedConnection(Arc<Metrics>);

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.0.connections.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::{BodyExt, Empty};

    use super::*;
    use crate::error::json_response;

    const SERVER_KEY: &str = "sk-unit-server-key-4242";
    const CLIENT_KEY: &str = "client-key-unit-77";

    /// What this thread logs while the guard lives, as JSON lines in memory: a
    /// `current_thread` test runs its tasks, and its panic hook, on this thread.
    #[derive(Clone, Default)]
    struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logged {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .json()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// A handler that panics, with both keys in its message, serves a 500 in OpenAI's shape;
    /// the same connection then answers the next request; the panic is logged at error level
    /// with its location and without either key.
    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_and_the_connection_goes_on() {
        let logs = Logged::default();
        let _capture = logs.capture();
        let config = Config::from_vars([
            ("OPENAI_API_KEY", SERVER_KEY),
            ("PROXY_CLIENT_KEYS", CLIENT_KEY),
        ])
        .unwrap();
        crate::inbound::panics::install_hook(&config);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let builders = Arc::new(Builders::new(&config));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let closing = Closing::default();
            let handle = |request: Request<Incoming>| async move {
                if request.uri().path() == "/panic" {
                    panic!("handler failed holding {SERVER_KEY} and Bearer {CLIENT_KEY}");
                }
                json_response(StatusCode::OK, r#"{"ok":true}"#)
            };
            let metrics = Arc::new(Metrics::new(&config.routes, config.usage.max_models));
            let serving = Serving {
                builders,
                watcher: closing.watcher(),
                metrics,
                header_read: Duration::from_secs(10),
            };
            serve_connection(stream, ClientProtocol::Http1, serving, handle).await;
        });

        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for path in ["/panic", "/fine"] {
            let request = Request::get(path)
                .header("host", "x")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            answers.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        let _ = std::panic::take_hook();

        assert_eq!(answers[0].0, StatusCode::INTERNAL_SERVER_ERROR);
        let error: serde_json::Value = serde_json::from_str(&answers[0].1).unwrap();
        assert_eq!(error["error"]["code"], "internal_error");
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(answers[1], (StatusCode::OK, r#"{"ok":true}"#.to_owned()));

        let logged = logs.text();
        assert!(logged.contains(r#""level":"ERROR""#), "{logged}");
        assert!(
            logged.contains("panic: handler failed holding [redacted]"),
            "{logged}"
        );
        assert!(logged.contains("src/inbound/server.rs:"), "{logged}");
        assert!(!logged.contains(SERVER_KEY), "{logged}");
        assert!(!logged.contains(CLIENT_KEY), "{logged}");
    }
}
