//! Keep-alive HTTP/1.1 connections, plain or TLS, each driven inside the exchange that uses it.
//!
//! hyper-util's pooled client runs every upstream connection in a task of its own, and hands
//! each body frame to the client's connection task through a channel that holds one frame: the
//! client side sees "nothing ready" after every frame and flushes it in its own write: SSE
//! events that arrived in one read leave in one write each. Here the exchange
//! polls its upstream connection itself, so frames already read are handed on in the same
//! poll, and hyper writes all that is ready at once. Nothing waits: a frame that has arrived
//! goes out in the very next write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::{Connected, Connector, Io, Offer};
use super::failure::UpstreamError;
use super::outgoing::SendBody;
use super::retry::Unanswered;
use crate::bounds::UPSTREAM_IDLE_TIMEOUT;
use crate::metrics::{Metrics, OpenConnection};
use crate::outcome::{FailureKind, RetryReason};

type Driver<B> = Connection<TokioIo<Io>, B>;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// One upstream connection, checked out of the pool for one exchange.
pub(crate) struct Conn<B: SendBody> {
    sender: SendRequest<B>,
    driver: Driver<B>,
    /// The driver finished (the connection closed); it must not be polled again.
    closed: bool,
    /// Counts the connection in `/metrics` while it is open.
    _open: OpenConnection,
}

impl<B> Conn<B>
where
    B: SendBody,
{
    /// Drives the connection: reads, decodes, writes the request body. Called whenever the
    /// exchange has nothing ready, so that what the socket holds is handed on at once.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        if self.closed {
            return;
        }
        if let Poll::Ready(result) = Pin::new(&mut self.driver).poll(cx) {
            self.closed = true;
            if let Err(error) = result {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        }
    }

    /// Whether the connection can carry another request. Polls it once without a waker, so
    /// that a close by the upstream while it sat idle is noticed.
    fn reusable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()));
        !self.closed && self.sender.is_ready()
    }
}

struct Idle<B: SendBody> {
    conn: Conn<B>,
    since: Instant,
}

pub(crate) struct Http1Pool<B: SendBody> {
    connector: Arc<Connector>,
    builder: http1::Builder,
    /// Most recently used last, so the warmest connection is reused first.
    idle: Mutex<Vec<Idle<B>>>,
    metrics: Arc<Metrics>,
}

impl<B> Http1Pool<B>
where
    B: SendBody,
{
    /// A pool whose idle connections are closed once they pass [`UPSTREAM_IDLE_TIMEOUT`], by a task
    /// that ends with the pool. Must be called within the runtime.
    pub(crate) fn spawn(connector: Arc<Connector>, metrics: Arc<Metrics>) -> Arc<Http1Pool<B>> {
        let pool = Arc::new(Http1Pool::new(connector, metrics));
        super::sweep::every_second(&pool, Http1Pool::close_expired);
        pool
    }

    /// Closes idle connections that expired or that the upstream closed.
    fn close_expired(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            let before = idle.len();
            idle.retain_mut(|entry| {
                entry.since.elapsed() < UPSTREAM_IDLE_TIMEOUT && entry.conn.reusable()
            });
            if idle.len() < before {
                if idle.is_empty() {
                    *idle = Vec::new();
                }
                crate::trim::note_activity();
            }
        }
    }

    fn new(connector: Arc<Connector>, metrics: Arc<Metrics>) -> Http1Pool<B> {
        let mut builder = http1::Builder::new();
        builder.writev(true);
        Http1Pool {
            connector,
            builder,
            idle: Mutex::new(Vec::new()),
            metrics,
        }
    }

    fn checkout(&self) -> Option<Conn<B>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < UPSTREAM_IDLE_TIMEOUT && entry.conn.reusable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Takes a connection back after its exchange ended cleanly.
    pub(crate) fn give_back(&self, mut conn: Conn<B>) {
        if !conn.reusable() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            idle.retain(|entry| now.duration_since(entry.since) < UPSTREAM_IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push(Idle { conn, since: now });
            }
        }
    }

    async fn connect(&self) -> Result<Conn<B>, UpstreamError> {
        // HTTP/1.1 only in ALPN, so a TLS upstream never answers this pool in HTTP/2.
        let connected = self.connector.connect(Offer::Http1).await?;
        self.handshake(connected).await
    }

    /// Speaks HTTP/1.1 on a new connection.
    pub(crate) async fn handshake(&self, connected: Connected) -> Result<Conn<B>, UpstreamError> {
        let (sender, driver) = self
            .builder
            .handshake(connected.io)
            .await
            .map_err(|e| UpstreamError::new(FailureKind::Connect, e))?;
        Ok(Conn {
            sender,
            driver,
            closed: false,
            _open: self.metrics.upstream.connection_opened(false),
        })
    }

    /// Sends `request` on a pooled or new connection and drives it until the response head
    /// arrives. The connection comes back with the response: its body flows only while the
    /// caller drives it.
    pub(crate) async fn send(
        &self,
        request: Request<B>,
    ) -> Result<(Response<Incoming>, Conn<B>), Unanswered<Request<B>>> {
        let mut request = request;
        // A pooled connection may have been closed by the upstream a moment ago; a request
        // that was never written to it is safe to send again on a fresh one.
        let mut reused = self.checkout();
        loop {
            let fresh = reused.is_none();
            let mut conn = match reused.take() {
                Some(conn) => conn,
                // Boxed: a new connection's future is large, and needed only now and then.
                None => match Box::pin(self.connect()).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        return Err(Unanswered::Unsent {
                            request,
                            reason: RetryReason::Connect,
                            error,
                        })
                    }
                },
            };
            let mut responding = std::pin::pin!(conn.sender.try_send_request(request));
            let result = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = responding.as_mut().poll(cx) {
                    return Poll::Ready(result);
                }
                conn.drive(cx);
                // The driver may have just produced the head.
                responding.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => return Ok((response, conn)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => {
                        self.metrics.upstream.retry(RetryReason::StaleConnection);
                        request = unsent;
                    }
                    // hyper gives a request back only if it never wrote it.
                    Some(_) => {
                        return Err(Unanswered::Failed(UpstreamError::new(
                            FailureKind::Reset,
                            error.into_error(),
                        )))
                    }
                    None => {
                        return Err(Unanswered::Failed(UpstreamError::new(
                            FailureKind::AfterSend,
                            error.into_error(),
                        )))
                    }
                },
            }
        }
    }
}

/// A connection lent to one exchange; it goes back to the pool only if the exchange ended
/// cleanly, and is closed otherwise (dropped with the lease).
pub(crate) struct Lease<B: SendBody> {
    pub conn: Conn<B>,
    pub pool: Arc<Http1Pool<B>>,
}

impl<B> Lease<B>
where
    B: SendBody,
{
    pub(crate) fn give_back(self) {
        self.pool.give_back(self.conn);
    }
}
