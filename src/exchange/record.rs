//! One client request and its answer, from the head to the last byte: its id, its counters,
//! and the access log line written when it ends, however it ends.

use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use crate::config::DEFAULT_UPSTREAM;
use crate::drain::DrainState;
use crate::metrics::{Ended, Metrics, RouteMetrics, UsageSeen};
use crate::outcome::{Outcome, UpstreamErrorKind};
use crate::policy::client_keys::UNAUTHENTICATED;
use crate::store::Permit;
use crate::traces::{self, Spans};
use crate::upstreams::Tried;
use crate::usage::{Meter, Tokens};

/// A fresh request id: random per process, then a counter, so ids never repeat within a
/// process and almost surely not across processes.
pub(crate) fn new_request_id() -> HeaderValue {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = Id {
        bytes: [0; ID_BYTES],
        len: 0,
    };
    let mut rest = &mut id.bytes[..];
    // Always fits: 5 + 16 + 1 + 16 bytes.
    if write!(rest, "memo-{process:016x}-{n:x}").is_err() {
        return HeaderValue::from_static("memo-invalid");
    }
    id.len = ID_BYTES - rest.len();
    // Only hex digits and dashes: always a valid header value. Its one allocation is shared by
    // every copy the headers and the log take; a `String`'s bytes would be copied, and then
    // moved again the first time they were shared.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("memo-invalid"))
}

/// The longest id [`new_request_id`] writes.
const ID_BYTES: usize = 38;

/// A fresh request id's bytes, kept inline.
struct Id {
    bytes: [u8; ID_BYTES],
    len: usize,
}

impl AsRef<[u8]> for Id {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn unauthenticated() -> Arc<str> {
    static NAME: OnceLock<Arc<str>> = OnceLock::new();
    NAME.get_or_init(|| Arc::from(UNAUTHENTICATED)).clone()
}

/// What the request side tells the response side: bytes read, and why it stopped early.
#[derive(Debug, Default)]
pub(crate) struct RequestStats {
    pub(crate) bytes: AtomicU64,
    pub(crate) too_large: AtomicBool,
    pub(crate) client_failed: AtomicBool,
    pub(crate) timed_out: AtomicBool,
}

/// The record of one proxied exchange. Its fields are written only through the methods
/// below, each named for what happened; [`Exchange::end`] counts it in the metrics, charges
/// the client's budget and writes the access log line, once, where the answer ends.
pub(crate) struct Exchange {
    id: HeaderValue,
    method: Method,
    route: Arc<RouteMetrics>,
    started: Instant,
    /// The status the client got.
    status: Option<StatusCode>,
    /// The status the upstream sent, when it answered.
    upstream_status: Option<StatusCode>,
    /// Time from the request's start to the upstream's response head.
    head_after: Option<Duration>,
    /// OpenAI's own `x-request-id`, logged beside ours for support.
    upstream_id: Option<HeaderValue>,
    request: Arc<RequestStats>,
    /// The client's name, once its key is checked: for the access log and the metrics.
    client: Arc<str>,
    /// The client's in-flight slot, held until the exchange ends, last byte included.
    permit: Option<Permit>,
    response_bytes: u64,
    sse_events: u64,
    /// Whether the answer is an SSE stream.
    sse_stream: bool,
    /// The usage meter, for a successful JSON or SSE answer while `PROXY_USAGE` is on.
    meter: Option<Box<Meter>>,
    /// Whether the request body is JSON, for the estimate of its tokens.
    request_is_json: bool,
    /// Whether the route's answers can cost tokens, with the meter on: every such exchange
    /// that may have reached the upstream is charged, its reported usage or an estimate.
    metered: bool,
    /// Whether the request may have reached the upstream: set when it is handed to the
    /// upstream, cleared when it provably did not get there.
    sent: bool,
    /// A successful answer the meter cannot read, by what its bytes are.
    unread: Option<Unread>,
    outcome: Option<Outcome>,
    /// The `code` of the error the proxy answered with itself, such as which limit refused.
    error_code: Option<&'static str>,
    /// The upstream that answered, or was tried last.
    upstream: Option<Arc<str>>,
    /// How many upstreams were tried.
    attempts: u32,
    /// Its spans, while traces are on.
    spans: Option<Box<Spans>>,
    /// Whether [`Exchange::end`] has counted it.
    ended: bool,
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
}

impl Exchange {
    pub(crate) fn start(
        id: HeaderValue,
        method: Method,
        route: Arc<RouteMetrics>,
        started: Instant,
        drain: Arc<DrainState>,
        metrics: Arc<Metrics>,
    ) -> Exchange {
        metrics.exchanges.in_flight.inc();
        crate::trim::note_activity();
        Exchange {
            id,
            method,
            route,
            started,
            status: None,
            upstream_status: None,
            head_after: None,
            upstream_id: None,
            request: Arc::default(),
            client: unauthenticated(),
            permit: None,
            response_bytes: 0,
            sse_events: 0,
            sse_stream: false,
            meter: None,
            request_is_json: false,
            metered: false,
            sent: false,
            unread: None,
            outcome: None,
            error_code: None,
            upstream: None,
            attempts: 0,
            spans: None,
            ended: false,
            drain,
            metrics,
        }
    }

    pub(crate) fn id(&self) -> &HeaderValue {
        &self.id
    }

    /// The request id as the logs write it.
    pub(crate) fn log_id(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the request body's forwarding tells the record.
    pub(crate) fn request_stats(&self) -> &Arc<RequestStats> {
        &self.request
    }

    /// Whether the answer is to be charged: its usage read, or else estimated.
    pub(crate) fn is_metered(&self) -> bool {
        self.metered
    }

    pub(crate) fn set_metered(&mut self, metered: bool) {
        self.metered = metered;
    }

    /// The client's key was accepted under this name.
    pub(crate) fn identified(&mut self, client: Arc<str>) {
        self.client = client;
    }

    /// The client's limits let the request through, with this in-flight slot.
    pub(crate) fn admitted(&mut self, permit: Option<Permit>) {
        self.permit = permit;
    }

    /// The request body is (or is not) JSON, for the estimate of its tokens.
    pub(crate) fn request_is_json(&mut self, json: bool) {
        self.request_is_json = json;
    }

    /// The request was handed to the upstream: from here it may have it.
    pub(crate) fn sending(&mut self) {
        self.sent = true;
    }

    /// Sending failed before any answer; `may_have_it` says whether the request may still
    /// have reached the upstream.
    pub(crate) fn send_failed(&mut self, may_have_it: bool) {
        self.sent = may_have_it;
    }

    /// The upstream's answer head arrived and goes on to the client.
    pub(crate) fn upstream_answered(
        &mut self,
        status: StatusCode,
        upstream_id: Option<HeaderValue>,
    ) {
        self.upstream_head(status);
        self.status = Some(status);
        self.upstream_id = upstream_id;
    }

    /// The exchange is traced by these spans.
    pub(crate) fn traced(&mut self, spans: Box<Spans>) {
        self.spans = Some(spans);
    }

    /// The request goes upstream: when traced, its call's span starts, and this is the
    /// `traceparent` the upstream gets.
    pub(crate) fn calling_upstream(&mut self) -> Option<HeaderValue> {
        self.spans.as_mut()?.upstream_call()
    }

    /// Which upstream answered (or was tried last), after how many, and each time the request
    /// was sent again.
    pub(crate) fn tried(&mut self, tried: Tried) {
        if let Some(spans) = &mut self.spans {
            spans.tried(tried.target, tried.resent);
        }
        self.upstream = tried.upstream;
        self.attempts = tried.attempts;
    }

    /// The upstream as the token series label it.
    fn upstream_label(&self) -> &Arc<str> {
        static DEFAULT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        self.upstream
            .as_ref()
            .unwrap_or_else(|| DEFAULT.get_or_init(|| Arc::from(DEFAULT_UPSTREAM)))
    }

    /// The upstream's answer head arrived, passed on or not (a rejected key's is not).
    pub(crate) fn upstream_head(&mut self, status: StatusCode) {
        self.upstream_status = Some(status);
        self.head_after = Some(self.started.elapsed());
    }

    /// The answer is an SSE stream.
    pub(crate) fn streaming(&mut self) {
        self.sse_stream = true;
    }

    /// The answer is to be read by this meter.
    pub(crate) fn metering(&mut self, meter: Box<Meter>) {
        self.meter = Some(meter);
    }

    /// The answer cannot be read; it is estimated by what its bytes are.
    pub(crate) fn unreadable(&mut self, unread: Unread) {
        self.unread = Some(unread);
    }

    /// A frame of the answer went on to the client: its bytes counted, its SSE events if
    /// `sse` carries whether the last frame ended a line, and its usage read.
    pub(crate) fn answer_frame(&mut self, data: &[u8], sse: Option<&mut bool>) {
        self.response_bytes += data.len() as u64;
        if let Some(spans) = &mut self.spans {
            spans.chunk();
        }
        if let Some(after_newline) = sse {
            self.sse_events += count_sse_events(data, after_newline);
        }
        if let Some(meter) = &mut self.meter {
            meter.feed(data);
        }
    }

    /// The meter, for a session that reads its frames where they pass.
    pub(crate) fn take_meter(&mut self) -> Option<Box<Meter>> {
        self.meter.take()
    }

    /// A session is over: how, with the meter that followed it and the bytes it carried to
    /// the client.
    pub(crate) fn session_over(
        &mut self,
        outcome: Outcome,
        meter: Option<Box<Meter>>,
        response_bytes: u64,
    ) {
        self.finish(outcome);
        self.meter = meter;
        self.response_bytes = response_bytes;
        self.end();
    }

    /// Counts an upstream failure in the metrics.
    pub(crate) fn upstream_failed(&self, kind: UpstreamErrorKind) {
        self.metrics.upstream.error(kind);
    }

    /// Records how the exchange ended; the first call wins.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.outcome.get_or_insert(outcome);
    }

    /// The proxy answered with an error of its own: its status, how the exchange ended, and
    /// its `code`. That answer is the end.
    pub(crate) fn answered_error(
        &mut self,
        status: StatusCode,
        outcome: Outcome,
        code: Option<&'static str>,
    ) {
        self.finish(outcome);
        self.error_code = self.error_code.or(code);
        self.status = Some(status);
        self.end();
    }

    /// The answer is over: counted in the metrics, charged to the client's budget and written
    /// to the access log, once. An exchange without a recorded outcome was cut by the drain
    /// or given up by its client.
    pub(crate) fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let cut = self.drain.exchange_ended();
        let outcome = match self.outcome {
            Some(outcome) => outcome,
            None if cut => Outcome::Shutdown,
            None => Outcome::ClientCancelled,
        };
        let status = self.status.map_or(0, |s| s.as_u16());
        let upstream_status = self.upstream_status.map_or(0, |s| s.as_u16());
        let upstream_id = self
            .upstream_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let total = self.started.elapsed();
        let request_bytes = self.request.bytes.load(Ordering::Relaxed);
        self.metrics.exchanges.in_flight.dec();
        self.metrics.exchanges.ended(Ended {
            route: &self.route,
            client: &self.client,
            method: self.method.as_str(),
            status,
            outcome,
            request_bytes,
            response_bytes: self.response_bytes,
            sse_events: self.sse_events,
            head_after: self.head_after,
            total,
        });
        let usage = self.usage(outcome, request_bytes);
        // The slot is freed once the exchange is counted.
        self.permit = None;
        let millis = |d: Duration| d.as_micros() as f64 / 1e3;
        let head_ms = self.head_after.map_or(-1.0, millis);
        let total_ms = millis(total);
        tracing::info!(
            target: "memoctopus::access",
            method = %self.method,
            route = %self.route.name,
            client = %self.client,
            status,
            upstream_status,
            request_bytes,
            response_bytes = self.response_bytes,
            sse_events = self.sse_events,
            head_ms,
            total_ms,
            request_id = self.log_id(),
            upstream_request_id = upstream_id,
            outcome = outcome.as_str(),
            error_code = self.error_code.unwrap_or("-"),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            // The metrics' label for an answer that names no model.
            model = self.meter.as_deref().and_then(Meter::model).unwrap_or("unknown"),
            input_tokens = usage.tokens.input,
            output_tokens = usage.tokens.output,
            cached_tokens = usage.tokens.cached,
            reasoning_tokens = usage.tokens.reasoning,
            usage = usage.kind,
            usage_reason = usage.reason.unwrap_or("-"),
        );
        if let Some(spans) = self.spans.take() {
            let meter = self.meter.as_deref();
            spans.end(traces::Ended {
                status,
                upstream_status,
                outcome: outcome.as_str(),
                completed: outcome == Outcome::Completed,
                error_code: self.error_code,
                client: self.client.clone(),
                request_id: traces::Short::from_bytes(self.id.as_bytes()),
                upstream_request_id: self
                    .upstream_id
                    .as_ref()
                    .and_then(|id| traces::Short::from_bytes(id.as_bytes())),
                upstream: self.upstream.clone(),
                attempts: self.attempts,
                model: meter.and_then(Meter::model).and_then(traces::Short::new),
                response_id: meter
                    .and_then(Meter::response_id)
                    .and_then(traces::Short::new),
                reported: (usage.kind == "reported").then_some(usage.tokens),
                usage: usage.kind,
                stream: self.sse_stream,
            });
        }
    }
}

/// An exchange's future that hyper drops before the answer began (the client left, or the
/// drain's grace ran out) runs none of the code that ends it; this does, so that no exchange
/// goes uncounted or uncharged. Every other end is an explicit [`Exchange::end`].
impl Drop for Exchange {
    fn drop(&mut self) {
        self.end();
    }
}

/// What an exchange cost, for its log line: reported, estimated (and why), or none.
struct Cost {
    kind: &'static str,
    reason: Option<&'static str>,
    tokens: Tokens,
}

/// A successful answer the meter cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unread {
    /// Neither JSON nor SSE, such as a transcription as `text`, `srt` or `vtt`: one token for
    /// every four bytes.
    Text,
    /// Audio or other binary bytes (`/v1/audio/speech`): one token for every KiB.
    Binary,
    /// Compressed though the proxy asked for `identity`: one token for every byte, as text
    /// compresses about four to one and a token is about four bytes.
    Compressed,
}

impl Unread {
    fn reason(self) -> &'static str {
        match self {
            Unread::Text | Unread::Binary => "not_json",
            Unread::Compressed => "compressed",
        }
    }

    fn output_estimate(self, bytes: u64) -> u64 {
        match self {
            Unread::Text => bytes.div_ceil(4),
            Unread::Binary => bytes.div_ceil(1024),
            Unread::Compressed => bytes,
        }
    }
}

impl Exchange {
    /// What the exchange cost, once it is over, counted in the metrics and charged to the
    /// client's budget: the tokens the upstream reported, or else an estimate, whenever the
    /// route is metered and the upstream may have had the request; nothing when it provably
    /// did not, or when it answered with an error.
    fn usage(&self, outcome: Outcome, request_bytes: u64) -> Cost {
        let cost = self.cost(outcome, request_bytes);
        if let Some(reason) = cost.reason {
            self.metrics.usage.seen(
                &self.client,
                self.upstream_label(),
                &self.route,
                UsageSeen::Missing(reason),
            );
        }
        if let Some(permit) = &self.permit {
            permit.charge(cost.tokens.billed());
        }
        cost
    }

    fn cost(&self, outcome: Outcome, request_bytes: u64) -> Cost {
        let estimated = |reason, tokens| Cost {
            kind: "estimated",
            reason: Some(reason),
            tokens,
        };
        let input = || crate::usage::input_estimate(request_bytes, self.request_is_json);
        if let Some(meter) = &self.meter {
            if let Some(reason) = meter.lost() {
                // A session's frames that could not be read: one token for every byte, as
                // for a compressed answer.
                return estimated(
                    reason,
                    Tokens {
                        input: input(),
                        output: Unread::Compressed.output_estimate(self.response_bytes),
                        ..Tokens::default()
                    },
                );
            }
            if let Some(tokens) = meter.reported() {
                self.metrics.usage.seen(
                    &self.client,
                    self.upstream_label(),
                    &self.route,
                    UsageSeen::Reported {
                        tokens: &tokens,
                        model: meter.model(),
                        model_too_long: meter.model_too_long(),
                    },
                );
                return Cost {
                    kind: "reported",
                    reason: None,
                    tokens,
                };
            }
            let session = self.upstream_status == Some(StatusCode::SWITCHING_PROTOCOLS);
            let reason = match outcome {
                Outcome::Completed => "not_reported",
                Outcome::ClientCancelled => "cancelled",
                // Either side may close a session; it failed only if it timed out.
                Outcome::ClientClosed | Outcome::UpstreamClosed if session => "not_reported",
                _ => "failed",
            };
            return estimated(reason, meter.estimate(request_bytes, self.request_is_json));
        }
        let none = Cost {
            kind: "none",
            reason: None,
            tokens: Tokens::default(),
        };
        if !self.metered || !self.sent {
            return none;
        }
        match (self.upstream_status, self.unread) {
            (Some(status), Some(unread)) if status.is_success() => estimated(
                unread.reason(),
                Tokens {
                    input: input(),
                    output: unread.output_estimate(self.response_bytes),
                    ..Tokens::default()
                },
            ),
            // The upstream had the prompt, and no answer said what it cost: cancelled, timed
            // out, or broken off before the head.
            (None, _) => estimated(
                "no_answer",
                Tokens {
                    input: input(),
                    ..Tokens::default()
                },
            ),
            _ => none,
        }
    }
}

/// Counts the blank lines that end SSE events in `data`; `after_newline` carries across frames
/// whether the last line so far ended, since an event's closing blank line may straddle two.
fn count_sse_events(data: &[u8], after_newline: &mut bool) -> u64 {
    let mut events = 0;
    let mut line_start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        // A blank line: nothing but an optional '\r' since the previous line ended.
        let blank =
            matches!(&data[line_start..end], [] | [b'\r']) && (line_start > 0 || *after_newline);
        events += u64::from(blank);
        line_start = end + 1;
    }
    if matches!(&data[line_start..], [] | [b'\r']) {
        *after_newline |= line_start > 0;
    } else {
        *after_newline = false;
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_counted_across_frames() {
        let mut state = false;
        assert_eq!(count_sse_events(b"data: a\n\ndata: b\n", &mut state), 1);
        assert_eq!(count_sse_events(b"\ndata: c\r\n\r\n", &mut state), 2);
        assert_eq!(count_sse_events(b"data: [DONE]\n\n", &mut state), 1);
        assert_eq!(count_sse_events(b"no events here", &mut state), 0);
        assert_eq!(count_sse_events(b"\n", &mut state), 0);
        assert_eq!(count_sse_events(b"\r", &mut state), 0);
        assert_eq!(count_sse_events(b"\n", &mut state), 1);
        assert_eq!(count_sse_events(b"data: x\n", &mut state), 0);
        assert_eq!(count_sse_events(b"", &mut state), 0);
        assert_eq!(count_sse_events(b"\r\n", &mut state), 1);
    }
}
