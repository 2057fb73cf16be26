//! Keep-alive HTTP/1.1 connections to a plain-HTTP upstream, each driven inside the exchange
//! that uses it.
//!
//! hyper-util's pooled client runs every upstream connection in a task of its own, and hands
//! each body frame to the client's connection task through a channel that holds one frame: the
//! client side sees "nothing ready" after every frame and flushes it in its own write. An SSE
//! answer of 20 events that arrived in one read then leaves in 20 writes. Here the exchange
//! polls its upstream connection itself, so frames already read are handed on in the same
//! poll, and hyper writes all that is ready at once. Nothing waits: a frame that has arrived
//! goes out in the very next write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::upstream::{FailureKind, UpstreamError};

type Driver = Connection<TokioIo<TcpStream>, RequestBody>;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// How long an idle connection is kept before it is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One upstream connection, checked out of the pool for one exchange.
pub struct Conn {
    sender: SendRequest<RequestBody>,
    driver: Driver,
    /// The driver finished (the connection closed); it must not be polled again.
    closed: bool,
}

impl Conn {
    /// Drives the connection: reads, decodes, writes the request body. Called whenever the
    /// exchange has nothing ready, so that what the socket holds is handed on at once.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
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

struct Idle {
    conn: Conn,
    since: Instant,
}

pub struct Http1Pool {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Duration,
    builder: http1::Builder,
    /// Most recently used last, so the warmest connection is reused first.
    idle: Mutex<Vec<Idle>>,
}

impl Http1Pool {
    /// A pool whose idle connections are closed once they pass [`IDLE_TIMEOUT`], by a task
    /// that ends with the pool. Must be called within the runtime.
    pub fn spawn(host: &str, port: u16, connect_timeout: Duration) -> std::sync::Arc<Http1Pool> {
        let pool = std::sync::Arc::new(Http1Pool::new(host, port, connect_timeout));
        let weak = std::sync::Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.close_expired();
            }
        });
        pool
    }

    /// Closes idle connections that expired or that the upstream closed.
    fn close_expired(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            let before = idle.len();
            idle.retain_mut(|entry| entry.since.elapsed() < IDLE_TIMEOUT && entry.conn.reusable());
            if idle.len() < before {
                if idle.is_empty() {
                    *idle = Vec::new();
                }
                crate::trim::note_activity();
            }
        }
    }

    fn new(host: &str, port: u16, connect_timeout: Duration) -> Http1Pool {
        let mut builder = http1::Builder::new();
        builder.writev(true);
        Http1Pool {
            address: format!("{host}:{port}"),
            connect_timeout,
            builder,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && entry.conn.reusable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Takes a connection back after its exchange ended cleanly.
    pub fn give_back(&self, mut conn: Conn) {
        if !conn.reusable() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let now = Instant::now();
            idle.retain(|entry| now.duration_since(entry.since) < IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push(Idle { conn, since: now });
            }
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(UpstreamError::new(FailureKind::Connect, error)),
                Err(_) => {
                    return Err(UpstreamError::new(
                        FailureKind::ConnectTimeout,
                        crate::upstream::ConnectTimedOut,
                    ))
                }
            };
        // Each SSE event must leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (sender, driver) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::new(FailureKind::Connect, e))?;
        Ok(Conn {
            sender,
            driver,
            closed: false,
        })
    }

    /// Sends `request` on a pooled or new connection and drives it until the response head
    /// arrives. The connection comes back with the response: its body flows only while the
    /// caller drives it.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Conn), UpstreamError> {
        let mut request = request;
        // A pooled connection may have been closed by the upstream a moment ago; a request
        // that was never written to it is safe to send again on a fresh one.
        let mut reused = self.checkout();
        loop {
            let fresh = reused.is_none();
            let mut conn = match reused.take() {
                Some(conn) => conn,
                None => self.connect().await?,
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
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(UpstreamError::new(FailureKind::Reset, error.into_error())),
                },
            }
        }
    }
}

/// A connection lent to one exchange; it goes back to the pool only if the exchange ended
/// cleanly, and is closed otherwise (dropped with the lease).
pub struct Lease {
    pub conn: Conn,
    pub pool: std::sync::Arc<Http1Pool>,
}

impl Lease {
    pub fn give_back(self) {
        self.pool.give_back(self.conn);
    }
}
