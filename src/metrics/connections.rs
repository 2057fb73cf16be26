//! Client connections: open now, closed by the proxy, heads refused, HTTP/2 streams reset.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use super::labels::{KindLabels, ReasonLabels};
use crate::outcome::Refused;

pub(crate) struct ConnectionMetrics {
    pub open: Gauge,
    /// When the drain began, in seconds since the Unix epoch; 0 while serving.
    drain_started: Gauge<f64, AtomicU64>,
    /// HTTP/2 streams the client reset before their answer ended.
    pub stream_resets: Counter,
    /// Client connections the proxy closed on its own, by why: `idle` or `max_requests`.
    closed: Family<ReasonLabels, Counter>,
    refused_heads: Family<KindLabels, Counter>,
}

fn refused_label(why: Refused) -> &'static str {
    match why {
        Refused::BadRequest(_) => "bad_request",
        Refused::HeadTooLarge => "too_large",
    }
}

impl ConnectionMetrics {
    pub(super) fn register(registry: &mut Registry) -> ConnectionMetrics {
        let open = Gauge::default();
        registry.register(
            "open_connections",
            "Inbound client connections open",
            open.clone(),
        );
        let drain_started = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "drain_started_timestamp_seconds",
            "When the shutdown signal began the drain, in seconds since the Unix epoch; 0 while serving",
            drain_started.clone(),
        );
        let stream_resets = Counter::default();
        registry.register(
            "client_stream_resets",
            "HTTP/2 streams the client reset before their answer ended",
            stream_resets.clone(),
        );
        let closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections closed by the proxy: idle (no request within PROXY_HEADER_READ_TIMEOUT) or max_requests",
            closed.clone(),
        );
        for reason in ["idle", "max_requests"] {
            closed.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        let refused_heads = Family::<KindLabels, Counter>::default();
        registry.register(
            "refused_request_heads",
            "HTTP/1 request heads refused before hyper read them: bad_request (400), too_large (431)",
            refused_heads.clone(),
        );
        for why in [Refused::BadRequest(""), Refused::HeadTooLarge] {
            drop(refused_heads.get_or_create(&KindLabels {
                kind: refused_label(why),
            }));
        }
        ConnectionMetrics {
            open,
            drain_started,
            stream_resets,
            closed,
            refused_heads,
        }
    }

    /// The shutdown signal came: the drain begins now.
    pub(crate) fn drain_started(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.drain_started.set(now);
    }

    /// A client connection the proxy closed on its own: `idle` or `max_requests`.
    pub(crate) fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A request head the framing guard refused.
    pub(crate) fn head_refused(&self, why: Refused) {
        self.refused_heads
            .get_or_create(&KindLabels {
                kind: refused_label(why),
            })
            .inc();
    }
}
