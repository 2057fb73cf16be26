//! Prometheus metrics, through `prometheus-client`: the official Prometheus client for Rust,
//! with no global registry and few dependencies.
//!
//! Labels have low cardinality only: route (a configured pattern), method, status code,
//! outcome, error kind, and the client's configured name. Never an id, a path a client chose,
//! or a key. Per-route series are
//! created once at start, so the hot path only touches atomics.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::outcome::{Outcome, Refused, RetryReason};
use crate::policy::routes::Routes;
use crate::usage::Tokens;

/// Seconds, from 1 ms to 10 min: a cached answer up to the longest generation.
const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Label,
    method: &'static str,
    status: u16,
    outcome: &'static str,
    client: Label,
}

/// A route's pattern or a client's name, shared, so that counting an exchange allocates
/// nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label(Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// The method as a static label; routes only ever carry these.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    setting: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabels {
    setting: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    client: Label,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    client: Label,
    model: Label,
    #[prometheus(flatten)]
    kind: TokenType,
}

/// One client's token series, by model label.
type ByModel = HashMap<Arc<str>, [Counter; 4]>;

/// The `type` label's values, in the order of [`UsageMetrics::counters`]' series.
const TOKEN_TYPES: [&str; 4] = ["input", "output", "cached", "reasoning"];

/// `type`, a keyword in Rust, as its own label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenType {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    client: Label,
    model: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MissingLabels {
    client: Label,
    route: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn refused_label(why: Refused) -> &'static str {
    match why {
        Refused::BadRequest(_) => "bad_request",
        Refused::HeadTooLarge => "too_large",
    }
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The series of one forwarded route, created at start.
pub struct RouteMetrics {
    /// The route's configured pattern, such as `/v1/models/*`.
    pub name: String,
    label: Label,
    duration: Histogram,
    head: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    sse_events: Counter,
    cancellations: Counter,
}

/// Everything `/metrics` shows.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    routes: Vec<Arc<RouteMetrics>>,
    pub in_flight: Gauge,
    pub open_streams: Gauge,
    pub open_connections: Gauge,
    open_realtime_sessions: Gauge,
    upstream_errors: Family<KindLabels, Counter>,
    body_limit_rejections: Counter,
    refused_heads: Family<KindLabels, Counter>,
    /// The two protocols' series, made at start: opening a connection allocates nothing.
    upstream_opened: [Counter; 2],
    upstream_open: [Gauge; 2],
    upstream_retries: Family<ReasonLabels, Counter>,
    key_reloads: Family<ReloadLabels, Counter>,
    key_loaded: Family<SettingLabels, Gauge<f64, AtomicU64>>,
    client_limited: Family<LimitLabels, Counter>,
    /// HTTP/2 streams the client reset before their answer ended.
    pub client_stream_resets: Counter,
    /// Client connections the proxy closed on its own, by why: `idle` or `max_requests`.
    connections_closed: Family<ReasonLabels, Counter>,
    usage: UsageMetrics,
    store: StoreMetrics,
}

/// Round trips to Redis, in seconds: 100 µs to 1 s.
const REDIS_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Which limits are in force, and how Redis answers when it is their store.
struct StoreMetrics {
    /// `shared` and `local`: 1 for the one in force.
    backend: [Gauge; 2],
    errors: Family<KindLabels, Counter>,
    round_trips: Histogram,
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> StoreMetrics {
        let backend = Family::<StateLabels, Gauge>::default();
        registry.register(
            "limits_backend",
            "Which client limits are in force: shared (through Redis, PROXY_LIMITS_REDIS_URL) or local (this process's own), 1 for the one in force",
            backend.clone(),
        );
        let backend =
            ["shared", "local"].map(|state| backend.get_or_create_owned(&StateLabels { state }));
        backend[1].set(1);
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "limits_redis_errors",
            "Calls to the limits' Redis that failed, by kind: timeout, connection, response",
            errors.clone(),
        );
        let round_trips = Histogram::new(REDIS_BUCKETS);
        registry.register(
            "limits_redis_seconds",
            "Admission round trips to the limits' Redis",
            round_trips.clone(),
        );
        StoreMetrics {
            backend,
            errors,
            round_trips,
        }
    }
}

/// What the usage meter reports: the tokens OpenAI counted, by client, model and type; the
/// audio seconds; and the answers that reported none.
struct UsageMetrics {
    tokens: Family<TokenLabels, Counter>,
    audio_seconds: Family<ModelLabels, Counter<f64, AtomicU64>>,
    missing: Family<MissingLabels, Counter>,
    /// Each client's four token series by model label, found once: counting an answer then
    /// takes two lookups by name under one lock instead of four label-set lookups.
    counters: Mutex<HashMap<Arc<str>, ByModel>>,
    models: ModelNames,
}

impl UsageMetrics {
    fn register(registry: &mut Registry, max_models: usize) -> UsageMetrics {
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens the upstream reported in its answers' usage, by client, model and type: input, output, cached (part of input), reasoning (part of output)",
            tokens.clone(),
        );
        let audio_seconds = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "audio_seconds",
            "Audio seconds the upstream reported for transcriptions billed by duration, by client and model",
            audio_seconds.clone(),
        );
        let missing = Family::<MissingLabels, Counter>::default();
        registry.register(
            "usage_missing",
            "Answers whose usage the upstream did not report, by client, route and reason: cancelled (the client left), failed (the answer broke or timed out), not_reported (complete, but without usage)",
            missing.clone(),
        );
        UsageMetrics {
            tokens,
            audio_seconds,
            missing,
            counters: Mutex::default(),
            models: ModelNames::new(max_models),
        }
    }
}

/// The `model` label values: the first `max` distinct names an answer gave, then `other` for
/// the rest, so that a client cannot grow `/metrics` without bound.
struct ModelNames {
    max: usize,
    seen: Mutex<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
    unknown: Arc<str>,
}

impl ModelNames {
    fn new(max: usize) -> ModelNames {
        ModelNames {
            max,
            seen: Mutex::default(),
            other: Arc::from("other"),
            unknown: Arc::from("unknown"),
        }
    }

    /// The label for what an answer named: `unknown` for no name, `other` for one too long to
    /// keep or past the first `max`.
    fn label(&self, model: Option<&str>, too_long: bool) -> Label {
        let name = match model {
            _ if too_long => return Label(self.other.clone()),
            None => return Label(self.unknown.clone()),
            Some(name) => name,
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = seen.get(name) {
            return Label(label.clone());
        }
        if seen.len() >= self.max {
            return Label(self.other.clone());
        }
        let label: Arc<str> = Arc::from(name);
        seen.insert(Box::from(name), label.clone());
        Label(label)
    }
}

/// What the meter made of one answer, for the metrics.
pub enum UsageSeen<'a> {
    /// The upstream's own figures, and the model the answer named.
    Reported {
        tokens: &'a Tokens,
        model: Option<&'a str>,
        model_too_long: bool,
    },
    /// No figures, and why: `cancelled`, `failed` or `not_reported`.
    Missing(&'static str),
}

/// An open upstream connection or session, counted in `/metrics` until this is dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

const PROTOCOLS: [&str; 2] = ["http1", "http2"];

pub use crate::outcome::UpstreamErrorKind;

/// What an exchange reports when it ends.
pub struct Ended<'a> {
    pub route: &'a RouteMetrics,
    pub client: &'a Arc<str>,
    pub method: &'a str,
    pub status: u16,
    pub outcome: Outcome,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub sse_events: u64,
    pub head_after: Option<Duration>,
    pub total: Duration,
}

impl Metrics {
    pub fn new(routes: &Routes) -> Metrics {
        Metrics::with_models(routes, 100)
    }

    /// With at most `max_models` distinct `model` label values (`PROXY_USAGE_MAX_MODELS`).
    pub fn with_models(routes: &Routes, max_models: usize) -> Metrics {
        let mut registry = Registry::with_prefix("memoctopus");
        let usage = UsageMetrics::register(&mut registry, max_models);
        let store = StoreMetrics::register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied exchanges, by route, method, status and outcome",
            requests.clone(),
        );
        let duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Whole exchange, request head to last byte",
            duration.clone(),
        );
        let head =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "upstream_head_seconds",
            "Request start to the upstream's response head",
            head.clone(),
        );
        let request_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "request_bytes",
            "Request body bytes forwarded upstream",
            request_bytes.clone(),
        );
        let response_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes forwarded to clients",
            response_bytes.clone(),
        );
        let sse_events = Family::<RouteLabels, Counter>::default();
        registry.register(
            "sse_events",
            "Server-sent events forwarded to clients",
            sse_events.clone(),
        );
        let cancellations = Family::<RouteLabels, Counter>::default();
        registry.register(
            "client_cancellations",
            "Exchanges the client abandoned before the end",
            cancellations.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind: connect, tls, timeout, reset",
            upstream_errors.clone(),
        );
        let body_limit_rejections = Counter::default();
        registry.register(
            "body_limit_rejections",
            "Requests refused for PROXY_MAX_BODY_BYTES",
            body_limit_rejections.clone(),
        );
        let refused_heads = Family::<KindLabels, Counter>::default();
        registry.register(
            "refused_request_heads",
            "HTTP/1 request heads refused before hyper read them: bad_request (400), too_large (431)",
            refused_heads.clone(),
        );
        let opened = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "upstream_connections_opened",
            "Upstream connections opened, by protocol: http1, http2",
            opened.clone(),
        );
        let open = Family::<ProtocolLabels, Gauge>::default();
        registry.register(
            "upstream_connections_open",
            "Upstream connections open now, by protocol: http1, http2",
            open.clone(),
        );
        let upstream_retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent again because the upstream provably did not process them, by reason",
            upstream_retries.clone(),
        );
        for reason in RetryReason::ALL {
            drop(upstream_retries.get_or_create(&ReasonLabels {
                reason: reason.label(),
            }));
        }
        let key_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "key_reloads",
            "Key files re-read after a change, by setting and result: success, or error (the old keys stay in force)",
            key_reloads.clone(),
        );
        let key_loaded = Family::<SettingLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "key_last_load_timestamp_seconds",
            "When each key file was last loaded successfully, at start or on a reload, in Unix seconds",
            key_loaded.clone(),
        );
        let client_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "client_limit_rejections",
            "Requests refused with 429 by PROXY_CLIENT_MAX_IN_FLIGHT (concurrency) or PROXY_CLIENT_RATE (rate), by client",
            client_limited.clone(),
        );
        let upstream_opened =
            PROTOCOLS.map(|protocol| opened.get_or_create_owned(&ProtocolLabels { protocol }));
        let upstream_open =
            PROTOCOLS.map(|protocol| open.get_or_create_owned(&ProtocolLabels { protocol }));
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Proxied exchanges in progress",
            in_flight.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_sse_streams",
            "Server-sent event streams in progress",
            open_streams.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Inbound client connections open",
            open_connections.clone(),
        );
        let client_stream_resets = Counter::default();
        registry.register(
            "client_stream_resets",
            "HTTP/2 streams the client reset before their answer ended",
            client_stream_resets.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections closed by the proxy: idle (no request within PROXY_HEADER_READ_TIMEOUT) or max_requests",
            connections_closed.clone(),
        );
        for reason in ["idle", "max_requests"] {
            connections_closed
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        let open_realtime_sessions = Gauge::default();
        registry.register(
            "open_realtime_sessions",
            "WebSocket sessions (the Realtime API) open now",
            open_realtime_sessions.clone(),
        );
        // Known kinds start at zero, so that rates work before the first failure.
        for kind in [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Tls,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Reset,
        ] {
            drop(upstream_errors.get_or_create(&KindLabels { kind: kind.label() }));
        }
        for why in [Refused::BadRequest(""), Refused::HeadTooLarge] {
            drop(refused_heads.get_or_create(&KindLabels {
                kind: refused_label(why),
            }));
        }

        let routes = routes
            .forwarded_names()
            .map(|name| {
                let labels = RouteLabels {
                    route: name.to_owned(),
                };
                Arc::new(RouteMetrics {
                    name: name.to_owned(),
                    label: Label(Arc::from(name)),
                    duration: duration.get_or_create_owned(&labels),
                    head: head.get_or_create_owned(&labels),
                    request_bytes: request_bytes.get_or_create_owned(&labels),
                    response_bytes: response_bytes.get_or_create_owned(&labels),
                    sse_events: sse_events.get_or_create_owned(&labels),
                    cancellations: cancellations.get_or_create_owned(&labels),
                })
            })
            .collect();
        Metrics {
            registry,
            requests,
            routes,
            in_flight,
            open_streams,
            open_connections,
            open_realtime_sessions,
            upstream_errors,
            body_limit_rejections,
            refused_heads,
            upstream_opened,
            upstream_open,
            upstream_retries,
            key_reloads,
            key_loaded,
            client_limited,
            client_stream_resets,
            connections_closed,
            usage,
            store,
        }
    }

    /// The client limits in force: shared through Redis, or this process's own.
    pub fn limits_backend(&self, shared: bool) {
        self.store.backend[0].set(i64::from(shared));
        self.store.backend[1].set(i64::from(!shared));
    }

    /// A call to the limits' Redis that failed: `timeout`, `connection` or `response`.
    pub fn limits_redis_error(&self, kind: &'static str) {
        self.store.errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// An admission round trip to the limits' Redis.
    pub fn limits_redis_round_trip(&self, took: Duration) {
        self.store.round_trips.observe(took.as_secs_f64());
    }

    /// An answer's usage, as the meter saw it.
    pub fn usage(&self, client: &Arc<str>, route: &RouteMetrics, seen: UsageSeen<'_>) {
        let usage = &self.usage;
        let client = Label(client.clone());
        match seen {
            UsageSeen::Reported {
                tokens,
                model,
                model_too_long,
            } => {
                let model = usage.models.label(model, model_too_long);
                if let Some(seconds) = tokens.audio_seconds {
                    usage
                        .audio_seconds
                        .get_or_create(&ModelLabels { client, model })
                        .inc_by(seconds);
                    return;
                }
                let mut counters = usage
                    .counters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let of_client = match counters.get_mut(&*client.0) {
                    Some(of_client) => of_client,
                    None => counters.entry(client.0.clone()).or_default(),
                };
                let series = match of_client.get(&*model.0) {
                    Some(series) => series,
                    None => of_client.entry(model.0.clone()).or_insert_with(|| {
                        TOKEN_TYPES.map(|r#type| {
                            usage.tokens.get_or_create_owned(&TokenLabels {
                                client: client.clone(),
                                model: model.clone(),
                                kind: TokenType { r#type },
                            })
                        })
                    }),
                };
                for (counter, count) in series.iter().zip([
                    tokens.input,
                    tokens.output,
                    tokens.cached,
                    tokens.reasoning,
                ]) {
                    counter.inc_by(count);
                }
            }
            UsageSeen::Missing(reason) => {
                usage
                    .missing
                    .get_or_create(&MissingLabels {
                        client,
                        route: route.label.clone(),
                        reason,
                    })
                    .inc();
            }
        }
    }

    /// A client connection the proxy closed on its own: `idle` or `max_requests`.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A key file now watched: its series start at zero, and its first load is now.
    pub fn key_file_watched(&self, setting: &'static str) {
        for result in ["success", "error"] {
            drop(
                self.key_reloads
                    .get_or_create(&ReloadLabels { setting, result }),
            );
        }
        self.key_file_loaded(setting);
    }

    /// A key file re-read after a change; on an error the old keys stay in force.
    pub fn key_reloaded(&self, setting: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.key_reloads
            .get_or_create(&ReloadLabels { setting, result })
            .inc();
        if ok {
            self.key_file_loaded(setting);
        }
    }

    fn key_file_loaded(&self, setting: &'static str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.key_loaded
            .get_or_create(&SettingLabels { setting })
            .set(now);
    }

    /// A request refused by a per-client limit (`limit` is `concurrency` or `rate`).
    pub fn client_limited(&self, client: &Arc<str>, limit: &'static str) {
        self.client_limited
            .get_or_create(&LimitLabels {
                client: Label(client.clone()),
                limit,
            })
            .inc();
    }

    /// A new upstream connection; it counts as open until the guard is dropped.
    pub fn upstream_connection_opened(&self, http2: bool) -> OpenConnection {
        let index = usize::from(http2);
        self.upstream_opened[index].inc();
        let open = self.upstream_open[index].clone();
        open.inc();
        OpenConnection(open)
    }

    /// A WebSocket session; it counts as open until the guard is dropped.
    pub fn realtime_session_opened(&self) -> OpenConnection {
        self.open_realtime_sessions.inc();
        OpenConnection(self.open_realtime_sessions.clone())
    }

    /// A request sent again, and why.
    pub fn upstream_retry(&self, reason: RetryReason) {
        self.upstream_retries
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// A request head the framing guard refused.
    pub fn head_refused(&self, why: Refused) {
        self.refused_heads
            .get_or_create(&KindLabels {
                kind: refused_label(why),
            })
            .inc();
    }

    /// The series of the route at `index` in the route table.
    pub fn route(&self, index: usize) -> Option<Arc<RouteMetrics>> {
        self.routes.get(index).cloned()
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    pub fn exchange_ended(&self, ended: Ended<'_>) {
        let route = ended.route;
        self.requests
            .get_or_create(&RequestLabels {
                route: route.label.clone(),
                method: method_label(ended.method),
                status: ended.status,
                outcome: ended.outcome.as_str(),
                client: Label(ended.client.clone()),
            })
            .inc();
        route.duration.observe(ended.total.as_secs_f64());
        if let Some(head) = ended.head_after {
            route.head.observe(head.as_secs_f64());
        }
        route.request_bytes.inc_by(ended.request_bytes);
        route.response_bytes.inc_by(ended.response_bytes);
        route.sse_events.inc_by(ended.sse_events);
        match ended.outcome {
            Outcome::ClientCancelled => {
                route.cancellations.inc();
            }
            Outcome::BodyTooLarge => {
                self.body_limit_rejections.inc();
            }
            _ => {}
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
