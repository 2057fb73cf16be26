//! The OTLP/HTTP protobuf body of a batch of spans, written straight from the SDK's
//! `SpanData` with prost's wire-format functions, by the message shapes of
//! `opentelemetry/proto/trace/v1/trace.proto` (1.x).
//!
//! The OTLP exporter crate rebuilds every span as owned protobuf structs first (a `String` for
//! each attribute's key and value) and cost about 31,000 instructions per exchange of two spans
//! (`benches/README.md`); written here, without an intermediate copy, it costs a fraction of
//! that. The resource and the instrumentation scope are encoded once, at start. The tests decode
//! every export with the official generated messages (`opentelemetry-proto`).

use bytes::BufMut;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use std::time::SystemTime;

/// The span flags' bits that say the parent's remoteness is known, and that it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The bytes of a `Resource` message and of an `InstrumentationScope` message.
pub(super) struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
    schema_url: Option<&'static str>,
}

impl Preamble {
    pub(super) fn new(
        resource: &[KeyValue],
        scope_name: &str,
        scope_version: &str,
        schema_url: Option<&'static str>,
    ) -> Preamble {
        let mut encoded = Vec::new();
        for kv in resource {
            message(&mut encoded, 1, key_value_len(kv), |b| key_value(b, kv));
        }
        let mut scope = Vec::new();
        string(&mut scope, 1, scope_name);
        string(&mut scope, 2, scope_version);
        Preamble {
            resource: encoded,
            scope,
            schema_url,
        }
    }
}

/// An `ExportTraceServiceRequest` of `spans`, into `out`.
pub(super) fn export_request(preamble: &Preamble, spans: &[SpanData], out: &mut Vec<u8>) {
    let span_lens: Vec<usize> = spans.iter().map(span_len).collect();
    let schema = preamble.schema_url.unwrap_or("");
    let scope_spans_len = field_len(1, preamble.scope.len())
        + span_lens.iter().map(|&n| field_len(2, n)).sum::<usize>()
        + string_len(3, schema);
    let resource_spans_len = field_len(1, preamble.resource.len())
        + field_len(2, scope_spans_len)
        + string_len(3, schema);
    out.reserve(field_len(1, resource_spans_len));
    // ExportTraceServiceRequest.resource_spans = 1
    message(out, 1, resource_spans_len, |b| {
        // ResourceSpans.resource = 1
        bytes(b, 1, &preamble.resource);
        // ResourceSpans.scope_spans = 2
        message(b, 2, scope_spans_len, |b| {
            // ScopeSpans.scope = 1
            bytes(b, 1, &preamble.scope);
            // ScopeSpans.spans = 2
            for (span, &len) in spans.iter().zip(&span_lens) {
                message(b, 2, len, |b| write_span(b, span));
            }
            string(b, 3, schema);
        });
        string(b, 3, schema);
    });
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn flags(span: &SpanData) -> u32 {
    let remote = if span.parent_span_is_remote {
        HAS_IS_REMOTE | IS_REMOTE
    } else {
        HAS_IS_REMOTE
    };
    u32::from(span.span_context.trace_flags().to_u8()) | remote
}

fn has_parent(span: &SpanData) -> bool {
    span.parent_span_id != opentelemetry::trace::SpanId::INVALID
}

/// `Span.status`'s message and code (`STATUS_CODE_OK` 1, `STATUS_CODE_ERROR` 2), if set.
fn status(span: &SpanData) -> Option<(&str, u64)> {
    match &span.status {
        Status::Unset => None,
        Status::Ok => Some(("", 1)),
        Status::Error { description } => Some((description, 2)),
    }
}

fn status_len(message: &str, code: u64) -> usize {
    string_len(2, message) + varint_len(3, code)
}

fn span_len(span: &SpanData) -> usize {
    let trace_state = span.span_context.trace_state().header();
    let mut len = field_len(1, 16) + field_len(2, 8) + string_len(3, &trace_state);
    if has_parent(span) {
        len += field_len(4, 8);
    }
    len += string_len(5, &span.name) + varint_len(6, kind(&span.span_kind)) + 9 + 9;
    len += span
        .attributes
        .iter()
        .map(|kv| field_len(9, key_value_len(kv)))
        .sum::<usize>();
    len += varint_len(10, u64::from(span.dropped_attributes_count));
    len += span
        .events
        .events
        .iter()
        .map(|e| field_len(11, event_len(e)))
        .sum::<usize>();
    len += varint_len(12, u64::from(span.events.dropped_count));
    if let Some((message, code)) = status(span) {
        len += field_len(15, status_len(message, code));
    }
    len + 2 + 4
}

fn write_span(b: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes(b, 1, &context.trace_id().to_bytes());
    bytes(b, 2, &context.span_id().to_bytes());
    string(b, 3, &context.trace_state().header());
    if has_parent(span) {
        bytes(b, 4, &span.parent_span_id.to_bytes());
    }
    string(b, 5, &span.name);
    varint(b, 6, kind(&span.span_kind));
    fixed64(b, 7, nanos(span.start_time));
    fixed64(b, 8, nanos(span.end_time));
    for kv in &span.attributes {
        message(b, 9, key_value_len(kv), |b| key_value(b, kv));
    }
    varint(b, 10, u64::from(span.dropped_attributes_count));
    for event in &span.events.events {
        message(b, 11, event_len(event), |b| {
            fixed64(b, 1, nanos(event.timestamp));
            string(b, 2, &event.name);
            for kv in &event.attributes {
                message(b, 3, key_value_len(kv), |b| key_value(b, kv));
            }
            varint(b, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint(b, 12, u64::from(span.events.dropped_count));
    if let Some((message_text, code)) = status(span) {
        message(b, 15, status_len(message_text, code), |b| {
            string(b, 2, message_text);
            varint(b, 3, code);
        });
    }
    // Span.flags = 16, fixed32: always written (a field of number 16 takes a 2-byte key).
    encode_key(16, WireType::ThirtyTwoBit, b);
    b.put_u32_le(flags(span));
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    9 + string_len(2, &event.name)
        + event
            .attributes
            .iter()
            .map(|kv| field_len(3, key_value_len(kv)))
            .sum::<usize>()
        + varint_len(4, u64::from(event.dropped_attributes_count))
}

/// `AnyValue`'s length: one of its fields. An array, which no span of the proxy's carries, is
/// written as the string its `Display` gives.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::String(s) => field_len(1, s.as_str().len()),
        Value::Bool(_) => 2,
        Value::I64(n) => 1 + encoded_len_varint(*n as u64),
        Value::F64(_) => 9,
        other => field_len(1, other.to_string().len()),
    }
}

fn any_value(b: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string_always(b, 1, s.as_str()),
        Value::Bool(v) => {
            encode_key(2, WireType::Varint, b);
            encode_varint(u64::from(*v), b);
        }
        Value::I64(n) => {
            encode_key(3, WireType::Varint, b);
            encode_varint(*n as u64, b);
        }
        Value::F64(d) => {
            encode_key(4, WireType::SixtyFourBit, b);
            b.put_f64_le(*d);
        }
        other => string_always(b, 1, &other.to_string()),
    }
}

fn key_value_len(kv: &KeyValue) -> usize {
    string_len(1, kv.key.as_str()) + field_len(2, any_value_len(&kv.value))
}

fn key_value(b: &mut Vec<u8>, kv: &KeyValue) {
    string(b, 1, kv.key.as_str());
    message(b, 2, any_value_len(&kv.value), |b| any_value(b, &kv.value));
}

/// A length-delimited field of `len` bytes: its key and length, then what `body` writes.
fn message(b: &mut Vec<u8>, tag: u32, len: usize, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(len as u64, b);
    let start = b.len();
    body(b);
    debug_assert_eq!(b.len() - start, len, "field {tag}");
}

fn bytes(b: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(value.len() as u64, b);
    b.extend_from_slice(value);
}

/// A string field, left out when empty, as proto3 leaves out defaults.
fn string(b: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        bytes(b, tag, value.as_bytes());
    }
}

/// A string field written even when empty: a oneof member, whose presence is the point.
fn string_always(b: &mut Vec<u8>, tag: u32, value: &str) {
    bytes(b, tag, value.as_bytes());
}

/// A varint field, left out when zero.
fn varint(b: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, b);
        encode_varint(value, b);
    }
}

fn fixed64(b: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::SixtyFourBit, b);
    b.put_u64_le(value);
}

/// A length-delimited field's whole length (tags below 16 take one byte).
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(tag, value.len())
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}
