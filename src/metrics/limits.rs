//! The client limits: the requests they refused, which store is in force, and how Redis
//! answers when it is the store.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{KindLabels, Label, LimitLabels, StateLabels};

/// Round trips to Redis, in seconds: 100 µs to 1 s.
const REDIS_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
];

pub(crate) struct LimitMetrics {
    rejections: Family<LimitLabels, Counter>,
    /// `shared` and `local`: 1 for the one in force.
    backend: [Gauge; 2],
    redis_errors: Family<KindLabels, Counter>,
    redis_round_trips: Histogram,
}

impl LimitMetrics {
    pub(super) fn register(registry: &mut Registry) -> LimitMetrics {
        let rejections = Family::<LimitLabels, Counter>::default();
        registry.register(
            "client_limit_rejections",
            "Requests refused with 429 by PROXY_CLIENT_MAX_IN_FLIGHT (concurrency) or PROXY_CLIENT_RATE (rate), by client",
            rejections.clone(),
        );
        let backend = Family::<StateLabels, Gauge>::default();
        registry.register(
            "limits_backend",
            "Which client limits are in force: shared (through Redis, PROXY_LIMITS_REDIS_URL) or local (this process's own), 1 for the one in force",
            backend.clone(),
        );
        let backend =
            ["shared", "local"].map(|state| backend.get_or_create_owned(&StateLabels { state }));
        backend[1].set(1);
        let redis_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "limits_redis_errors",
            "Calls to the limits' Redis that failed, by kind: timeout, connection, response",
            redis_errors.clone(),
        );
        // Each kind starts at zero, so that its rate and the fallback alert work before the
        // first failure.
        for kind in ["timeout", "connection", "response"] {
            drop(redis_errors.get_or_create(&KindLabels { kind }));
        }
        let redis_round_trips = Histogram::new(REDIS_BUCKETS);
        registry.register(
            "limits_redis_seconds",
            "Admission round trips to the limits' Redis",
            redis_round_trips.clone(),
        );
        LimitMetrics {
            rejections,
            backend,
            redis_errors,
            redis_round_trips,
        }
    }

    /// A request refused by a per-client limit (`limit` is `concurrency`, `rate`,
    /// `token_budget` or `unavailable`).
    pub(crate) fn rejected(&self, client: &Arc<str>, limit: &'static str) {
        self.rejections
            .get_or_create(&LimitLabels {
                client: Label(client.clone()),
                limit,
            })
            .inc();
    }

    /// The client limits in force: shared through Redis, or this process's own.
    pub(crate) fn backend(&self, shared: bool) {
        self.backend[0].set(i64::from(shared));
        self.backend[1].set(i64::from(!shared));
    }

    /// A call to the limits' Redis that failed: `timeout`, `connection` or `response`.
    pub(crate) fn redis_error(&self, kind: &'static str) {
        self.redis_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// An admission round trip to the limits' Redis.
    pub(crate) fn redis_round_trip(&self, took: Duration) {
        self.redis_round_trips.observe(took.as_secs_f64());
    }
}
