//! The upstream side. An `https://` base URL goes through hyper-util's pooled client over
//! hyper-rustls, HTTP/2 or HTTP/1.1 by ALPN (HTTP/2 streams hand frames over without the
//! one-frame channel). An `http://` base URL (a local upstream, a mock, vLLM) uses
//! [`crate::pool`]: HTTP/1.1 connections driven inside the exchange.

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

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RequestBody;
use crate::config::Upstream as UpstreamConfig;
use crate::pool::{Http1Pool, Lease};

type BoxError = Box<dyn StdError + Send + Sync>;

/// hyper-util's client, for TLS upstreams.
pub type UpstreamClient = Client<ConnectWithTimeout, RequestBody>;

/// Where forwarded requests go, and how.
pub enum Upstream {
    Plain {
        pool: Arc<Http1Pool>,
        /// The upstream's authority, for the Host header hyper's connection does not set.
        host: HeaderValue,
    },
    Tls(Box<UpstreamClient>),
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        connect_timeout: Duration,
    ) -> Result<Upstream, rustls::Error> {
        if config.scheme == http::uri::Scheme::HTTP {
            let host = HeaderValue::from_str(config.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
            let port = config.authority.port_u16().unwrap_or(80);
            let pool = Http1Pool::spawn(config.authority.host(), port, connect_timeout);
            return Ok(Upstream::Plain { pool, host });
        }
        Ok(Upstream::Tls(Box::new(client(connect_timeout)?)))
    }

    /// Sends `request` (whose URI is absolute) and waits for the response head. For a plain
    /// upstream the connection comes back too, and the response body flows only while it is
    /// driven.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        match self {
            Upstream::Plain { pool, host } => {
                // hyper's own connection sends the URI as given: make it origin-form.
                let origin_form = request
                    .uri()
                    .path_and_query()
                    .map(|pq| http::Uri::from(pq.clone()))
                    .unwrap_or_else(|| http::Uri::from_static("/"));
                *request.uri_mut() = origin_form;
                request.headers_mut().insert(header::HOST, host.clone());
                let (response, conn) = pool.send(request).await?;
                Ok((
                    response,
                    Some(Lease {
                        conn,
                        pool: pool.clone(),
                    }),
                ))
            }
            Upstream::Tls(client) => match client.request(request).await {
                Ok(response) => Ok((response, None)),
                Err(error) => Err(UpstreamError {
                    kind: classify(&error),
                    error: Box::new(error),
                }),
            },
        }
    }
}

/// A failed upstream call: what kind of failure, and the error itself.
#[derive(Debug)]
pub struct UpstreamError {
    pub kind: FailureKind,
    pub error: BoxError,
}

impl UpstreamError {
    pub fn new(kind: FailureKind, error: impl Into<BoxError>) -> UpstreamError {
        UpstreamError {
            kind,
            error: error.into(),
        }
    }
}

/// How long an idle upstream connection stays in the pool. OpenAI's edge closes idle
/// connections after a few minutes; 90 s keeps them warm without racing that close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

fn client(connect_timeout: Duration) -> Result<UpstreamClient, rustls::Error> {
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

fn classify(error: &hyper_util::client::legacy::Error) -> FailureKind {
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
