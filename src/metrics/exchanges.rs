//! The exchanges: counted by route, method, status, outcome and client, timed and measured per
//! route, with the ones in progress.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{histogram, method_label, Label, RequestLabels, RouteLabels};
use crate::outcome::Outcome;
use crate::policy::routes::Routes;

/// The series of one forwarded route, created at start.
pub(crate) struct RouteMetrics {
    /// The route's configured pattern, such as `/v1/models/*`.
    pub name: Arc<str>,
    pub(super) label: Label,
    duration: Histogram,
    head: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    sse_events: Counter,
    cancellations: Counter,
}

/// What an exchange reports when it ends.
pub(crate) struct Ended<'a> {
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

pub(crate) struct ExchangeMetrics {
    requests: Family<RequestLabels, Counter>,
    routes: Vec<Arc<RouteMetrics>>,
    pub in_flight: Gauge,
    pub open_streams: Gauge,
    body_limit_rejections: Counter,
}

impl ExchangeMetrics {
    pub(super) fn register(registry: &mut Registry, routes: &Routes) -> ExchangeMetrics {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied exchanges, by route, method, status and outcome",
            requests.clone(),
        );
        let per_route = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<RouteLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let timed = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<RouteLabels, Histogram>::new_with_constructor(
                histogram as fn() -> Histogram,
            );
            registry.register(name, help, family.clone());
            family
        };
        let duration = timed(
            registry,
            "request_duration_seconds",
            "Whole exchange, request head to last byte",
        );
        let head = timed(
            registry,
            "upstream_head_seconds",
            "Request start to the upstream's response head",
        );
        let request_bytes = per_route(
            registry,
            "request_bytes",
            "Request body bytes forwarded upstream",
        );
        let response_bytes = per_route(
            registry,
            "response_bytes",
            "Response body bytes forwarded to clients",
        );
        let sse_events = per_route(
            registry,
            "sse_events",
            "Server-sent events forwarded to clients",
        );
        let cancellations = per_route(
            registry,
            "client_cancellations",
            "Exchanges the client abandoned before the end",
        );
        let body_limit_rejections = Counter::default();
        registry.register(
            "body_limit_rejections",
            "Requests refused for PROXY_MAX_BODY_BYTES",
            body_limit_rejections.clone(),
        );
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
        let routes = routes
            .forwarded_names()
            .map(|name| {
                let labels = RouteLabels {
                    route: name.to_owned(),
                };
                Arc::new(RouteMetrics {
                    name: Arc::from(name),
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
        ExchangeMetrics {
            requests,
            routes,
            in_flight,
            open_streams,
            body_limit_rejections,
        }
    }

    /// The series of the route at `index` in the route table.
    pub(crate) fn route(&self, index: usize) -> Option<Arc<RouteMetrics>> {
        self.routes.get(index).cloned()
    }

    pub(crate) fn ended(&self, ended: Ended<'_>) {
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
}
