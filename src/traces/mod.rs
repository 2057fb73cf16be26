//! OpenTelemetry traces, exported by OTLP: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its
//! traces variant) is set. Each exchange has a `SERVER` span, continued from the client's
//! W3C `traceparent`, and under it a `CLIENT` span of the upstream call named by the GenAI
//! semantic conventions, whose context the upstream request carries. The SDK reads the
//! `traceparent`, makes the ids and decides the sampling; the spans themselves are kept as
//! plain records, which cost a fraction of the SDK's (`otlp.rs` says how much).
//!
//! - [`queue`]: the bounded queue of ended spans, which wakes its taker only for a full batch.
//! - [`names`]: the operations and the attribute names.
//! - [`spans`]: one exchange's spans, started, told what happened, and ended.
//! - [`otlp`]: a batch of spans as the OTLP protobuf body.
//! - [`collector`]: the HTTP client that carries the exports, on hyper.
//! - [`export`]: the export task, which sends what the queue holds in batches.

mod collector;
mod export;
mod names;
mod otlp;
mod queue;
mod spans;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Root, Sampling, TraceSettings};
use crate::metrics::Metrics;

pub(crate) use spans::{Ended, Short, Spans};

/// The traces of a proxy: off, or the ids, the sampler and the export queue.
#[derive(Clone, Default)]
pub(crate) struct Tracing {
    on: Option<Arc<On>>,
}

struct On {
    sink: Arc<spans::Sink>,
    flush: mpsc::Sender<export::Flush>,
    propagator: TraceContextPropagator,
    ids: RandomIdGenerator,
    sampler: Sampler,
}

impl Tracing {
    /// Starts the export task, on the current runtime, when `settings` turn traces on.
    pub(crate) fn start(
        settings: Option<&TraceSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<Tracing, String> {
        let Some(settings) = settings else {
            return Ok(Tracing::default());
        };
        let mut resource = settings.resource.clone();
        resource.retain(|(k, _)| k != "service.name");
        resource.push(("service.name".to_owned(), settings.service_name.clone()));
        if !resource.iter().any(|(k, _)| k == "service.version") {
            resource.push((
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ));
        }
        let preamble = otlp::Preamble::new(
            &resource,
            SCOPE,
            env!("CARGO_PKG_VERSION"),
            names::schema_url(settings.names),
        );
        // The queue holds exchanges, each of two spans: the span bounds are halved.
        let batching = export::Batching {
            max_queue: settings.max_queue.div_ceil(2),
            max_batch: settings.max_batch.div_ceil(2),
            delay: settings.delay,
        };
        let collector = collector::Collector::new(settings)?;
        tracing::info!(
            endpoint = %settings.endpoint,
            sampler = ?settings.sampling,
            "traces on: OTLP over HTTP with protobuf"
        );
        let sink = Arc::new(spans::Sink {
            queue: queue::Queue::new(batching.max_queue, batching.max_batch),
            metrics,
        });
        let flush = export::start(collector, preamble, sink.clone(), &batching);
        Ok(Tracing {
            on: Some(Arc::new(On {
                sink,
                flush,
                propagator: TraceContextPropagator::new(),
                ids: RandomIdGenerator::default(),
                sampler: sampler(settings.sampling),
            })),
        })
    }

    /// The spans of an exchange to `route`, continued from the client's `traceparent` and
    /// `tracestate`, and sampled as the sampler says; `None` while traces are off.
    pub(crate) fn exchange(
        &self,
        headers: &HeaderMap,
        method: &Method,
        route: &Arc<str>,
    ) -> Option<Box<Spans>> {
        let on = self.on.as_ref()?;
        // Most requests carry no `traceparent`: they skip the propagator's context.
        let parent_cx = headers
            .contains_key(TRACEPARENT)
            .then(|| on.propagator.extract(&Headers(headers)));
        let parent = parent_cx
            .as_ref()
            .map(|cx| cx.span().span_context().clone())
            .filter(|parent| parent.is_valid());
        let (trace_id, parent_id) = match &parent {
            Some(parent) => (parent.trace_id(), Some(parent.span_id().to_bytes())),
            None => (on.ids.new_trace_id(), None),
        };
        let decision = on
            .sampler
            .should_sample(
                parent_cx.as_ref(),
                trace_id,
                "",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision;
        let ids = spans::Ids {
            trace: trace_id.to_bytes(),
            server: on.ids.new_span_id().to_bytes(),
            client: on.ids.new_span_id().to_bytes(),
            parent: parent_id,
            sampled: decision == SamplingDecision::RecordAndSample,
        };
        let trace_state = parent_id.and(headers.get("tracestate").cloned());
        Some(Box::new(Spans::new(
            on.sink.clone(),
            ids,
            trace_state,
            method_name(method),
            route.clone(),
        )))
    }

    /// Exports every span ended so far, waiting at most `within`: at the end of a drain.
    pub(crate) async fn flush(&self, within: Duration) {
        let Some(on) = &self.on else {
            return;
        };
        let (done, flushed) = oneshot::channel();
        if on.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(within, flushed).await;
        }
    }
}

/// `http.request.method`: the method's name, as a `&'static str` for the methods the routes
/// take.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

/// The header of a W3C trace context.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The instrumentation scope's name.
const SCOPE: &str = "memoctopus";

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn sampler(sampling: Sampling) -> Sampler {
    let root = |root| match root {
        Root::AlwaysOn => Sampler::AlwaysOn,
        Root::AlwaysOff => Sampler::AlwaysOff,
        Root::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    match sampling {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}
