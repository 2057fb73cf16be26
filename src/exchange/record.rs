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
        );
    }
}

/// What an exchange cost, for its log line.
struct Cost {
    kind: &'static str,
    tokens: Tokens,
}

impl Exchange {
    /// Reads the meter once the answer is over: the tokens the upstream reported, counted in
    /// the metrics, or else an estimate; either is charged to the client's budget.
    fn usage(&self, outcome: Outcome, request_bytes: u64) -> Cost {
        let Some(meter) = &self.meter else {
            return Cost {
                kind: "none",
                tokens: Tokens::default(),
            };
        };
        let cost = match meter.reported() {
            Some(tokens) => {
                self.metrics.usage.seen(
                    &self.client,
                    &self.route,
                    UsageSeen::Reported {
                        tokens: &tokens,
                        model: meter.model(),
                        model_too_long: meter.model_too_long(),
                    },
                );
                Cost {
                    kind: "reported",
                    tokens,
                }
            }
            None => {
                let reason = match outcome {
                    Outcome::Completed => "not_reported",
                    Outcome::ClientCancelled => "cancelled",
                    _ => "failed",
                };
                self.metrics
                    .usage
                    .seen(&self.client, &self.route, UsageSeen::Missing(reason));
                Cost {
                    kind: "estimated",
                    tokens: meter.estimate(request_bytes, self.request_is_json),
                }
            }
        };
        if let Some(permit) = &self.permit {
            permit.charge(cost.tokens.billed());
        }
        cost
    }
}
