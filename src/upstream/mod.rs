//! The upstream side: how a request reaches OpenAI and its answer comes back.
//!
//! - [`failure`]: what went wrong, sorted by whose fault it was.
//! - [`connect`]: one connection: TCP or a forward proxy's `CONNECT` tunnel, then TLS and ALPN.
//! - [`retry`]: which failures prove the upstream did not process a request, and a body that
//!   can be sent again.
//! - [`http1`]: keep-alive HTTP/1.1 connections, each driven inside its exchange.
//! - [`http2`]: HTTP/2 connections, as many as the streams in flight need.
//! - `coalesce`: an HTTP/2 connection's writes are gathered and sent once per scheduler turn,
//!   so that frames queued by several tasks, and an upload's DATA frames, leave together.
//! - `sweep`: the pools' once-a-second housekeeping.
//!
//! [`Upstream`] picks the pool by `PROXY_UPSTREAM_PROTOCOL` (under `auto`, by what the first
//! connection's ALPN chose) and applies the retry rule.

mod coalesce;
pub(crate) mod connect;
pub(crate) mod failure;
pub(crate) mod http1;
pub(crate) mod http2;
mod outgoing;
pub(crate) mod retry;
mod sweep;
pub(crate) mod websocket;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub(crate) use failure::{describe, UpstreamError};
pub(crate) use outgoing::SendBody;

use crate::config::{UpstreamProtocol, UpstreamSettings};
use crate::metrics::Metrics;
use crate::outcome::{FailureKind, Resent, RetryReason};
use connect::{Connector, Offer};
use http1::Http1Pool;
use http2::Http2Pool;
use outgoing::Outgoing;
use retry::{Recovery, Replayable, Unanswered};

/// One attempt's failure, as the retry loop sees it.
type Attempt<B> = Unanswered<Request<Outgoing<B>>>;

/// Attempts at most for one request: each retry is of a request the upstream provably did not
/// process, and a burst caught by several connections' GOAWAYs in a row still gets through.
const MAX_ATTEMPTS: u32 = 3;

/// How long a complete HTTP/2 answer's END_STREAM is waited for before the stream is reset.
const END_STREAM_WAIT: Duration = Duration::from_secs(5);

/// What `auto` has learned the upstream speaks.
const UNKNOWN: u8 = 0;
const LEARNED_HTTP1: u8 = 1;
const LEARNED_HTTP2: u8 = 2;

/// Where forwarded requests go, and how. `B` is the request body type.
pub(crate) struct Upstream<B: SendBody> {
    protocol: UpstreamProtocol,
    /// An `http://` upstream: no ALPN, so `auto` means HTTP/1.1.
    plain: bool,
    /// Under `auto`: what the last probe's ALPN chose.
    learned: AtomicU8,
    /// One probe at a time, so that a burst of first requests opens one connection, not one
    /// each, before the protocol is known.
    probing: tokio::sync::Mutex<()>,
    connector: Arc<Connector>,
    http1: Arc<Http1Pool<Outgoing<B>>>,
    http2: Arc<Http2Pool<Outgoing<B>>>,
    /// `scheme://authority` of every request.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The Host header for HTTP/1.1, whose connection does not set one.
    host: HeaderValue,
    metrics: Arc<Metrics>,
}

/// What the response body holds on to while it flows. It lives inside the boxed response
/// body, so the HTTP/1.1 connection is kept inline rather than in a second allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lease<B: SendBody> {
    /// The HTTP/1.1 connection itself, driven from the body's `poll_frame`.
    Http1(http1::Lease<Outgoing<B>>),
    /// A claim on one of an HTTP/2 connection's streams.
    Http2(http2::Stream),
}

impl<B> Lease<B>
where
    B: SendBody,
{
    /// Lets an HTTP/1.1 connection hand over what it has read, and says whether it did;
    /// HTTP/2 connections run in tasks of their own.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Lease::Http1(lease) => {
                lease.conn.drive(cx);
                true
            }
            Lease::Http2(_) => false,
        }
    }

    /// The exchange ended cleanly: the connection may be reused. `rest` is what is left of
    /// the response body: an HTTP/2 stream whose END_STREAM has not arrived yet is read to
    /// its end in the background rather than reset, so that a complete answer never costs a
    /// `RST_STREAM` (nor, against an upstream that closes at once, a write to a closed socket).
    pub(crate) fn give_back(self, rest: Option<Incoming>) {
        match self {
            Lease::Http1(lease) => {
                drop(rest);
                lease.give_back();
            }
            Lease::Http2(stream) => {
                if let Some(rest) = rest.filter(|rest| !rest.is_end_stream()) {
                    tokio::spawn(async move {
                        let _stream = stream;
                        let mut rest = rest;
                        let _ = tokio::time::timeout(END_STREAM_WAIT, async {
                            while let Some(Ok(_)) = rest.frame().await {}
                        })
                        .await;
                    });
                }
            }
        }
    }
}

impl<B> Upstream<B>
where
    B: SendBody,
{
    /// Must be called within the runtime: the pools start their sweeping tasks.
    pub(crate) fn new(
        config: &UpstreamSettings,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream<B>, rustls::Error> {
        let connector = Arc::new(Connector::new(config, connect_timeout)?);
        let host = HeaderValue::from_str(config.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Ok(Upstream {
            protocol: config.protocol,
            plain: config.scheme == http::uri::Scheme::HTTP,
            learned: AtomicU8::new(UNKNOWN),
            probing: tokio::sync::Mutex::new(()),
            http1: Http1Pool::spawn(connector.clone(), metrics.clone()),
            http2: Http2Pool::spawn(connector.clone(), config.max_streams, metrics.clone()),
            connector,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            host,
            metrics,
        })
    }

    /// Sends `request` and waits for the response head. The lease comes back with the
    /// response: the body must hold it while it flows.
    ///
    /// A request the upstream provably did not process is sent again, on another connection,
    /// up to [`MAX_ATTEMPTS`] in all; nothing else is. `kept` is how the body comes back to be
    /// sent again: a caller that may send it elsewhere records it and passes its recovery here,
    /// else it is recorded here for an HTTP/2 retry; what is left of it when this returns, or is
    /// dropped, is the caller's.
    pub(crate) async fn send(
        &self,
        request: Request<Replayable<B>>,
        kept: &mut Option<Recovery<B>>,
        resent: &mut Vec<Resent>,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let (head, mut body) = request.into_parts();
        let (http2, probe_retried) = match self.use_http2().await {
            Ok(http2) => (http2, false),
            // The probe's connect failed: nothing was sent; once more.
            Err(error) if error.kind == FailureKind::Connect => {
                self.retrying(RetryReason::Connect, resent);
                (self.use_http2().await?, true)
            }
            Err(error) => return Err(error),
        };
        // hyper gives back an HTTP/2 request only if it never left, so a copy of the head and
        // the frames sent are kept (unless the one retry went to the probe); an HTTP/1.1
        // request that was written is never retried.
        let head_copy = (http2 && !probe_retried).then(|| copy_head(&head));
        if head_copy.is_some() && kept.is_none() {
            *kept = body.record();
        }
        let mut request = Request::from_parts(head, Box::new(body));
        let (mut http2, mut attempts, mut connect_retried) = (http2, 1, false);
        loop {
            // Boxed after the first: a retry is taken only now and then, and the future of the
            // common path stays small (it is moved, copied, at each `.await` above it).
            let result = if attempts == 1 {
                self.attempt(http2, request, false).await
            } else {
                Box::pin(self.attempt(http2, request, true)).await
            };
            let failure = match result {
                Ok(answer) => return Ok(answer),
                Err(failure) if probe_retried || attempts >= MAX_ATTEMPTS => {
                    return Err(failure.into_error())
                }
                Err(failure) => failure,
            };
            let reason;
            (request, reason) = match failure {
                // A connection that could not be made once is likely down: tried once more.
                Unanswered::Unsent {
                    reason: RetryReason::Connect,
                    error,
                    ..
                } if connect_retried => return Err(error),
                Unanswered::Unsent {
                    request, reason, ..
                } => (request, reason),
                Unanswered::Unprocessed { reason, error } => {
                    let head = head_copy.as_ref().map(copy_head);
                    match Box::pin(recover(kept.take(), head)).await {
                        Some((again, next)) => {
                            *kept = Some(next);
                            (again, reason)
                        }
                        None => return Err(error),
                    }
                }
                Unanswered::Failed(error) => return Err(error),
            };
            attempts += 1;
            connect_retried |= reason == RetryReason::Connect;
            self.retrying(reason, resent);
            http2 = self.use_http2().await?;
        }
    }

    /// The request is sent again, for `reason`: counted, and recorded for its trace.
    fn retrying(&self, reason: RetryReason, resent: &mut Vec<Resent>) {
        self.metrics.upstream.retry(reason);
        resent.push(Resent::retried(reason));
    }

    /// Whether this request goes over HTTP/2. Under `auto`, the first request probes: one
    /// connection offering both, and whatever ALPN chose decides, and that connection joins
    /// its pool.
    async fn use_http2(&self) -> Result<bool, UpstreamError> {
        match self.protocol {
            UpstreamProtocol::Http1 => return Ok(false),
            UpstreamProtocol::Http2 => return Ok(true),
            UpstreamProtocol::Auto if self.plain => return Ok(false),
            UpstreamProtocol::Auto => {}
        }
        loop {
            match self.learned.load(Ordering::Acquire) {
                LEARNED_HTTP1 => return Ok(false),
                LEARNED_HTTP2 => return Ok(true),
                _ => {}
            }
            let _probing = self.probing.lock().await;
            if self.learned.load(Ordering::Acquire) != UNKNOWN {
                continue;
            }
            let learned = Box::pin(self.probe()).await?;
            tracing::info!(
                protocol = if learned == LEARNED_HTTP2 {
                    "h2"
                } else {
                    "http/1.1"
                },
                "upstream protocol chosen by ALPN"
            );
            self.learned.store(learned, Ordering::Release);
        }
    }

    /// One connection offering both protocols; it joins the pool of the one ALPN chose.
    async fn probe(&self) -> Result<u8, UpstreamError> {
        let connected = self.connector.connect(Offer::Both).await?;
        if connected.http2 {
            self.http2.adopt(connected).await?;
            Ok(LEARNED_HTTP2)
        } else {
            let conn = self.http1.handshake(connected).await?;
            self.http1.give_back(conn);
            Ok(LEARNED_HTTP1)
        }
    }

    /// One attempt; a `retry` goes on a new HTTP/2 connection.
    async fn attempt(
        &self,
        http2: bool,
        mut request: Request<Outgoing<B>>,
        retry: bool,
    ) -> Result<(Response<Incoming>, Lease<B>), Attempt<B>> {
        // Taken, not cloned: the first clone of bytes built from a `String` allocates.
        let path = std::mem::take(request.uri_mut())
            .into_parts()
            .path_and_query
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if http2 {
            // HTTP/2 takes :scheme and :authority from an absolute URI; Host would repeat it.
            *request.uri_mut() = Uri::from_parts({
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = Some(path);
                parts
            })
            .unwrap_or_default();
            request.headers_mut().remove(header::HOST);
            return match self.http2.send(request, retry).await {
                Ok((response, stream)) => Ok((response, Lease::Http2(stream))),
                Err(failure) => {
                    let unsent_connect = matches!(
                        failure,
                        Unanswered::Unsent {
                            reason: RetryReason::Connect,
                            ..
                        }
                    );
                    if unsent_connect && self.protocol == UpstreamProtocol::Auto {
                        // Perhaps the upstream stopped offering HTTP/2: probe again.
                        self.learned.store(UNKNOWN, Ordering::Release);
                    }
                    Err(worth_sending_again(failure))
                }
            };
        }
        // hyper's HTTP/1.1 connection sends the URI as given: make it origin-form.
        *request.uri_mut() = Uri::from(path);
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        match self.http1.send(request).await {
            Ok((response, conn)) => Ok((
                response,
                Lease::Http1(http1::Lease {
                    conn,
                    pool: self.http1.clone(),
                }),
            )),
            Err(failure) => Err(worth_sending_again(failure)),
        }
    }
}

/// A request that never left is sent again, unless it was a connect that timed out, a TLS or
/// certificate failure, or a forward proxy's refusal: trying those again would only repeat
/// them, and a client waiting on a timeout should not wait twice.
fn worth_sending_again<B: SendBody>(failure: Attempt<B>) -> Attempt<B> {
    match failure {
        Unanswered::Unsent {
            reason: RetryReason::Connect,
            error,
            ..
        } if error.kind != FailureKind::Connect => Unanswered::Failed(error),
        failure => failure,
    }
}

/// The request again, from the head's copy and the body hyper dropped, with the recovery
/// that gets it back once more.
async fn recover<B: SendBody>(
    recovery: Option<Recovery<B>>,
    head: Option<Parts>,
) -> Option<(Request<Outgoing<B>>, Recovery<B>)> {
    let (body, recovery) = recovery?.recover().await?;
    Some((Request::from_parts(head?, Box::new(body)), recovery))
}

/// The parts of a request head that are sent; extensions are not.
pub(crate) fn copy_head(head: &Parts) -> Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = head.method.clone();
    copy.uri = head.uri.clone();
    copy.version = head.version;
    copy.headers = head.headers.clone();
    copy
}
