//! Prometheus metrics, through `prometheus-client`: the official Prometheus client for Rust,
//! with no global registry and few dependencies.
//!
//! Labels have low cardinality only: route (a configured pattern), method, status code,
//! outcome, error kind, and the client's configured name. Never an id, a path a client chose,
//! or a key. Every family registers its own series, and the per-route series are created once
//! at start, so the hot path only touches atomics.

mod connections;
mod exchanges;
mod keys;
mod labels;
mod limits;
mod process;
mod traces;
mod upstream;
mod usage;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

pub(crate) use connections::ConnectionMetrics;
pub(crate) use exchanges::{Ended, ExchangeMetrics, RouteMetrics};
pub(crate) use keys::KeyMetrics;
pub(crate) use limits::LimitMetrics;
pub(crate) use traces::TraceMetrics;
pub(crate) use upstream::{OpenConnection, UpstreamMetrics, ANSWERED};
pub(crate) use usage::{UsageMetrics, UsageSeen};

use crate::policy::routes::Routes;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` shows, by family.
pub(crate) struct Metrics {
    registry: Registry,
    pub exchanges: ExchangeMetrics,
    pub connections: ConnectionMetrics,
    pub upstream: UpstreamMetrics,
    pub keys: KeyMetrics,
    pub limits: LimitMetrics,
    pub usage: UsageMetrics,
    pub traces: TraceMetrics,
}

impl Metrics {
    /// With at most `max_models` distinct `model` label values (`PROXY_USAGE_MAX_MODELS`).
    pub(crate) fn new(routes: &Routes, max_models: usize) -> Metrics {
        let mut registry = Registry::with_prefix("memoctopus");
        let usage = UsageMetrics::register(&mut registry, max_models);
        let limits = LimitMetrics::register(&mut registry);
        let exchanges = ExchangeMetrics::register(&mut registry, routes);
        let upstream = UpstreamMetrics::register(&mut registry);
        let keys = KeyMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry);
        let traces = TraceMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Metrics {
            registry,
            exchanges,
            connections,
            upstream,
            keys,
            limits,
            usage,
            traces,
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
