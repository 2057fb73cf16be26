//! The OTLP/HTTP protobuf body of a batch of exchanges' spans, written in protobuf's wire
//! format by the message shapes of `opentelemetry/proto/trace/v1/trace.proto` (1.x), straight
//! from each exchange's [`Finished`] record, in one pass into one buffer.
//!
//! The SDK's spans and the OTLP exporter crate cost about 38,000 instructions per exchange of
//! two spans, most of it owned strings built for every attribute, three times over (the span,
//! the protobuf structs, their drop); see `benches/README.md`. Written here, each attribute is
//! a `&'static` key and a value borrowed from the record, written where it is read, with no
//! list of attributes or spans built first. A message's length goes before it, so each nested
//! message keeps room for its length and fills it in after; an attribute's length is counted
//! beforehand, as it costs a few additions. The resource is encoded once, at start. The tests
//! decode every export with the official generated messages (`opentelemetry-proto`).

use std::borrow::Cow;
use std::time::SystemTime;

use super::names;
use super::spans::{Ended, Finished, Short};

/// The span flags' bits that say the parent's remoteness is known, and that it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
const SERVER: u64 = 2;
const CLIENT: u64 = 3;
/// `Status.code`: `STATUS_CODE_ERROR`.
const ERROR: u64 = 2;

/// `Span.attributes`, `Span.events` and `Event.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_EVENTS: u32 = 11;
const EVENT_ATTRIBUTES: u32 = 3;

/// The room kept for a span's length, and for a batch's: two bytes count to 16 KiB, three to
/// 2 MiB; a body that needs more or fewer is moved once it is written.
const SPAN_ROOM: usize = 2;
const BATCH_ROOM: usize = 3;

/// The bytes an exchange's two spans take, about: the first batch's room.
const EXCHANGE_BYTES: usize = 1024;

/// An attribute's value, borrowed from the record.
#[derive(Clone, Copy)]
enum Attr<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

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
        let mut encoded = Out::with_capacity(256);
        for (key, value) in resource {
            // Resource.attributes = 1
            encoded.attr(1, key, Attr::Str(value));
        }
        let mut scope = Out::with_capacity(64);
        // InstrumentationScope.name = 1, .version = 2
        scope.string(1, scope_name);
        scope.string(2, scope_version);
        Preamble {
            resource: encoded.0,
            scope: scope.0,
            schema_url: schema_url.unwrap_or(""),
        }
    }
}

/// An `ExportTraceServiceRequest` of the spans of `exchanges`, in a buffer with room for
/// `hint` bytes (the last batch's length), handed to hyper as it is.
pub(super) fn export_request(preamble: &Preamble, exchanges: &[Finished], hint: usize) -> Vec<u8> {
    let schema = preamble.schema_url;
    let room = hint.max(exchanges.len() * EXCHANGE_BYTES) + preamble.resource.len() + 64;
    let mut out = Out::with_capacity(room);
    // ExportTraceServiceRequest.resource_spans = 1
    out.message(1, BATCH_ROOM, |out| {
        // ResourceSpans.resource = 1, .scope_spans = 2, .schema_url = 3
        out.bytes(1, &preamble.resource);
        out.message(2, BATCH_ROOM, |out| {
            // ScopeSpans.scope = 1, .spans = 2, .schema_url = 3
            out.bytes(1, &preamble.scope);
            for finished in exchanges {
                spans_of(out, finished);
            }
            out.string(3, schema);
        });
        out.string(3, schema);
    });
    out.0
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

/// What both spans of an exchange share.
struct Common<'a> {
    trace_id: &'a [u8; 16],
    trace_state: &'a str,
    end: u64,
}

/// A span's fields before its attributes: ids, name, kind and times.
struct Head<'a> {
    span_id: &'a [u8; 8],
    parent: Option<&'a [u8; 8]>,
    /// The name, in parts written one after another.
    name: [&'a str; 3],
    kind: u64,
    start: u64,
}

/// The `SERVER` span of an exchange, and its `CLIENT` span if the request went upstream.
fn spans_of(out: &mut Out, finished: &Finished) {
    let s = &finished.started;
    let f = &finished.ended;
    let common = Common {
        trace_id: &s.ids.trace,
        trace_state: s
            .trace_state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        end: nanos(finished.at),
    };
    let error = error_type(f);
    let error = error.as_deref();
    let request_id = f.request_id.as_ref().and_then(Short::as_str);

    // A server span is an error only when the proxy or the upstream failed the client.
    let server_failed = f.status >= 500 || (!f.completed && f.status == 0);
    let head = Head {
        span_id: &s.ids.server,
        parent: s.ids.parent.as_ref(),
        name: [s.method, " ", &s.route],
        kind: SERVER,
        start: nanos(s.server_started),
    };
    span(out, &common, &head, |out| {
        let a = SPAN_ATTRIBUTES;
        out.attr(a, "http.request.method", Attr::Str(s.method));
        out.attr(a, "http.route", Attr::Str(&s.route));
        out.attr(
            a,
            "http.response.status_code",
            Attr::Int(i64::from(f.status)),
        );
        out.attr(a, "memoctopus.outcome", Attr::Str(f.outcome));
        // Said once in a trace: by the client span, when there is one.
        if s.client_started.is_none() {
            out.attr(a, "memoctopus.client", Attr::Str(&f.client));
            if let Some(id) = request_id {
                out.attr(a, "memoctopus.request_id", Attr::Str(id));
            }
        }
        if let Some(code) = f.error_code {
            out.attr(a, "memoctopus.error_code", Attr::Str(code));
        }
        if let Some(error) = error {
            out.attr(a, "error.type", Attr::Str(error));
        }
        server_failed.then(|| error.unwrap_or(f.outcome))
    });

    let Some(client_started) = s.client_started else {
        return;
    };
    let model = f.model.as_ref().and_then(Short::as_str);
    let head = Head {
        span_id: &s.ids.client,
        parent: Some(&s.ids.server),
        name: match (s.operation, model) {
            (Some(operation), Some(model)) => [operation, " ", model],
            (Some(operation), None) => [operation, "", ""],
            (None, _) => [s.method, "", ""],
        },
        kind: CLIENT,
        start: nanos(client_started),
    };
    span(out, &common, &head, |out| {
        let a = SPAN_ATTRIBUTES;
        if let Some(target) = &s.target {
            out.attr(a, names::PROVIDER, Attr::Str(names::provider(target.azure)));
            out.attr(a, "server.address", Attr::Str(&target.host));
            out.attr(a, "server.port", Attr::Int(i64::from(target.port)));
        }
        if f.upstream_status != 0 {
            let status = Attr::Int(i64::from(f.upstream_status));
            out.attr(a, "http.response.status_code", status);
        }
        if let Some(operation) = s.operation {
            out.attr(a, names::OPERATION, Attr::Str(operation));
            out.attr(a, names::REQUEST_STREAM, Attr::Bool(f.stream));
            if let Some(model) = model {
                out.attr(a, names::REQUEST_MODEL, Attr::Str(model));
                out.attr(a, names::RESPONSE_MODEL, Attr::Str(model));
            }
            if let Some(id) = f.response_id.as_ref().and_then(Short::as_str) {
                out.attr(a, names::RESPONSE_ID, Attr::Str(id));
            }
            if let Some(tokens) = f.reported {
                out.attr(a, names::INPUT_TOKENS, count(tokens.input));
                out.attr(a, names::OUTPUT_TOKENS, count(tokens.output));
                out.attr(a, names::CACHE_READ_TOKENS, count(tokens.cached));
                out.attr(a, names::REASONING_TOKENS, count(tokens.reasoning));
            }
            if let (true, Some(first)) = (f.stream, s.first_chunk) {
                let after = first.duration_since(client_started).unwrap_or_default();
                let seconds = Attr::Double(after.as_secs_f64());
                out.attr(a, names::TIME_TO_FIRST_CHUNK, seconds);
            }
        }
        out.attr(a, "memoctopus.usage", Attr::Str(f.usage));
        out.attr(a, "memoctopus.client", Attr::Str(&f.client));
        if let Some(id) = request_id {
            out.attr(a, "memoctopus.request_id", Attr::Str(id));
        }
        if let Some(id) = f.upstream_request_id.as_ref().and_then(Short::as_str) {
            out.attr(a, "memoctopus.upstream_request_id", Attr::Str(id));
        }
        if let Some(upstream) = &f.upstream {
            out.attr(a, "memoctopus.upstream", Attr::Str(upstream));
        }
        // Like `http.request.resend_count`, said only when there was more than one.
        if f.attempts > 1 {
            out.attr(a, "memoctopus.attempts", Attr::Int(i64::from(f.attempts)));
        }
        if let Some(error) = error {
            out.attr(a, "error.type", Attr::Str(error));
        }
        for again in &s.resent {
            // Event.time_unix_nano = 1, .name = 2, .attributes = 3
            out.message(SPAN_EVENTS, 1, |out| {
                out.fixed64(1, nanos(again.at));
                let name = match again.from {
                    Some(_) => "memoctopus.failover",
                    None => "memoctopus.retry",
                };
                out.string(2, name);
                out.attr(
                    EVENT_ATTRIBUTES,
                    "memoctopus.reason",
                    Attr::Str(again.reason),
                );
                if let Some(from) = &again.from {
                    out.attr(EVENT_ATTRIBUTES, "memoctopus.upstream", Attr::Str(from));
                }
            });
        }
        error
    });
}

/// A `Span` field of `ScopeSpans`: its head, the attributes and events `body` writes, the
/// status `body` returns (an error's message, or none for unset), and its flags.
fn span<'a>(
    out: &mut Out,
    common: &Common<'_>,
    head: &Head<'_>,
    body: impl FnOnce(&mut Out) -> Option<&'a str>,
) {
    out.message(2, SPAN_ROOM, |out| {
        out.bytes(1, common.trace_id);
        out.bytes(2, head.span_id);
        out.string(3, common.trace_state);
        if let Some(parent) = head.parent {
            out.bytes(4, parent);
        }
        out.key(5, LEN);
        out.varint(head.name.iter().map(|p| p.len()).sum::<usize>() as u64);
        for part in head.name {
            out.put(part.as_bytes());
        }
        out.varint_field(6, head.kind);
        out.fixed64(7, head.start);
        out.fixed64(8, common.end);
        if let Some(text) = body(out) {
            // Status.message = 2, .code = 3
            out.message(15, 1, |out| {
                out.string(2, text);
                out.varint_field(3, ERROR);
            });
        }
        let mut flags = 0x01 | HAS_IS_REMOTE;
        // The server span's parent is the client's; the client span's is the server span.
        if head.parent.is_some() && head.kind == SERVER {
            flags |= IS_REMOTE;
        }
        out.key(16, I32);
        out.put(&flags.to_le_bytes());
    });
}

/// Protobuf's wire types.
const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// The bytes of a varint.
#[inline(always)]
fn encoded_len_varint(value: u64) -> usize {
    // One byte for every 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field's whole length.
#[inline(always)]
fn field_len(tag: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(tag << 3)) + encoded_len_varint(len as u64) + len
}

/// `AnyValue`'s length: one of its fields.
#[inline(always)]
fn any_value_len(value: Attr<'_>) -> usize {
    match value {
        Attr::Str(s) => field_len(1, s.len()),
        Attr::Bool(_) => 2,
        Attr::Int(n) => 1 + encoded_len_varint(n as u64),
        Attr::Double(_) => 9,
    }
}

/// A protobuf message being written, in a growing buffer.
struct Out(Vec<u8>);

impl Out {
    fn with_capacity(bytes: usize) -> Out {
        Out(Vec::with_capacity(bytes))
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    #[inline(always)]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    #[inline(always)]
    fn key(&mut self, tag: u32, wire_type: u32) {
        self.varint(u64::from(tag << 3 | wire_type));
    }

    #[inline(always)]
    fn bytes(&mut self, tag: u32, value: &[u8]) {
        self.key(tag, LEN);
        self.varint(value.len() as u64);
        self.put(value);
    }

    /// A string field, left out when empty, as proto3 leaves out defaults.
    #[inline(always)]
    fn string(&mut self, tag: u32, value: &str) {
        if !value.is_empty() {
            self.bytes(tag, value.as_bytes());
        }
    }

    /// A varint field, left out when zero.
    #[inline(always)]
    fn varint_field(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.key(tag, VARINT);
            self.varint(value);
        }
    }

    #[inline(always)]
    fn fixed64(&mut self, tag: u32, value: u64) {
        self.key(tag, I64);
        self.put(&value.to_le_bytes());
    }

    /// An attribute: a `KeyValue` field numbered `tag`, its length counted beforehand.
    #[inline(always)]
    fn attr(&mut self, tag: u32, key: &str, value: Attr<'_>) {
        let any = any_value_len(value);
        // KeyValue.key = 1, .value = 2
        let len = field_len(1, key.len()) + field_len(2, any);
        // Nearly every attribute is short: all its tags and lengths are one byte each, and it
        // is written in a few copies, not one push for each of them.
        if len < 0x80 && tag < 0x10 {
            self.put(&[(tag << 3 | LEN) as u8, len as u8, 0x0a, key.len() as u8]);
            self.put(key.as_bytes());
            match value {
                Attr::Str(s) => {
                    self.put(&[0x12, any as u8, 0x0a, s.len() as u8]);
                    self.put(s.as_bytes());
                }
                Attr::Bool(v) => self.put(&[0x12, 2, 0x10, u8::from(v)]),
                Attr::Int(n) => {
                    self.put(&[0x12, any as u8, 0x18]);
                    self.varint(n as u64);
                }
                Attr::Double(d) => {
                    self.put(&[0x12, 9, 0x21]);
                    self.put(&d.to_le_bytes());
                }
            }
            return;
        }
        self.key(tag, LEN);
        self.varint(len as u64);
        self.bytes(1, key.as_bytes());
        self.key(2, LEN);
        self.varint(any as u64);
        match value {
            // A oneof member is written even when empty: its presence is the value.
            Attr::Str(s) => self.bytes(1, s.as_bytes()),
            Attr::Bool(v) => {
                self.key(2, VARINT);
                self.varint(u64::from(v));
            }
            Attr::Int(n) => {
                self.key(3, VARINT);
                self.varint(n as u64);
            }
            Attr::Double(d) => {
                self.key(4, I64);
                self.put(&d.to_le_bytes());
            }
        }
    }

    /// A length-delimited field whose body `body` writes: `room` bytes are kept for its
    /// length, which is filled in once the body is written, and the body moved if its length
    /// takes more bytes or fewer.
    fn message(&mut self, tag: u32, room: usize, body: impl FnOnce(&mut Out)) {
        self.key(tag, LEN);
        let at = self.0.len();
        let start = at + room;
        self.0.resize(start, 0);
        body(self);
        let len = self.0.len() - start;
        let need = encoded_len_varint(len as u64);
        if need > room {
            self.0.resize(self.0.len() + need - room, 0);
            self.0.copy_within(start..start + len, at + need);
        } else if need < room {
            self.0.copy_within(start.., at + need);
            self.0.truncate(at + need + len);
        }
        let mut value = len as u64;
        for slot in &mut self.0[at..at + need] {
            *slot = (value as u8 & 0x7f) | if value >= 0x80 { 0x80 } else { 0 };
            value >>= 7;
        }
    }
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
            let mut out = Out::with_capacity(0);
            out.varint(value);
            assert_eq!(out.0.len(), encoded_len_varint(value), "{value}");
            assert!(out.0[..out.0.len() - 1].iter().all(|b| b & 0x80 != 0));
            assert_eq!(out.0[out.0.len() - 1] & 0x80, 0);
        }
        // Negative numbers are ten bytes, as protobuf writes an int64.
        assert_eq!(encoded_len_varint(-1i64 as u64), 10);
    }

    /// A message's length, written after its body whatever room was kept for it, is the
    /// varint `Out::varint` writes, followed by the body unchanged.
    #[test]
    fn a_message_s_length_is_filled_in_whatever_its_room() {
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut expected = Out::with_capacity(0);
            expected.bytes(7, &body);
            for room in [1, 2, 3] {
                let mut out = Out::with_capacity(0);
                out.message(7, room, |out| out.put(&body));
                assert!(out.0 == expected.0, "length {len} in a room of {room}");
            }
        }
    }
}
