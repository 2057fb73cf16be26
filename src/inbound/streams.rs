//! An HTTP/2 client connection's streams: how many are open, since when none has been, and how
//! many requests the connection has carried. hyper's HTTP/2 server has no idle timeout and no
//! bound on requests per connection, so a connection that sends its preface and then nothing
//! would hold its slot for ever, and one connection could open and reset streams without end.
//!
//! [`until_done`] completes when the connection should close gracefully (GOAWAY, then the open
//! streams finish): no stream has been open for `PROXY_HEADER_READ_TIMEOUT`, the first request
//! included, as an HTTP/1 connection waits at most that long for a head; or the connection has
//! carried [`H2_MAX_REQUESTS`] requests, as nginx's `keepalive_requests` and Envoy's
//! `max_requests_per_connection` bound them.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::bounds::H2_MAX_REQUESTS;
use crate::metrics::Metrics;

/// One HTTP/2 connection's streams, shared by its service and its watchdog.
pub(crate) struct Streams {
    started: Instant,
    open: AtomicUsize,
    /// Milliseconds from `started` to when the last open stream ended.
    idle_since_ms: AtomicU64,
    limit_reached: Notify,
    metrics: Arc<Metrics>,
}

impl Streams {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Streams> {
        Arc::new(Streams {
            started: Instant::now(),
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            limit_reached: Notify::new(),
            metrics,
        })
    }

    /// The connection's `index`th request (counted from 0, by the connection's service) opened
    /// a stream: held until its answer's body is dropped.
    pub(crate) fn opened(self: &Arc<Self>, index: u64) -> StreamGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        if index + 1 == H2_MAX_REQUESTS {
            self.limit_reached.notify_one();
        }
        StreamGuard {
            streams: self.clone(),
            ended: AtomicBool::new(false),
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.open.load(Ordering::Relaxed) == 0).then(|| {
            self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
        })
    }
}

/// Completes when the connection should be closed gracefully, and counts why: its requests
/// are used up, or no stream has been open for `idle` (since the connection began, at first).
pub(crate) async fn until_done(streams: Arc<Streams>, idle: Duration) {
    let started = streams.started;
    tokio::select! {
        _ = streams.limit_reached.notified() => streams.metrics.connections.closed("max_requests"),
        () = idle_for(&streams, idle, started) => streams.metrics.connections.closed("idle"),
    }
}

/// Once a graceful close has begun: completes when no stream has been open for `idle`,
/// counted from now at the earliest, so that the GOAWAY goes out first. HTTP/2's graceful
/// close waits for the client to answer a PING, and a client that never does must not keep
/// the connection: with nothing open, it is then dropped.
pub(crate) async fn until_idle(streams: Arc<Streams>, idle: Duration) {
    idle_for(&streams, idle, Instant::now()).await;
}

/// Completes once no stream has been open for `idle`, counted from `not_before` at the earliest.
async fn idle_for(streams: &Streams, idle: Duration, not_before: Instant) {
    let idle_until = || {
        streams
            .idle_since()
            .map(|since| since.max(not_before) + idle)
    };
    loop {
        tokio::time::sleep_until(idle_until().unwrap_or_else(|| Instant::now() + idle)).await;
        if idle_until().is_some_and(|until| until <= Instant::now()) {
            return;
        }
    }
}

/// One open stream. Dropped with the answer's body (or with the request's future, if the client
/// resets the stream before the answer's head): a stream dropped before its body ended was
/// reset by the client, and is counted.
pub(crate) struct StreamGuard {
    streams: Arc<Streams>,
    ended: AtomicBool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let streams = &self.streams;
        if !self.ended.load(Ordering::Relaxed) {
            streams.metrics.connections.stream_resets.inc();
        }
        let ms = streams.started.elapsed().as_millis() as u64;
        streams.idle_since_ms.store(ms, Ordering::Relaxed);
        streams.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body, with the stream it is sent on when that is an HTTP/2 stream.
pub(crate) struct Tracked<B> {
    body: B,
    stream: Option<StreamGuard>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, stream: Option<StreamGuard>) -> Tracked<B> {
        Tracked { body, stream }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(None), Some(stream)) = (&polled, &self.stream) {
            stream.ended.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        if let (true, Some(stream)) = (end, &self.stream) {
            stream.ended.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
