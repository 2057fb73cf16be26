//! The trace export: spans dropped because the queue was full, spans exported, and exports
//! that failed.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::labels::ResultLabels;

pub(crate) struct TraceMetrics {
    pub dropped: Counter,
    exports: Family<ResultLabels, Counter>,
    exported: Counter,
}

impl TraceMetrics {
    pub(super) fn register(registry: &mut Registry) -> TraceMetrics {
        let dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped, never waited for: the export queue was full (the collector slow or gone), or their batch failed",
            dropped.clone(),
        );
        let exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the collector accepted",
            exported.clone(),
        );
        let exports = Family::<ResultLabels, Counter>::default();
        registry.register(
            "trace_exports",
            "Batches of spans sent to the collector, by result: success, or error (the batch is dropped and its spans counted as dropped)",
            exports.clone(),
        );
        for result in ["success", "error"] {
            drop(exports.get_or_create(&ResultLabels { result }));
        }
        TraceMetrics {
            dropped,
            exports,
            exported,
        }
    }

    /// A batch of `spans` sent, accepted or not.
    pub(crate) fn exported(&self, spans: u64, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.exports.get_or_create(&ResultLabels { result }).inc();
        if ok {
            self.exported.inc_by(spans);
        } else {
            self.dropped.inc_by(spans);
        }
    }
}
