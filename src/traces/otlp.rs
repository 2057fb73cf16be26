//! The OTLP/HTTP protobuf body of a batch of exchanges' spans, written in protobuf's wire
//! format by the message shapes of `opentelemetry/proto/trace/v1/trace.proto` (1.x), straight
//! from each exchange's [`Finished`] record, into a buffer sized exactly beforehand.
//!
//! The SDK's spans and the OTLP exporter crate cost about 38,000 instructions per exchange of
//! two spans, most of it owned strings built for every attribute, three times over (the span,
//! the protobuf structs, their drop); see `benches/README.md`. Written here, each attribute is
//! a `&'static` key and a borrowed value, and each message's length is counted before it is
//! written, so nothing is copied twice. The resource is encoded once, at start. The tests decode
//! every export with the official generated messages (`opentelemetry-proto`).

use std::borrow::Cow;
use std::time::SystemTime;

use super::names;
use super::spans::{Ended, Finished};

/// The span flags' bits that say the parent's remoteness is known, and that it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
const SERVER: u64 = 2;
const CLIENT: u64 = 3;
/// `Status.code`: `STATUS_CODE_ERROR`.
const ERROR: u64 = 2;

/// An attribute's value, borrowed from the record.
#[derive(Clone, Copy)]
enum Attr<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

type Attrs<'a> = Vec<(&'a str, Attr<'a>)>;

/// The encoded `Resource` message and `InstrumentationScope` message, and the schema URL.
pub(super) struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
    schema_url: &'static str,
}

impl Preamble {
    pub(super) fn new(
        resource: &[(String, String)],
        scope_name: &str,
        scope_version: &str,
        schema_url: Option<&'static str>,
    ) -> Preamble {
        let attrs: Attrs<'_> = resource
            .iter()
            .map(|(k, v)| (k.as_str(), Attr::Str(v.as_str())))
            .collect();
        // Its lengths are those the tests decode: a miscount would be a bug, not an input.
        let encoded =
            written(key_values_len(1, &attrs), |b| key_values(b, 1, &attrs)).unwrap_or_default();
        let scope = written(
            string_len(1, scope_name) + string_len(2, scope_version),
            |b| {
                string(b, 1, scope_name);
                string(b, 2, scope_version);
            },
        )
        .unwrap_or_default();
        Preamble {
            resource: encoded,
            scope,
            schema_url: schema_url.unwrap_or(""),
        }
    }
}

/// One span as it is written.
struct SpanOut<'a> {
    trace_id: &'a [u8; 16],
    span_id: &'a [u8; 8],
    parent: Option<&'a [u8; 8]>,
    parent_remote: bool,
    trace_state: &'a str,
    /// The name, in parts written one after another.
    name: [&'a str; 3],
    kind: u64,
    start: u64,
    end: u64,
    attributes: Attrs<'a>,
    events: Vec<EventOut<'a>>,
    error: Option<&'a str>,
}

struct EventOut<'a> {
    at: u64,
    name: &'static str,
    attributes: Attrs<'a>,
}

/// An `ExportTraceServiceRequest` of the spans of `exchanges`, sized exactly before it is
/// written: one allocation, handed to hyper as it is; `None` if its lengths were miscounted.
pub(super) fn export_request(preamble: &Preamble, exchanges: &[Finished]) -> Option<Vec<u8>> {
    // Each exchange's `error.type`, which both its spans borrow.
    let errors: Vec<Option<Cow<'static, str>>> =
        exchanges.iter().map(|f| error_type(&f.ended)).collect();
    let mut spans = Vec::with_capacity(exchanges.len() * 2);
    for (finished, error) in exchanges.iter().zip(&errors) {
        spans_of(finished, error.as_deref(), &mut spans);
    }
    let lens: Vec<usize> = spans.iter().map(span_len).collect();
    let schema = preamble.schema_url;
    let scope_spans_len = field_len(1, preamble.scope.len())
        + lens.iter().map(|&n| field_len(2, n)).sum::<usize>()
        + string_len(3, schema);
    let resource_spans_len = field_len(1, preamble.resource.len())
        + field_len(2, scope_spans_len)
        + string_len(3, schema);
    // ExportTraceServiceRequest.resource_spans = 1
    written(field_len(1, resource_spans_len), |b| {
        message(b, 1, resource_spans_len, |b| {
            // ResourceSpans.resource = 1, .scope_spans = 2, .schema_url = 3
            bytes(b, 1, &preamble.resource);
            message(b, 2, scope_spans_len, |b| {
                // ScopeSpans.scope = 1, .spans = 2, .schema_url = 3
                bytes(b, 1, &preamble.scope);
                for (span, &len) in spans.iter().zip(&lens) {
                    message(b, 2, len, |b| write_span(b, span));
                }
                string(b, 3, schema);
            });
            string(b, 3, schema);
        })
    })
}

/// `error.type`: the upstream's status when it refused or failed, else how the exchange ended
/// when it did not complete.
fn error_type(e: &Ended) -> Option<Cow<'static, str>> {
    let status = if e.upstream_status != 0 {
        e.upstream_status
    } else {
        e.status
    };
    if status >= 400 {
        Some(Cow::Owned(status.to_string()))
    } else {
        (!e.completed).then_some(Cow::Borrowed(e.outcome))
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn count(n: u64) -> Attr<'static> {
    Attr::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The `SERVER` span of an exchange, and its `CLIENT` span if the request went upstream.
fn spans_of<'a>(finished: &'a Finished, error: Option<&'a str>, out: &mut Vec<SpanOut<'a>>) {
    let s = &finished.started;
    let f = &finished.ended;
    let trace_state = s
        .trace_state
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request_id = f.request_id.to_str().unwrap_or("-");
    let end = nanos(finished.at);

    let mut server = vec![
        ("http.request.method", Attr::Str(s.method)),
        ("http.route", Attr::Str(&s.route)),
        ("http.response.status_code", Attr::Int(i64::from(f.status))),
        ("memoctopus.client", Attr::Str(&f.client)),
        ("memoctopus.request_id", Attr::Str(request_id)),
        ("memoctopus.outcome", Attr::Str(f.outcome)),
    ];
    if let Some(code) = f.error_code {
        server.push(("memoctopus.error_code", Attr::Str(code)));
    }
    if let Some(error) = error {
        server.push(("error.type", Attr::Str(error)));
    }
    // A server span is an error only when the proxy or the upstream failed the client.
    let server_failed = f.status >= 500 || (!f.completed && f.status == 0);
    out.push(SpanOut {
        trace_id: &s.ids.trace,
        span_id: &s.ids.server,
        parent: s.ids.parent.as_ref(),
        parent_remote: true,
        trace_state,
        name: [s.method, " ", &s.route],
        kind: SERVER,
        start: nanos(s.server_started),
        end,
        attributes: server,
        events: Vec::new(),
        error: server_failed.then(|| error.unwrap_or(f.outcome)),
    });

    let Some(client_started) = s.client_started else {
        return;
    };
    let mut client: Attrs<'a> = Vec::with_capacity(24);
    client.push(("http.request.method", Attr::Str(s.method)));
    if let Some((authority, azure)) = &s.target {
        client.push((names::PROVIDER, Attr::Str(names::provider(*azure))));
        client.push(("server.address", Attr::Str(authority.host())));
        let port = authority.port_u16().unwrap_or(443);
        client.push(("server.port", Attr::Int(i64::from(port))));
    }
    if f.upstream_status != 0 {
        client.push((
            "http.response.status_code",
            Attr::Int(i64::from(f.upstream_status)),
        ));
    }
    let model = f.model.as_ref().map(|m| m.as_str());
    if let Some(operation) = s.operation {
        client.push((names::OPERATION, Attr::Str(operation)));
        client.push((names::REQUEST_STREAM, Attr::Bool(f.stream)));
        if let Some(model) = model {
            client.push((names::REQUEST_MODEL, Attr::Str(model)));
            client.push((names::RESPONSE_MODEL, Attr::Str(model)));
        }
        if let Some(id) = &f.response_id {
            client.push((names::RESPONSE_ID, Attr::Str(id.as_str())));
        }
        if let Some(tokens) = f.reported {
            client.push((names::INPUT_TOKENS, count(tokens.input)));
            client.push((names::OUTPUT_TOKENS, count(tokens.output)));
            client.push((names::CACHE_READ_TOKENS, count(tokens.cached)));
            client.push((names::REASONING_TOKENS, count(tokens.reasoning)));
        }
        if let (true, Some(first)) = (f.stream, s.first_chunk) {
            let after = first.duration_since(client_started).unwrap_or_default();
            client.push((
                names::TIME_TO_FIRST_CHUNK,
                Attr::Double(after.as_secs_f64()),
            ));
        }
    }
    client.push(("memoctopus.usage", Attr::Str(f.usage)));
    client.push(("memoctopus.client", Attr::Str(&f.client)));
    client.push(("memoctopus.request_id", Attr::Str(request_id)));
    if let Some(id) = f.upstream_request_id.as_ref().and_then(|v| v.to_str().ok()) {
        client.push(("memoctopus.upstream_request_id", Attr::Str(id)));
    }
    if let Some(upstream) = &f.upstream {
        client.push(("memoctopus.upstream", Attr::Str(upstream)));
    }
    client.push(("memoctopus.attempts", Attr::Int(i64::from(f.attempts))));
    if let Some(error) = error {
        client.push(("error.type", Attr::Str(error)));
    }
    let events = s
        .resent
        .iter()
        .map(|again| {
            let mut attributes = vec![("memoctopus.reason", Attr::Str(again.reason))];
            let name = match &again.from {
                Some(from) => {
                    attributes.push(("memoctopus.upstream", Attr::Str(from)));
                    "memoctopus.failover"
                }
                None => "memoctopus.retry",
            };
            EventOut {
                at: nanos(again.at),
                name,
                attributes,
            }
        })
        .collect();
    let name = match (s.operation, model) {
        (Some(operation), Some(model)) => [operation, " ", model],
        (Some(operation), None) => [operation, "", ""],
        (None, _) => [s.method, "", ""],
    };
    out.push(SpanOut {
        trace_id: &s.ids.trace,
        span_id: &s.ids.client,
        parent: Some(&s.ids.server),
        parent_remote: false,
        trace_state,
        name,
        kind: CLIENT,
        start: nanos(client_started),
        end,
        attributes: client,
        events,
        error,
    });
}

fn name_len(name: &[&str; 3]) -> usize {
    name.iter().map(|p| p.len()).sum()
}

fn span_len(span: &SpanOut<'_>) -> usize {
    let mut len = field_len(1, 16) + field_len(2, 8) + string_len(3, span.trace_state);
    if span.parent.is_some() {
        len += field_len(4, 8);
    }
    len += field_len(5, name_len(&span.name)) + varint_len(6, span.kind) + 9 + 9;
    len += key_values_len(9, &span.attributes);
    len += span
        .events
        .iter()
        .map(|e| field_len(11, event_len(e)))
        .sum::<usize>();
    if let Some(message) = span.error {
        len += field_len(15, status_len(message));
    }
    // Span.flags = 16, fixed32: a 2-byte key and 4 bytes.
    len + 2 + 4
}

fn write_span(b: &mut Writer<'_>, span: &SpanOut<'_>) {
    bytes(b, 1, span.trace_id);
    bytes(b, 2, span.span_id);
    string(b, 3, span.trace_state);
    if let Some(parent) = span.parent {
        bytes(b, 4, parent);
    }
    b.key(5, LEN);
    b.varint(name_len(&span.name) as u64);
    for part in span.name {
        b.put(part.as_bytes());
    }
    varint(b, 6, span.kind);
    fixed64(b, 7, span.start);
    fixed64(b, 8, span.end);
    key_values(b, 9, &span.attributes);
    for event in &span.events {
        message(b, 11, event_len(event), |b| {
            fixed64(b, 1, event.at);
            string(b, 2, event.name);
            key_values(b, 3, &event.attributes);
        });
    }
    if let Some(text) = span.error {
        message(b, 15, status_len(text), |b| {
            string(b, 2, text);
            varint(b, 3, ERROR);
        });
    }
    let mut flags = 0x01 | HAS_IS_REMOTE;
    if span.parent.is_some() && span.parent_remote {
        flags |= IS_REMOTE;
    }
    b.key(16, I32);
    b.put(&flags.to_le_bytes());
}

fn status_len(message: &str) -> usize {
    string_len(2, message) + varint_len(3, ERROR)
}

fn event_len(event: &EventOut<'_>) -> usize {
    9 + string_len(2, event.name) + key_values_len(3, &event.attributes)
}

/// `AnyValue`'s length: one of its fields.
fn any_value_len(value: Attr<'_>) -> usize {
    match value {
        Attr::Str(s) => field_len(1, s.len()),
        Attr::Bool(_) => 2,
        Attr::Int(n) => 1 + encoded_len_varint(n as u64),
        Attr::Double(_) => 9,
    }
}

fn any_value(b: &mut Writer<'_>, value: Attr<'_>) {
    match value {
        // A oneof member is written even when empty: its presence is the value.
        Attr::Str(s) => bytes(b, 1, s.as_bytes()),
        Attr::Bool(v) => {
            b.key(2, VARINT);
            b.varint(u64::from(v));
        }
        Attr::Int(n) => {
            b.key(3, VARINT);
            b.varint(n as u64);
        }
        Attr::Double(d) => {
            b.key(4, I64);
            b.put(&d.to_le_bytes());
        }
    }
}

fn key_value_len(key: &str, value: Attr<'_>) -> usize {
    string_len(1, key) + field_len(2, any_value_len(value))
}

fn key_values_len(tag: u32, attrs: &Attrs<'_>) -> usize {
    attrs
        .iter()
        .map(|&(k, v)| field_len(tag, key_value_len(k, v)))
        .sum()
}

/// Each attribute as a `KeyValue` field numbered `tag`.
fn key_values(b: &mut Writer<'_>, tag: u32, attrs: &Attrs<'_>) {
    for &(key, value) in attrs {
        message(b, tag, key_value_len(key, value), |b| {
            string(b, 1, key);
            message(b, 2, any_value_len(value), |b| any_value(b, value));
        });
    }
}

/// A length-delimited field of `len` bytes: its key and length, then what `body` writes.
fn message(b: &mut Writer<'_>, tag: u32, len: usize, body: impl FnOnce(&mut Writer<'_>)) {
    b.key(tag, LEN);
    b.varint(len as u64);
    let start = b.at;
    body(b);
    debug_assert_eq!(b.at - start, len, "field {tag}");
}

fn bytes(b: &mut Writer<'_>, tag: u32, value: &[u8]) {
    b.key(tag, LEN);
    b.varint(value.len() as u64);
    b.put(value);
}

/// A string field, left out when empty, as proto3 leaves out defaults.
fn string(b: &mut Writer<'_>, tag: u32, value: &str) {
    if !value.is_empty() {
        bytes(b, tag, value.as_bytes());
    }
}

/// A varint field, left out when zero.
fn varint(b: &mut Writer<'_>, tag: u32, value: u64) {
    if value != 0 {
        b.key(tag, VARINT);
        b.varint(value);
    }
}

fn fixed64(b: &mut Writer<'_>, tag: u32, value: u64) {
    b.key(tag, I64);
    b.put(&value.to_le_bytes());
}

/// A length-delimited field's whole length.
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

/// Protobuf's wire types.
const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// The bytes of a varint.
fn encoded_len_varint(value: u64) -> usize {
    // One byte for every 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes into a buffer sized beforehand; past its end it writes nothing and says so, rather
/// than grow or panic.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.at..self.at + bytes.len()) {
            Some(to) => {
                to.copy_from_slice(bytes);
                self.at += bytes.len();
            }
            None => self.overflow = true,
        }
    }

    /// One byte: written in place, as most keys, lengths and varints are one byte, and a
    /// call to `memcpy` costs more than the byte.
    fn byte(&mut self, value: u8) {
        match self.buf.get_mut(self.at) {
            Some(slot) => {
                *slot = value;
                self.at += 1;
            }
            None => self.overflow = true,
        }
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn key(&mut self, tag: u32, wire_type: u32) {
        self.varint(u64::from(tag << 3 | wire_type));
    }
}

/// A message of `len` bytes, written by `body` into a buffer of its own; `None` if `body`
/// wrote another length than `len` (a miscount, which no test has seen).
fn written(len: usize, body: impl FnOnce(&mut Writer<'_>)) -> Option<Vec<u8>> {
    let mut out = vec![0; len];
    let mut b = Writer {
        buf: &mut out,
        at: 0,
        overflow: false,
    };
    body(&mut b);
    let exact = !b.overflow && b.at == len;
    debug_assert!(exact, "wrote {} of {len} bytes", b.at);
    exact.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varint_takes_the_bytes_its_length_says() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let out = written(encoded_len_varint(value), |b| b.varint(value)).unwrap();
            assert_eq!(out.len(), encoded_len_varint(value), "{value}");
            assert!(out[..out.len() - 1].iter().all(|b| b & 0x80 != 0));
            assert_eq!(out[out.len() - 1] & 0x80, 0);
        }
        // Negative numbers are ten bytes, as protobuf writes an int64.
        assert_eq!(encoded_len_varint(-1i64 as u64), 10);
    }

    #[test]
    fn past_its_end_a_writer_writes_nothing_and_says_so() {
        let mut buf = [0u8; 3];
        let mut b = Writer {
            buf: &mut buf,
            at: 0,
            overflow: false,
        };
        b.put(b"ab");
        b.put(b"cd");
        assert!(b.overflow);
        assert_eq!(b.at, 2);
    }
}
