//! The retry rule: a request is sent again, once, on another connection, only when the
//! upstream provably did not process it. Anything it may have processed (a 5xx, a 429, a reset
//! after the head, a timeout) goes back to the client as it is, so nobody pays twice.
//!
//! hyper does not hand back an HTTP/2 request that failed, so [`Replayable`] keeps the body
//! frames sent so far (shared `Bytes` handles, no copies) up to
//! [`RETRY_BUFFER_BYTES`](crate::bounds::RETRY_BUFFER_BYTES), and gives them back, with the
//! rest of the body, when hyper drops it.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::bounds::RETRY_BUFFER_BYTES;

use super::failure::UpstreamError;
use crate::outcome::RetryReason;

/// A request that got no answer, as the pools report it and the retry rule reads it: one
/// shape for both pools and the retry loop, as hyper-util's `TrySendError` is one for its
/// client.
// Failures are rare and short-lived; boxing the request would cost every one an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Unanswered<R> {
    /// Never sent: the request comes back whole, with why.
    Unsent {
        request: R,
        reason: RetryReason,
        error: UpstreamError,
    },
    /// Sent, and the upstream proved it did not process it: the body must be recovered.
    Unprocessed {
        reason: RetryReason,
        error: UpstreamError,
    },
    /// The upstream may have seen it.
    Failed(UpstreamError),
}

impl<R> Unanswered<R> {
    pub(crate) fn into_error(self) -> UpstreamError {
        match self {
            Unanswered::Unsent { error, .. }
            | Unanswered::Unprocessed { error, .. }
            | Unanswered::Failed(error) => error,
        }
    }
}

/// Whether an HTTP/2 stream's error proves the upstream did not process it: a `REFUSED_STREAM`
/// reset from the peer, or the peer's GOAWAY (h2 gives that error only to streams above the
/// GOAWAY's last-stream-id).
pub(crate) fn unprocessed(error: &hyper::Error) -> Option<RetryReason> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_remote() && h2.is_go_away() {
                return Some(RetryReason::GoAway);
            }
            if h2.is_remote() && h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(RetryReason::RefusedStream);
            }
            return None;
        }
        source = e.source();
    }
    None
}

/// A request body that can be sent again: it records the frames it hands out, and when it is
/// dropped before the response head arrived, it gives them back with the unread rest.
pub(crate) struct Replayable<B> {
    /// The body's unread rest; `None` once given back.
    rest: Option<B>,
    /// Frames to hand out before the rest: what a refused attempt had already sent.
    replay: VecDeque<Bytes>,
    recorder: Option<Recorder<B>>,
}

struct Recorder<B> {
    sent: Vec<Bytes>,
    bytes: usize,
    ended: bool,
    give_back: oneshot::Sender<Recovered<B>>,
}

/// What a dropped [`Replayable`] gave back.
struct Recovered<B> {
    sent: Vec<Bytes>,
    /// The unread rest, unless the body had ended.
    rest: Option<B>,
}

/// Waits for a sent body to come back, to send it again.
pub(crate) struct Recovery<B>(oneshot::Receiver<Recovered<B>>);

/// How long a refused stream's body may take to come back from hyper's send task; it is
/// dropped as soon as that task sees the reset, so this only bounds a surprise.
const RECOVERY_WAIT: Duration = Duration::from_secs(1);

impl<B> Replayable<B> {
    /// A body that is never sent again; it records nothing.
    pub(crate) fn once(body: B) -> Replayable<B> {
        Replayable {
            rest: Some(body),
            replay: VecDeque::new(),
            recorder: None,
        }
    }

    /// A body that records what it sends, and the [`Recovery`] that gets it back.
    #[cfg(test)]
    pub(crate) fn recorded(body: B) -> (Replayable<B>, Recovery<B>) {
        again(Recovered {
            sent: Vec::new(),
            rest: Some(body),
        })
    }
}

impl<B> Replayable<B> {
    /// Starts recording a body that was not, before any frame of it was handed out: the
    /// [`Recovery`] that gets it back. `None` if it records already, or has handed out frames.
    pub(crate) fn record(&mut self) -> Option<Recovery<B>> {
        if self.recorder.is_some() || !self.replay.is_empty() {
            return None;
        }
        let (give_back, recovery) = oneshot::channel();
        self.recorder = Some(Recorder {
            sent: Vec::new(),
            bytes: 0,
            ended: false,
            give_back,
        });
        Some(Recovery(recovery))
    }
}

impl<B> Recovery<B> {
    /// The body again if it has come back already: a body the pools still hold is not waited
    /// for.
    pub(crate) fn now(mut self) -> Option<(Replayable<B>, Recovery<B>)> {
        let recovered = self.0.try_recv().ok()?;
        Some(again(recovered))
    }

    /// The body again, frames already sent first, recorded as it is sent again (with its own
    /// recovery), or `None` if it cannot be replayed (it outgrew the retry buffer, carried
    /// trailers, or did not come back).
    pub(crate) async fn recover(self) -> Option<(Replayable<B>, Recovery<B>)> {
        let recovered = tokio::time::timeout(RECOVERY_WAIT, self.0)
            .await
            .ok()?
            .ok()?;
        Some(again(recovered))
    }
}

/// A recovered body, recorded again as it is sent again, with its own recovery.
fn again<B>(recovered: Recovered<B>) -> (Replayable<B>, Recovery<B>) {
    let mut body = Replayable {
        rest: recovered.rest,
        replay: VecDeque::new(),
        recorder: None,
    };
    let (give_back, recovery) = oneshot::channel();
    body.recorder = Some(Recorder {
        sent: Vec::new(),
        bytes: 0,
        ended: false,
        give_back,
    });
    body.replay = recovered.sent.into();
    (body, Recovery(recovery))
}

impl<B> Drop for Replayable<B> {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            let rest = if recorder.ended {
                None
            } else {
                self.rest.take()
            };
            // Frames of an earlier attempt not handed out yet come after those that were.
            let mut sent = recorder.sent;
            sent.extend(self.replay.drain(..));
            let _ = recorder.give_back.send(Recovered { sent, rest });
        }
    }
}

impl<B> Body for Replayable<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(bytes) = this.replay.pop_front() {
            if let Some(recorder) = &mut this.recorder {
                // Within the retry buffer already: it was recorded the first time.
                recorder.bytes += bytes.len();
                recorder.sent.push(bytes.clone());
            }
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if let Some(recorder) = &mut this.recorder {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                    Some(data) if recorder.bytes + data.len() <= RETRY_BUFFER_BYTES => {
                        recorder.bytes += data.len();
                        recorder.sent.push(data.clone());
                    }
                    // Too large to keep, or trailers: this body cannot be sent again.
                    _ => this.recorder = None,
                },
                Poll::Ready(None) => recorder.ended = true,
                Poll::Ready(Some(Err(_))) => this.recorder = None,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
        let replay: u64 = self.replay.iter().map(|b| b.len() as u64).sum();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + replay);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + replay);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A body of separate frames, as a client's upload arrives.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_dropped_body_comes_back_with_what_it_sent_first() {
        let inner = Frames(
            [&b"ab"[..], b"cd", b"ef"]
                .into_iter()
                .map(Bytes::from_static)
                .collect(),
        );
        let (mut body, recovery) = Replayable::recorded(inner);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        drop(body);
        let (mut again, recovery) = recovery.recover().await.expect("replayable");
        // Sent again in part, and dropped once more: it comes back whole a second time.
        let first = again.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        drop(again);
        let (again, _) = recovery.recover().await.expect("replayable twice");
        let all = again.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_retry_buffer_is_not_replayed() {
        let big = Full::new(Bytes::from(vec![b'x'; RETRY_BUFFER_BYTES + 1]));
        let (mut body, recovery) = Replayable::recorded(big);
        let _ = body.frame().await;
        drop(body);
        assert!(recovery.recover().await.is_none());
    }

    #[tokio::test]
    async fn an_ended_body_is_replayed_whole() {
        let (mut body, recovery) = Replayable::recorded(Full::new(Bytes::from_static(b"{}")));
        while body.frame().await.is_some() {}
        drop(body);
        let (again, _) = recovery.recover().await.expect("replayable");
        assert_eq!(again.collect().await.unwrap().to_bytes(), "{}");
    }
}
