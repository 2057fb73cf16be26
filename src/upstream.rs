//! The pooled client that talks to the upstream: hyper-util's legacy client over hyper-rustls,
//! HTTP/1.1 or HTTP/2 by ALPN over TLS, plain HTTP/1.1 for `http://` base URLs.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::RequestBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The client every forwarded request goes through.
pub type UpstreamClient = Client<ConnectWithTimeout, RequestBody>;

/// How long an idle upstream connection stays in the pool. OpenAI's edge closes idle
/// connections after a few minutes; 90 s keeps them warm without racing that close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub fn client(connect_timeout: Duration) -> Result<UpstreamClient, rustls::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    // Each SSE event must leave at once, not wait for Nagle's algorithm.
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(Duration::from_secs(60)));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let connector = ConnectWithTimeout {
        inner: tls,
        timeout: connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector))
}

/// The connect timeout as an error in the chain, so the service can answer 504 for it.
#[derive(Debug)]
pub struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl StdError for ConnectTimedOut {}

/// Bounds TCP connect and TLS handshake together by `PROXY_CONNECT_TIMEOUT`; hyper-util's own
/// connect timeout covers only the TCP part.
#[derive(Clone)]
pub struct ConnectWithTimeout {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for ConnectWithTimeout {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

/// What went wrong talking to the upstream, for the answer and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    ConnectTimeout,
    Tls,
    /// The connection broke or the upstream spoke nonsense after we connected.
    Reset,
}

pub fn classify(error: &hyper_util::client::legacy::Error) -> FailureKind {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    let mut tls = false;
    while let Some(e) = source {
        if e.is::<ConnectTimedOut>() {
            return FailureKind::ConnectTimeout;
        }
        if e.is::<rustls::Error>() {
            tls = true;
        }
        source = e.source();
    }
    match (error.is_connect(), tls) {
        (_, true) => FailureKind::Tls,
        (true, false) => FailureKind::Connect,
        (false, false) => FailureKind::Reset,
    }
}

/// The error and its causes on one line, for messages to the client and the log. It never
/// holds a header value, so it cannot hold the key.
pub fn describe(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}
