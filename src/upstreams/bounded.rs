//! One attempt, abandoned after `failover_on`'s `attempt_timeout` when there is one. A single
//! future type whether or not a bound is set: awaiting `tokio::time::timeout(f)` in one branch
//! and `f` in the other gives the caller's future room for both, and that future is copied
//! whole into its box on every request (rust-lang/rust#62958).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use crate::outcome::FailureKind;
use crate::upstream::UpstreamError;

pin_project_lite::pin_project! {
    pub(super) struct Bounded<F> {
        #[pin]
        attempt: F,
        #[pin]
        deadline: Option<Sleep>,
        limit: Duration,
    }
}

impl<F> Bounded<F> {
    /// `attempt`, cut at `limit` if one is given; the timer starts now.
    pub(super) fn new(attempt: F, limit: Option<Duration>) -> Bounded<F> {
        Bounded {
            attempt,
            deadline: limit.map(tokio::time::sleep),
            limit: limit.unwrap_or_default(),
        }
    }
}

impl<F, T> Future for Bounded<F>
where
    F: Future<Output = Result<T, UpstreamError>>,
{
    type Output = Result<T, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.attempt.poll(cx) {
            return Poll::Ready(done);
        }
        match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(UpstreamError::new(
                FailureKind::AfterSend,
                AttemptTimedOut(*this.limit),
            ))),
            _ => Poll::Pending,
        }
    }
}

/// An attempt abandoned for the next upstream after `failover_on`'s `attempt_timeout`.
#[derive(Debug)]
pub(super) struct AttemptTimedOut(Duration);

impl std::fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer within attempt_timeout ({} ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for AttemptTimedOut {}
