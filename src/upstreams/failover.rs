//! A request sent to one upstream after another. It moves on only while no byte of the answer
//! has reached the client, and only where the upstream it leaves cannot have charged for it:
//! the connection was never made, the request provably was not processed (the retry rule's
//! cases), or the upstream said so itself (`429`, `503`, `401`), or where `failover_on` takes
//! the risk (`500`, a reset after the request left, an attempt's timeout). The body goes again
//! from what the retry buffer kept; a larger one gets the first upstream's answer. Failovers
//! are bounded by the retry budget, and each upstream is tried once per request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;

use super::bounded::{AttemptTimedOut, Bounded};
use super::{cooldown, Member, Set, Upstreams};
use crate::metrics::ANSWERED;
use crate::outcome::{FailureKind, Resent, Target};
use crate::upstream::retry::Replayable;
use crate::upstream::websocket::WebSocketAnswer;
use crate::upstream::{copy_head, Lease, SendBody, UpstreamError};

/// Which upstream answered, and after how many: what the access log says. Written as the
/// attempts go, so that it holds even when the wait for the answer is cut short.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) attempts: u32,
    /// Where the last attempt went (`server.address` and `server.port` in its trace), and
    /// whether that upstream is Azure OpenAI.
    pub(crate) target: Option<Arc<Target>>,
    /// Each time the request was sent again, on the same upstream or the next.
    pub(crate) resent: Vec<Resent>,
}

impl Tried {
    /// The request goes to `member`, one attempt more.
    fn attempting<B: SendBody>(&mut self, member: &Member<B>) {
        self.upstream = Some(member.entry.name.clone());
        self.attempts += 1;
        self.target = Some(member.target.clone());
    }
}

/// Where a request starts: its turn among the upstreams, and the first it tries.
struct Start {
    turn: u64,
    first: usize,
}

/// What one attempt says about whether to move on, and why, as the metrics label it.
enum Verdict {
    /// The answer, or the failure, goes to the client.
    Pass(&'static str),
    /// Another upstream may take it.
    MoveOn(&'static str),
}

impl<B: SendBody> Upstreams<B> {
    /// Sends a request (its head rewritten, its key not yet in) to the upstreams until one
    /// answers with something that goes to the client.
    pub(crate) async fn send(
        &self,
        parts: Parts,
        body: B,
        tried: &mut Tried,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let set = self.set.load_full();
        if let [member] = &set.members[..] {
            return self.send_alone(member, &set, parts, body, tried).await;
        }
        // Boxed: the failover loop's state (the head kept for the next upstream, the last
        // answer while the body comes back) would otherwise enlarge the future that the
        // common path copies into its box on every request (rust-lang/rust#62958).
        Box::pin(self.send_among(set, parts, body, tried)).await
    }

    /// The one upstream of the set: no failover, and no body kept for one.
    async fn send_alone(
        &self,
        member: &Member<B>,
        set: &Set<B>,
        mut parts: Parts,
        body: B,
        tried: &mut Tried,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let client = parts.uri.path_and_query().cloned();
        if !member.aim(&mut parts, client.as_ref()) {
            return Err(unroutable());
        }
        tried.attempting(member);
        let request = Request::from_parts(parts, Replayable::once(body));
        let result = member
            .pools
            .send(request, &mut None, &mut tried.resent)
            .await;
        self.judged_alone(member, set, result)
    }

    /// The one upstream's answer, counted; it goes to the client whatever it is.
    fn judged_alone(
        &self,
        member: &Member<B>,
        set: &Set<B>,
        result: Result<(Response<Incoming>, Lease<B>), UpstreamError>,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let verdict = self.judge(member, set, &result);
        self.counted(member, verdict);
        result
    }

    /// Several upstreams: tried in turn until one answers with something that goes to the
    /// client, or the request may not move on.
    async fn send_among(
        &self,
        set: Arc<Set<B>>,
        mut parts: Parts,
        body: B,
        tried: &mut Tried,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let client = parts.uri.path_and_query().cloned();
        let Start { turn, first } = self.start(&set);
        let mut body = Replayable::once(body);
        // Kept for the next upstream: the body's frames as they are sent, and the head.
        let mut kept = body.record();
        let head = copy_head(&parts);
        let (mut tried_mask, mut index) = (0u64, first);
        loop {
            let Some(member) = set.members.get(index) else {
                return Err(nowhere());
            };
            tried_mask |= 1u64.checked_shl(index as u32).unwrap_or(0);
            if !member.aim(&mut parts, client.as_ref()) {
                return Err(unroutable());
            }
            tried.attempting(member);
            let result = Bounded::new(
                member.pools.send(
                    Request::from_parts(parts, body),
                    &mut kept,
                    &mut tried.resent,
                ),
                set.rules.attempt_timeout,
            )
            .await;
            let verdict = self.judge(member, &set, &result);
            let Some(reason) = self.counted(member, verdict) else {
                return result;
            };
            let now = self.now();
            let Some(next) = set.pick(tried_mask, turn, now, false) else {
                return self.last(&set, result);
            };
            // The body comes back from the attempt: at once from an answer (the pools dropped
            // it once it was sent whole; a body still being sent is not taken back), within the
            // recovery's bound from a failure.
            let again = match (&result, kept.take()) {
                (Ok(_), Some(recovery)) => recovery.now(),
                (Err(_), Some(recovery)) => recovery.recover().await,
                (_, None) => None,
            };
            let Some((again, next_kept)) = again else {
                return self.last(&set, result);
            };
            if !self.budget.withdraw(now) {
                return self.last(&set, result);
            }
            drop(result);
            self.failed_over(&set, member, next, reason, tried);
            parts = copy_head(&head);
            body = again;
            kept = Some(next_kept);
            index = next;
        }
    }

    /// Sends a WebSocket upgrade (its head rewritten, its key not yet in) to the upstreams
    /// until one switches, or answers with something that goes to the client. It moves on only
    /// before a switch, as a request does.
    pub(crate) async fn open_websocket(
        &self,
        parts: Parts,
        tried: &mut Tried,
    ) -> Result<WebSocketAnswer, UpstreamError> {
        let set = self.set.load_full();
        let several = set.members.len() > 1;
        let client = parts.uri.path_and_query().cloned();
        let Start { turn, first } = self.start(&set);
        let (mut tried_mask, mut index) = (0u64, first);
        let mut template = Some(parts);
        loop {
            let Some(member) = set.members.get(index) else {
                return Err(nowhere());
            };
            tried_mask |= 1u64.checked_shl(index as u32).unwrap_or(0);
            // Alone, the head goes as it is; with others, a copy, for the next.
            let parts = match (several, template.take()) {
                (true, Some(head)) => {
                    let copy = copy_head(&head);
                    template = Some(head);
                    Some(copy)
                }
                (_, head) => head,
            };
            let Some(mut parts) = parts else {
                return Err(nowhere());
            };
            if !member.aim(&mut parts, client.as_ref()) {
                return Err(unroutable());
            }
            tried.attempting(member);
            let request = Request::from_parts(parts, Empty::<Bytes>::new());
            let result = member.pools.open_websocket(request).await;
            let verdict = match &result {
                Ok(WebSocketAnswer::Switched { .. }) => Verdict::Pass(ANSWERED),
                Ok(WebSocketAnswer::Refused(response)) => {
                    self.judge_status(member, &set, response.status(), response.headers())
                }
                Err(error) => self.judge_failure(member, &set, error),
            };
            let Some(reason) = self.counted(member, verdict) else {
                return result;
            };
            let now = self.now();
            let next = several
                .then(|| set.pick(tried_mask, turn, now, false))
                .flatten();
            let Some(next) = next.filter(|_| self.budget.withdraw(now)) else {
                return result.map(|answer| match answer {
                    WebSocketAnswer::Refused(mut response) => {
                        self.say_when_back(&set, &mut response);
                        WebSocketAnswer::Refused(response)
                    }
                    switched => switched,
                });
            };
            drop(result);
            self.failed_over(&set, member, next, reason, tried);
            index = next;
        }
    }

    /// A request's turn among the upstreams, counted in the budget when there are several,
    /// and the upstream it tries first.
    fn start(&self, set: &Set<B>) -> Start {
        let several = set.members.len() > 1;
        let turn = self.turn.fetch_add(u64::from(several), Ordering::Relaxed);
        let mut now = 0;
        if several {
            now = self.now();
            self.budget.deposit(now);
        }
        let first = set.pick(0, turn, now, true).unwrap_or(0);
        Start { turn, first }
    }

    /// Counts a request moving from `member` to the upstream at `next`.
    fn failed_over(
        &self,
        set: &Set<B>,
        member: &Member<B>,
        next: usize,
        reason: &'static str,
        tried: &mut Tried,
    ) {
        tried
            .resent
            .push(Resent::moved_on(member.entry.name.clone(), reason));
        if let Some(to) = set.members.get(next) {
            self.metrics
                .upstream
                .failover(&member.entry.name, &to.entry.name, reason);
        }
    }

    /// Counts an attempt by its verdict; the reason to move on, if it may.
    fn counted(&self, member: &Member<B>, verdict: Verdict) -> Option<&'static str> {
        match verdict {
            Verdict::Pass(ANSWERED) => {
                member.answered.inc();
                None
            }
            Verdict::Pass(label) => {
                self.metrics.upstream.attempt(&member.entry.name, label);
                None
            }
            Verdict::MoveOn(label) => {
                self.metrics.upstream.attempt(&member.entry.name, label);
                Some(label)
            }
        }
    }

    /// What one attempt says about its upstream, which rests if it asked to or could not be
    /// reached, and whether the request may move on.
    fn judge(
        &self,
        member: &Member<B>,
        set: &Set<B>,
        result: &Result<(Response<Incoming>, Lease<B>), UpstreamError>,
    ) -> Verdict {
        match result {
            Ok((response, _)) => {
                self.judge_status(member, set, response.status(), response.headers())
            }
            Err(error) => self.judge_failure(member, set, error),
        }
    }

    /// What a failure says: an upstream that could not be reached rests.
    fn judge_failure(&self, member: &Member<B>, set: &Set<B>, error: &UpstreamError) -> Verdict {
        let rules = &set.rules;
        match error.kind {
            FailureKind::Connect
            | FailureKind::ConnectTimeout
            | FailureKind::Tls
            | FailureKind::Certificate
            | FailureKind::ForwardProxy => {
                self.cool_down(set, member, rules.cooldown);
                Verdict::MoveOn("unreachable")
            }
            // Broken before the request could reach it, or provably not processed.
            FailureKind::Reset => Verdict::MoveOn("reset"),
            FailureKind::AfterSend if error.error.is::<AttemptTimedOut>() => {
                Verdict::MoveOn("timeout")
            }
            FailureKind::AfterSend if rules.on_reset => Verdict::MoveOn("failed"),
            FailureKind::AfterSend => Verdict::Pass("failed"),
        }
    }

    /// What an answer's status says; shared by requests and WebSocket upgrades.
    fn judge_status(
        &self,
        member: &Member<B>,
        set: &Set<B>,
        status: StatusCode,
        headers: &http::HeaderMap,
    ) -> Verdict {
        let rules = &set.rules;
        let asked = || cooldown::asked(headers, SystemTime::now()).unwrap_or(rules.cooldown);
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                self.cool_down(set, member, asked());
                Verdict::MoveOn("rate_limited")
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                self.cool_down(set, member, asked());
                Verdict::MoveOn("unavailable")
            }
            StatusCode::UNAUTHORIZED => {
                self.cool_down(set, member, rules.key_rejected_cooldown);
                // Alone, the upstream is told of as OPENAI_API_KEY's fault where the 401 is
                // answered; one of several is told of here, once.
                let several = set.members.len() > 1;
                if several && !member.rest.key_rejected_told.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        upstream = %member.entry.name,
                        cooldown_s = rules.key_rejected_cooldown.as_secs(),
                        "the upstream rejected its key (401); it gets no requests while it cools down; check its api_key_file"
                    );
                }
                Verdict::MoveOn("key_rejected")
            }
            StatusCode::INTERNAL_SERVER_ERROR if rules.on_500 => Verdict::MoveOn("server_error"),
            _ => Verdict::Pass(ANSWERED),
        }
    }

    /// The last attempt's answer goes to the client as it came. When every upstream rests, a
    /// `429` or `503` says when the first is back.
    fn last(
        &self,
        set: &Set<B>,
        result: Result<(Response<Incoming>, Lease<B>), UpstreamError>,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        let (mut response, lease) = result?;
        self.say_when_back(set, &mut response);
        Ok((response, lease))
    }

    /// A `429` or `503` from the last of several upstreams, all resting: its `Retry-After`
    /// says when the first is back.
    fn say_when_back<T>(&self, set: &Set<B>, response: &mut Response<T>) {
        let refused = matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        if !refused || set.members.len() < 2 {
            return;
        }
        if let Some(left) = self.all_resting(set) {
            let seconds = left.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
    }
}

/// A target that cannot be made a URL of the upstream: cannot happen, since every part of it
/// was parsed as a URL's.
fn unroutable() -> UpstreamError {
    UpstreamError::new(
        FailureKind::Connect,
        "the request target cannot be made a URL of the upstream",
    )
}

/// A set without the upstream chosen: cannot happen, since a set is never empty.
fn nowhere() -> UpstreamError {
    UpstreamError::new(FailureKind::Connect, "no upstream in the set")
}
