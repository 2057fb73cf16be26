//! The upstream side: connections opened and open by protocol, failures, retries, and
//! WebSocket sessions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use super::labels::{
    AttemptLabels, FailoverLabels, KindLabels, Label, ProtocolLabels, ReasonLabels, UpstreamLabels,
};
use crate::outcome::{RetryReason, UpstreamErrorKind};

const PROTOCOLS: [&str; 2] = ["http1", "http2"];

/// An open upstream connection or session, counted in `/metrics` until this is dropped.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The attempts' result when the answer, or the failure, went to the client as it came.
pub(crate) const ANSWERED: &str = "answered";

pub(crate) struct UpstreamMetrics {
    errors: Family<KindLabels, Counter>,
    /// The two protocols' series, made at start: opening a connection allocates nothing.
    opened: [Counter; 2],
    open: [Gauge; 2],
    retries: Family<ReasonLabels, Counter>,
    realtime_sessions: Gauge,
    attempts: Family<AttemptLabels, Counter>,
    available: Family<UpstreamLabels, Gauge>,
    failovers: Family<FailoverLabels, Counter>,
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
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Attempts at each upstream, by result: answered (passed to the client), rate_limited (429), unavailable (503), key_rejected (401), server_error (500), unreachable (no connection, TLS), reset, timeout, failed (may have been processed)",
            attempts.clone(),
        );
        let available = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "upstream_available",
            "1 while an upstream takes requests, 0 while it cools down after a 429, a 503, a failed connection or a rejected key",
            available.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        registry.register(
            "upstream_failovers",
            "Requests sent on to another upstream, by the one left, the one tried next, and why",
            failovers.clone(),
        );
        UpstreamMetrics {
            attempts,
            available,
            failovers,
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

    /// The series of `upstream`'s attempts whose answer went to the client: a handle the
    /// upstream keeps, so that the common case needs no label lookup.
    pub(crate) fn answered(&self, upstream: &Arc<str>) -> Counter {
        self.attempts.get_or_create_owned(&AttemptLabels {
            upstream: Label(upstream.clone()),
            result: ANSWERED,
        })
    }

    /// One attempt at `upstream`, and how it went.
    pub(crate) fn attempt(&self, upstream: &Arc<str>, result: &'static str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                upstream: Label(upstream.clone()),
                result,
            })
            .inc();
    }

    /// Whether `upstream` takes requests now.
    pub(crate) fn available(&self, upstream: &Arc<str>, available: bool) {
        self.available
            .get_or_create(&UpstreamLabels {
                upstream: Label(upstream.clone()),
            })
            .set(i64::from(available));
    }

    /// An upstream no longer in the set: its series go.
    pub(crate) fn removed(&self, upstream: &Arc<str>) {
        self.available.remove(&UpstreamLabels {
            upstream: Label(upstream.clone()),
        });
    }

    /// A request sent on from one upstream to the next.
    pub(crate) fn failover(&self, from: &Arc<str>, to: &Arc<str>, reason: &'static str) {
        self.failovers
            .get_or_create(&FailoverLabels {
                from: Label(from.clone()),
                to: Label(to.clone()),
                reason,
            })
            .inc();
    }
}
