//! OpenTelemetry traces, exported by OTLP: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its
//! traces variant) is set. Each exchange has a `SERVER` span, continued from the client's
//! W3C `traceparent`, and under it a `CLIENT` span of the upstream call named by the GenAI
//! semantic conventions, whose context the upstream request carries.
//!
//! - [`names`]: the operations and the attribute names.
//! - [`spans`]: one exchange's spans, started, told what happened, and ended.
//! - [`otlp`]: a batch of spans as the OTLP protobuf body.
//! - [`collector`]: the HTTP client that carries the exports, on hyper.
//! - [`export`]: the bounded queue that drops and counts rather than wait, and the export task.

mod collector;
mod export;
mod names;
mod otlp;
mod spans;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Root, Sampling, TraceSettings};
use crate::metrics::Metrics;

pub(crate) use spans::{Ended, Spans};

/// The traces of a proxy: off, or a tracer whose spans go to the export queue.
#[derive(Clone, Default)]
pub(crate) struct Tracing {
    on: Option<Arc<On>>,
}

struct On {
    tracer: SdkTracer,
    /// Kept so that the tracer's processor lives as long as the proxy.
    _provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    flush: mpsc::Sender<export::Flush>,
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
        let mut resource = Resource::builder_empty()
            .with_attributes(
                settings
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_service_name(settings.service_name.clone());
        if !settings
            .resource
            .iter()
            .any(|(k, _)| k == "service.version")
        {
            resource = resource
                .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))]);
        }
        let resource = resource.build();
        let attributes: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let schema_url = names::schema_url(settings.names);
        let preamble =
            otlp::Preamble::new(&attributes, SCOPE, env!("CARGO_PKG_VERSION"), schema_url);
        let batching = export::Batching {
            max_queue: settings.max_queue,
            max_batch: settings.max_batch,
            delay: settings.delay,
        };
        let collector = collector::Collector::new(settings)?;
        let (queue, flush) = export::start(collector, preamble, batching, metrics);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(sampler(settings.sampling))
            .with_resource(resource)
            .build();
        let mut scope =
            InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION"));
        if let Some(url) = schema_url {
            scope = scope.with_schema_url(url);
        }
        let tracer = provider.tracer_with_scope(scope.build());
        Ok(Tracing {
            on: Some(Arc::new(On {
                tracer,
                _provider: provider,
                propagator: TraceContextPropagator::new(),
                flush,
            })),
        })
    }

    /// The spans of an exchange to `route`, continued from the client's `traceparent` and
    /// `tracestate`; `None` while traces are off.
    pub(crate) fn exchange(
        &self,
        headers: &HeaderMap,
        method: &str,
        route: &str,
    ) -> Option<Box<Spans>> {
        let on = self.on.as_ref()?;
        let parent = on.propagator.extract(&Headers(headers));
        Some(Box::new(Spans::new(
            on.tracer.clone(),
            &parent,
            method,
            route,
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
