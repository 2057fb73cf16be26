//! One client request and its answer, from the head to the last byte: its id, its counters,
//! and the access log line written when it ends, however it ends.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use crate::drain::DrainState;
use crate::metrics::{Ended, Metrics, RouteMetrics, UpstreamErrorKind, UsageSeen};
use crate::outcome::Outcome;
use crate::policy::client_keys::UNAUTHENTICATED;
use crate::store::Permit;
use crate::usage::{Meter, Tokens};

/// A fresh request id: random per process, then a counter, so ids never repeat within a
/// process and almost surely not across processes.
pub fn new_request_id() -> HeaderValue {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("memo-{process:016x}-{n:x}");
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("memo-invalid"))
}

fn unauthenticated() -> Arc<str> {
    static NAME: OnceLock<Arc<str>> = OnceLock::new();
    NAME.get_or_init(|| Arc::from(UNAUTHENTICATED)).clone()
}

/// What the request side tells the response side: bytes read, and why it stopped early.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    pub client_failed: AtomicBool,
    pub timed_out: AtomicBool,
}

/// The record of one proxied exchange. Dropping it writes the access log line.
pub struct Exchange {
    pub id: HeaderValue,
    method: Method,
    route: Arc<RouteMetrics>,
    started: Instant,
    /// The status the client got.
    pub status: Option<StatusCode>,
    /// The status the upstream sent, when it answered.
    pub upstream_status: Option<StatusCode>,
    /// Time from the request's start to the upstream's response head.
    pub head_after: Option<Duration>,
    /// OpenAI's own `x-request-id`, logged beside ours for support.
    pub upstream_id: Option<HeaderValue>,
    pub request: Arc<RequestStats>,
    /// The client's name, once its key is checked: for the access log and the metrics.
    pub client: Arc<str>,
    /// The client's in-flight slot, held until the exchange ends, last byte included.
    pub permit: Option<Permit>,
    pub response_bytes: u64,
    pub sse_events: u64,
    /// The usage meter, for a successful JSON or SSE answer while `PROXY_USAGE` is on.
    pub meter: Option<Box<Meter>>,
    /// Whether the request body is JSON, for the estimate of its tokens.
    pub request_is_json: bool,
    /// Whether the route's answers can cost tokens, with the meter on: every such exchange
    /// that may have reached the upstream is charged, its reported usage or an estimate.
    pub metered: bool,
    /// Whether the request may have reached the upstream: set when it is handed to the
    /// upstream, cleared when it provably did not get there.
    pub sent: bool,
    /// A successful answer the meter cannot read, by what its bytes are.
    pub unread: Option<Unread>,
    outcome: Option<Outcome>,
    /// The `code` of the error the proxy answered with itself, such as which limit refused.
    error_code: Option<&'static str>,
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
}

impl Exchange {
    pub fn start(
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
            meter: None,
            request_is_json: false,
            metered: false,
            sent: false,
            unread: None,
            outcome: None,
            error_code: None,
            drain,
            metrics,
        }
    }

    /// Counts an upstream failure in the metrics.
    pub fn upstream_failed(&self, kind: UpstreamErrorKind) {
        self.metrics.upstream.error(kind);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records how the exchange ended; the first call wins.
    pub fn finish(&mut self, outcome: Outcome) {
        self.outcome.get_or_insert(outcome);
    }

    /// Records that the proxy answered with an error of its own, by its `code`, and how the
    /// exchange ended.
    pub fn refused(&mut self, outcome: Outcome, code: Option<&'static str>) {
        self.finish(outcome);
        self.error_code = self.error_code.or(code);
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let cut = self.drain.exchange_ended();
        let outcome = match self.outcome {
            Some(outcome) => outcome,
            None if cut => Outcome::Shutdown,
            None => Outcome::ClientCancelled,
        };
        let status = self.status.map_or(0, |s| s.as_u16());
        let upstream_status = self.upstream_status.map_or(0, |s| s.as_u16());
        let id = self.id.to_str().unwrap_or("-");
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
            request_id = id,
            upstream_request_id = upstream_id,
            outcome = outcome.as_str(),
            error_code = self.error_code.unwrap_or("-"),
            // The metrics' label for an answer that names no model.
            model = self.meter.as_deref().and_then(Meter::model).unwrap_or("unknown"),
            input_tokens = usage.tokens.input,
            output_tokens = usage.tokens.output,
            cached_tokens = usage.tokens.cached,
            reasoning_tokens = usage.tokens.reasoning,
            usage = usage.kind,
            usage_reason = usage.reason.unwrap_or("-"),
        );
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
pub enum Unread {
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
            self.metrics
                .usage
                .seen(&self.client, &self.route, UsageSeen::Missing(reason));
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
