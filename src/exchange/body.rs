//! The body types, and the wrappers that forward frames as they come.
//!
//! A frame is handed on the moment it arrives: nothing here waits, collects or parses. The
//! wrappers only count bytes, watch the gap between frames (the idle timeout), the whole
//! exchange's deadline, and the request body's size limit. When one of those ends a body early
//! it yields an error, so hyper ends the message abnormally (a chunked body without its last
//! chunk, or an HTTP/2 reset) and the client sees a failure, never a clean but short answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::record::{Exchange, RequestStats};
use crate::outcome::Outcome;
use crate::outcome::UpstreamErrorKind;
use crate::upstream::Lease;

/// Why a forwarded body ended early.
#[derive(Debug)]
pub(crate) enum BodyError {
    IdleTimeout(Duration),
    TotalTimeout,
    TooLarge {
        limit: u64,
    },
    /// The side we read from failed: the client's upload or the upstream's answer.
    Source(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::IdleTimeout(t) => write!(f, "no body data for {t:?} (PROXY_IDLE_TIMEOUT)"),
            BodyError::TotalTimeout => f.write_str("exchange exceeded PROXY_TOTAL_TIMEOUT"),
            BodyError::TooLarge { limit } => {
                write!(f, "body exceeds PROXY_MAX_BODY_BYTES ({limit})")
            }
            BodyError::Source(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Source(e) => Some(e),
            _ => None,
        }
    }
}

/// Watches the time between frames and the exchange's deadline. Timers are only armed when
/// the inner body has nothing ready, so a body whose frames are all ready never touches them.
pub(crate) struct FrameClock {
    idle: Duration,
    last_frame: Instant,
    /// Frames arrived since `last_frame` was read.
    fresh_frames: bool,
    idle_timer: Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
    deadline_timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Idle,
    Total,
}

impl FrameClock {
    pub(crate) fn new(idle: Duration, deadline: Option<Instant>) -> FrameClock {
        FrameClock {
            idle,
            last_frame: Instant::now(),
            fresh_frames: false,
            idle_timer: None,
            deadline,
            deadline_timer: None,
        }
    }

    /// Notes that a frame arrived. The clock is read only when the body next has nothing
    /// ready, which is the same moment to within one poll, and saves a clock read per frame.
    fn frame_arrived(&mut self) {
        self.fresh_frames = true;
    }

    /// Called when the inner body is pending: is it time to give up?
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        if std::mem::take(&mut self.fresh_frames) {
            self.last_frame = Instant::now();
        }
        if let Some(deadline) = self.deadline {
            let timer = self
                .deadline_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Expired::Total);
            }
        }
        let idle_deadline = self.last_frame + self.idle;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(idle_deadline)));
        if timer.deadline() != idle_deadline {
            // Moving a deadline later is cheap in tokio's timer: no wheel work until it fires.
            timer.as_mut().reset(idle_deadline);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Expired::Idle)
    }
}

/// The client's request body on its way upstream, with the size limit and idle timeout.
pub(crate) struct RequestBody {
    inner: Incoming,
    /// The first frame, read by [`RequestBody::first_frame`] before the request went upstream.
    first: Option<Frame<Bytes>>,
    clock: FrameClock,
    limit: u64,
    stats: Arc<RequestStats>,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        clock: FrameClock,
        limit: u64,
        stats: Arc<RequestStats>,
    ) -> RequestBody {
        RequestBody {
            inner,
            first: None,
            clock,
            limit,
            stats,
        }
    }

    /// Waits for the client's first body frame (or the end of an empty body) and keeps it, to
    /// be yielded first. The request then goes upstream with its first bytes ready: HTTP/2
    /// sends HEADERS and the first DATA in one write, as HTTP/1.1 sends head and body, instead
    /// of flushing the head alone and the body a task hop later. A body that fails first (too
    /// large, stalled, client gone) fails here, before anything went upstream.
    pub(crate) async fn first_frame(&mut self) -> Result<(), BodyError> {
        if self.first.is_some() || self.inner.is_end_stream() {
            return Ok(());
        }
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.first = Some(frame);
                Ok(())
            }
            Some(Err(error)) => Err(error),
            None => Ok(()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            // A client's trailers never go upstream: they could carry `Authorization` or
            // `OpenAI-Project` past the header policy, and RFC 9110 (section 6.5) forbids
            // merging them into the head. Trailers are the last frame: the body ends here.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => Poll::Ready(None),
            Poll::Ready(Some(Ok(frame))) => {
                this.clock.frame_arrived();
                if let Some(data) = frame.data_ref() {
                    let total = this
                        .stats
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if total > this.limit {
                        this.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.stats.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyError::Source(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let expired = ready!(this.clock.poll_expired(cx));
                this.stats.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(match expired {
                    Expired::Idle => BodyError::IdleTimeout(this.clock.idle),
                    Expired::Total => BodyError::TotalTimeout,
                })))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let held = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        if held > 0 {
            // Upper first: `set_lower` asserts the lower bound stays under the upper.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(held));
            }
            hint.set_lower(hint.lower().saturating_add(held));
        }
        hint
    }
}

/// The upstream's answer on its way to the client. It owns the exchange's record, and ends it
/// where the answer ends: its last frame, its failure or timeout, or the client giving it up.
pub(crate) struct ResponseBody {
    /// `None` only once dropped: what is left of it goes to the lease.
    inner: Option<Incoming>,
    /// The upstream connection (HTTP/1.1, driven from `poll_frame`) or stream (HTTP/2) this
    /// body comes from.
    lease: Option<Lease<RequestBody>>,
    /// The upstream body ended cleanly: its connection may be reused.
    ended: bool,
    clock: FrameClock,
    exchange: Exchange,
    /// Whether to count SSE events (`text/event-stream`), and whether the last byte seen
    /// ended a line, since an event's closing blank line may straddle two frames.
    sse: Option<bool>,
}

impl ResponseBody {
    pub(crate) fn new(
        inner: Incoming,
        lease: Option<Lease<RequestBody>>,
        clock: FrameClock,
        exchange: Exchange,
        is_sse: bool,
    ) -> ResponseBody {
        if is_sse {
            exchange.metrics().exchanges.open_streams.inc();
        }
        ResponseBody {
            inner: Some(inner),
            lease,
            ended: false,
            clock,
            exchange,
            sse: is_sse.then_some(false),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let mut polled = Pin::new(&mut *inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(lease) = &mut this.lease {
                // Let an HTTP/1.1 upstream connection hand over what it has already read.
                if lease.drive(cx) {
                    polled = Pin::new(inner).poll_frame(cx);
                }
            }
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.clock.frame_arrived();
                if let Some(data) = frame.data_ref() {
                    // The frame is read after it was handed on, never held for it.
                    this.exchange.answer_frame(data, this.sse.as_mut());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(
                    request_id = this.exchange.log_id(),
                    error = %crate::upstream::describe(&e),
                    "the upstream's answer broke off"
                );
                this.exchange.finish(Outcome::UpstreamFailed);
                this.exchange.upstream_failed(UpstreamErrorKind::Reset);
                this.exchange.end();
                Poll::Ready(Some(Err(BodyError::Source(e))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.exchange.finish(Outcome::Completed);
                this.exchange.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let expired = ready!(this.clock.poll_expired(cx));
                this.exchange.upstream_failed(UpstreamErrorKind::Timeout);
                let (outcome, error) = match expired {
                    Expired::Idle => (
                        Outcome::IdleTimeout,
                        BodyError::IdleTimeout(this.clock.idle),
                    ),
                    Expired::Total => (Outcome::TotalTimeout, BodyError::TotalTimeout),
                };
                this.exchange.finish(outcome);
                this.exchange.end();
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so an ended body is complete.
        // (A chunked body never says so; it ends by yielding `None`.) A body whose declared
        // length has all been read is complete too, even if HTTP/2's END_STREAM is still on
        // its way in a frame of its own.
        let complete = self.ended
            || self
                .inner
                .as_ref()
                .is_none_or(|inner| inner.is_end_stream() || inner.size_hint().exact() == Some(0));
        if complete {
            self.exchange.finish(Outcome::Completed);
            if let Some(lease) = self.lease.take() {
                lease.give_back(self.inner.take());
            }
        }
        if self.sse.is_some() {
            self.exchange.metrics().exchanges.open_streams.dec();
        }
        // Complete, or given up by the client (or the drain) before its end.
        self.exchange.end();
    }
}

/// The one body type the service returns: either the upstream's, forwarded, or a small one
/// the proxy made itself.
pub(crate) enum ProxyBody {
    Local(Option<Bytes>),
    Forwarded(Box<ResponseBody>),
}

impl ProxyBody {
    pub(crate) fn local(bytes: Bytes) -> ProxyBody {
        ProxyBody::Local((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> ProxyBody {
        ProxyBody::local(bytes)
    }
}

impl Default for ProxyBody {
    fn default() -> ProxyBody {
        ProxyBody::Local(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Forwarded(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(bytes) => bytes.is_none(),
            ProxyBody::Forwarded(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Forwarded(body) => body.size_hint(),
        }
    }
}
