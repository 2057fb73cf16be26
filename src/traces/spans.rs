//! One exchange's spans: the `SERVER` span of the client's request, and under it the `CLIENT`
//! span of the upstream call with all its attempts, each retry or failover an event. Both end
//! where the exchange ends, with what its record knows then. No key, prompt or answer text is
//! ever put in a span: only names, numbers and the ids the proxy and the upstream give.

use std::borrow::Cow;
use std::time::SystemTime;

use http::header::HeaderValue;
use http::uri::Authority;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::names;
use crate::outcome::Resent;
use crate::usage::Tokens;

/// The spans of one exchange, while it runs.
pub(crate) struct Spans {
    /// Holds the `SERVER` span, and is the upstream call's parent.
    server: Context,
    tracer: SdkTracer,
    operation: Option<&'static str>,
    client: Option<Span>,
    client_started: Option<SystemTime>,
    first_chunk: Option<SystemTime>,
    target: Option<(Authority, bool)>,
}

/// What the exchange's record knows when it ends.
pub(crate) struct Ended<'a> {
    pub(crate) status: u16,
    pub(crate) upstream_status: u16,
    pub(crate) outcome: &'static str,
    pub(crate) completed: bool,
    pub(crate) error_code: Option<&'static str>,
    pub(crate) client: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) upstream_request_id: Option<&'a str>,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) attempts: u32,
    pub(crate) model: Option<&'a str>,
    pub(crate) response_id: Option<&'a str>,
    /// The tokens the upstream reported, if it did.
    pub(crate) reported: Option<Tokens>,
    /// How the exchange was charged: reported, estimated or none.
    pub(crate) usage: &'static str,
    pub(crate) stream: bool,
}

impl Spans {
    pub(super) fn new(tracer: SdkTracer, parent: &Context, method: &str, route: &str) -> Spans {
        let span = tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
            ])
            .start_with_context(&tracer, parent);
        Spans {
            server: parent.with_span(span),
            operation: names::operation(route),
            tracer,
            client: None,
            client_started: None,
            first_chunk: None,
            target: None,
        }
    }

    /// Starts the upstream call's span, once, and gives the `traceparent` that makes the
    /// upstream's spans its children.
    pub(crate) fn upstream_call(&mut self, method: &str) -> Option<HeaderValue> {
        if self.client.is_none() {
            let name = self.operation.unwrap_or(method).to_owned();
            let mut attributes = vec![KeyValue::new("http.request.method", method.to_owned())];
            if let Some(operation) = self.operation {
                attributes.push(KeyValue::new(names::OPERATION, operation));
            }
            let span = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Client)
                .with_attributes(attributes)
                .start_with_context(&self.tracer, &self.server);
            self.client_started = Some(SystemTime::now());
            self.client = Some(span);
        }
        let context = self
            .client
            .as_ref()
            .map(|span| span.span_context().clone())
            .unwrap_or_else(|| self.server.span().span_context().clone());
        traceparent(&context)
    }

    /// A frame of the answer reached the client.
    pub(crate) fn chunk(&mut self) {
        if self.first_chunk.is_none() {
            self.first_chunk = Some(SystemTime::now());
        }
    }

    /// Where the upstream call went last, and each time it was sent again.
    pub(crate) fn tried(&mut self, target: Option<(Authority, bool)>, resent: &[Resent]) {
        self.target = target;
        let Some(span) = &mut self.client else {
            return;
        };
        for again in resent {
            let mut attributes = vec![KeyValue::new("memoctopus.reason", again.reason)];
            let name = match &again.from {
                Some(from) => {
                    attributes.push(KeyValue::new("memoctopus.upstream", from.to_string()));
                    "memoctopus.failover"
                }
                None => "memoctopus.retry",
            };
            span.add_event_with_timestamp(name, again.at, attributes);
        }
    }

    /// Ends both spans with what the record knows.
    pub(crate) fn end(mut self, ended: &Ended<'_>) {
        let error = error_type(ended);
        if let Some(mut span) = self.client.take() {
            self.end_client(&mut span, ended, error.clone());
        }
        let span = self.server.span();
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(ended.status)),
            KeyValue::new("memoctopus.client", ended.client.to_owned()),
            KeyValue::new("memoctopus.request_id", ended.request_id.to_owned()),
            KeyValue::new("memoctopus.outcome", ended.outcome),
        ];
        if let Some(code) = ended.error_code {
            attributes.push(KeyValue::new("memoctopus.error_code", code));
        }
        if let Some(error) = &error {
            attributes.push(KeyValue::new("error.type", error.clone()));
        }
        span.set_attributes(attributes);
        // A server span is an error only when the proxy or the upstream failed the client.
        if ended.status >= 500 || (!ended.completed && ended.status == 0) {
            span.set_status(Status::error(error.unwrap_or(Cow::Borrowed(ended.outcome))));
        }
        span.end();
    }

    fn end_client(&self, span: &mut Span, ended: &Ended<'_>, error: Option<Cow<'static, str>>) {
        let mut attributes = Vec::with_capacity(16);
        if let Some((authority, azure)) = &self.target {
            attributes.push(KeyValue::new(names::PROVIDER, names::provider(*azure)));
            attributes.push(KeyValue::new("server.address", authority.host().to_owned()));
            let port = authority.port_u16().unwrap_or(443);
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        if ended.upstream_status != 0 {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(ended.upstream_status),
            ));
        }
        if self.operation.is_some() {
            attributes.push(KeyValue::new(names::REQUEST_STREAM, ended.stream));
            if let Some(model) = ended.model {
                attributes.push(KeyValue::new(names::REQUEST_MODEL, model.to_owned()));
                attributes.push(KeyValue::new(names::RESPONSE_MODEL, model.to_owned()));
                if let Some(operation) = self.operation {
                    span.update_name(format!("{operation} {model}"));
                }
            }
            if let Some(id) = ended.response_id {
                attributes.push(KeyValue::new(names::RESPONSE_ID, id.to_owned()));
            }
            if let Some(tokens) = ended.reported {
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                attributes.push(KeyValue::new(names::INPUT_TOKENS, count(tokens.input)));
                attributes.push(KeyValue::new(names::OUTPUT_TOKENS, count(tokens.output)));
                attributes.push(KeyValue::new(
                    names::CACHE_READ_TOKENS,
                    count(tokens.cached),
                ));
                attributes.push(KeyValue::new(
                    names::REASONING_TOKENS,
                    count(tokens.reasoning),
                ));
            }
            if let (true, Some(first), Some(started)) =
                (ended.stream, self.first_chunk, self.client_started)
            {
                let after = first.duration_since(started).unwrap_or_default();
                attributes.push(KeyValue::new(
                    names::TIME_TO_FIRST_CHUNK,
                    after.as_secs_f64(),
                ));
            }
        }
        attributes.push(KeyValue::new("memoctopus.usage", ended.usage));
        attributes.push(KeyValue::new("memoctopus.client", ended.client.to_owned()));
        attributes.push(KeyValue::new(
            "memoctopus.request_id",
            ended.request_id.to_owned(),
        ));
        if let Some(id) = ended.upstream_request_id {
            attributes.push(KeyValue::new(
                "memoctopus.upstream_request_id",
                id.to_owned(),
            ));
        }
        if let Some(upstream) = ended.upstream {
            attributes.push(KeyValue::new("memoctopus.upstream", upstream.to_owned()));
        }
        attributes.push(KeyValue::new(
            "memoctopus.attempts",
            i64::from(ended.attempts),
        ));
        if let Some(error) = &error {
            attributes.push(KeyValue::new("error.type", error.clone()));
            span.set_status(Status::error(error.clone()));
        }
        span.set_attributes(attributes);
        span.end();
    }
}

/// `error.type`: the upstream's status when it refused or failed, else how the exchange
/// ended when it did not complete.
fn error_type(ended: &Ended<'_>) -> Option<Cow<'static, str>> {
    let status = if ended.upstream_status != 0 {
        ended.upstream_status
    } else {
        ended.status
    };
    if status >= 400 {
        return Some(Cow::Owned(status.to_string()));
    }
    (!ended.completed).then_some(Cow::Borrowed(ended.outcome))
}

/// The W3C `traceparent` of a span: version 00, its trace and span ids, and its flags.
fn traceparent(context: &opentelemetry::trace::SpanContext) -> Option<HeaderValue> {
    let value = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    HeaderValue::from_str(&value).ok()
}
