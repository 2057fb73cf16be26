//! The upstream side: connections opened and open by protocol, failures, retries, and
//! WebSocket sessions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{KindLabels, ProtocolLabels, ReasonLabels};
use crate::outcome::{RetryReason, UpstreamErrorKind};

const PROTOCOLS: [&str; 2] = ["http1", "http2"];

/// An open upstream connection or session, counted in `/metrics` until this is dropped.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) struct UpstreamMetrics {
    errors: Family<KindLabels, Counter>,
    /// The two protocols' series, made at start: opening a connection allocates nothing.
    opened: [Counter; 2],
    open: [Gauge; 2],
    retries: Family<ReasonLabels, Counter>,
    realtime_sessions: Gauge,
}

impl UpstreamMetrics {
    pub(super) fn register(registry: &mut Registry) -> UpstreamMetrics {
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind: connect, tls, timeout, reset, may_have_been_processed",
            errors.clone(),
        );
        // Known kinds start at zero, so that rates work before the first failure.
        for kind in [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Tls,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Reset,
            UpstreamErrorKind::MayHaveBeenProcessed,
        ] {
            drop(errors.get_or_create(&KindLabels { kind: kind.label() }));
        }
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
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests sent again because the upstream provably did not process them, by reason",
            retries.clone(),
        );
        for reason in RetryReason::ALL {
            drop(retries.get_or_create(&ReasonLabels {
                reason: reason.label(),
            }));
        }
        let realtime_sessions = Gauge::default();
        registry.register(
            "open_realtime_sessions",
            "WebSocket sessions (the Realtime API) open now",
            realtime_sessions.clone(),
        );
        UpstreamMetrics {
            errors,
            opened: PROTOCOLS
                .map(|protocol| opened.get_or_create_owned(&ProtocolLabels { protocol })),
            open: PROTOCOLS.map(|protocol| open.get_or_create_owned(&ProtocolLabels { protocol })),
            retries,
            realtime_sessions,
        }
    }

    pub(crate) fn error(&self, kind: UpstreamErrorKind) {
        self.errors
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    /// A new upstream connection; it counts as open until the guard is dropped.
    pub(crate) fn connection_opened(&self, http2: bool) -> OpenConnection {
        let index = usize::from(http2);
        self.opened[index].inc();
        let open = self.open[index].clone();
        open.inc();
        OpenConnection(open)
    }

    /// A WebSocket session; it counts as open until the guard is dropped.
    pub(crate) fn realtime_session_opened(&self) -> OpenConnection {
        self.realtime_sessions.inc();
        OpenConnection(self.realtime_sessions.clone())
    }

    /// A request sent again, and why.
    pub(crate) fn retry(&self, reason: RetryReason) {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }
}
