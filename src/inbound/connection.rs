//! One client connection: TLS or plain, HTTP/1 or HTTP/2 told apart, and served by hyper
//! with its bounds until it ends or the drain closes it; each request answered, a refused head
//! or a panic included.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::bounds::{
    H2_MAX_CONCURRENT_STREAMS, H2_MAX_HEADER_LIST_BYTES, H2_MAX_LOCAL_ERROR_RESETS,
    H2_MAX_PENDING_RESETS, MAX_REQUEST_HEAD_BYTES,
};
use crate::config::Config;
use crate::error::ProxyError;
use crate::exchange::body::ProxyBody;
use crate::exchange::session::Handoff;
use crate::inbound::closing::Watcher;
use crate::inbound::framing::{FramingGuard, Refusals};
use crate::inbound::panics::CatchUnwind;
use crate::inbound::streams::{self, Streams, Tracked};
use crate::metrics::Metrics;
use crate::policy::websocket;
use crate::proxy::refused as refused_response;

/// hyper's settings for each protocol a client may speak.
pub(super) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub(super) fn new(config: &Config) -> Self {
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

/// A plain connection: HTTP/1 or h2c, told apart by the first bytes.
pub(super) async fn serve_plain<H, F>(stream: TcpStream, serving: Serving, handle: H)
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
pub(super) async fn serve_tls<H, F>(
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
pub(super) async fn serve_connection<I, H, F>(
    io: I,
    protocol: ClientProtocol,
    serving: Serving,
    handle: H,
) where
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
    let streams = (protocol == ClientProtocol::Http2).then(|| Streams::new(metrics.clone()));
    // An HTTP/2 connection's own reason to close (idle, or its requests used up), and when a
    // close it has begun gives up waiting for the client.
    let done = for_http2(streams.clone(), |s| streams::until_done(s, header_read));
    let abandon = for_http2(streams.clone(), |s| streams::until_idle(s, header_read));
    // Where the service leaves a WebSocket session, to run here once hyper lets go of the
    // connection: it keeps the connection's slot, and the drain cuts it with the connection.
    let handoff = Handoff::default();
    let answering = Arc::new(Answering {
        protocol,
        requests: AtomicU64::new(0),
        refusals: refusals.clone(),
        handoff: handoff.clone(),
        streams,
        metrics,
        handle,
    });
    let service = service_fn(move |request| answering.answer(request));
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

/// What answers the requests of one connection, in the order they came.
struct Answering<H> {
    protocol: ClientProtocol,
    /// Requests so far: the next one's index.
    requests: AtomicU64,
    /// What the framing guard refused, by request index.
    refusals: Arc<Refusals>,
    handoff: Handoff,
    streams: Option<Arc<Streams>>,
    metrics: Arc<Metrics>,
    handle: H,
}

impl<H, F> Answering<H>
where
    H: FnOnce(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    /// The connection's next request: refused if the framing guard refused its head, else
    /// handled, with a panic made a 500.
    fn answer(
        &self,
        mut request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Tracked<ProxyBody>>, Infallible>> + Send + 'static
    {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        let refused = self.refusals.of(index);
        let stream = self.streams.as_ref().map(|streams| streams.opened(index));
        if self.protocol == ClientProtocol::Http1 && websocket::is_upgrade(request.headers()) {
            request.extensions_mut().insert(self.handoff.clone());
        }
        let handle = self.handle.clone();
        let metrics = self.metrics.clone();
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
            Ok(response.map(|body| Tracked::new(body, stream)))
        }
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
pub(super) struct Serving {
    pub(super) builders: Arc<Builders>,
    pub(super) watcher: Watcher,
    pub(super) metrics: Arc<Metrics>,
    /// `PROXY_HEADER_READ_TIMEOUT`: also how long an HTTP/2 connection may go without a
    /// stream open.
    pub(super) header_read: Duration,
}

/// The HTTP/2 connection preface; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientProtocol {
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
pub(super) struct CountedConnection(pub(super) Arc<Metrics>);

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
    use tokio::net::TcpListener;

    use crate::error::json_response;
    use crate::inbound::closing::Closing;

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
        assert!(logged.contains("src/inbound/connection.rs:"), "{logged}");
        assert!(!logged.contains(SERVER_KEY), "{logged}");
        assert!(!logged.contains(CLIENT_KEY), "{logged}");
    }
}
