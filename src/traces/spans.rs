//! One exchange's spans: the `SERVER` span of the client's request, and under it the `CLIENT`
//! span of the upstream call with all its attempts, each retry or failover an event.
//!
//! On the request path a span is only ids and times: the SDK gives the ids, reads the client's
//! `traceparent` and decides the sampling, and the rest waits for the exchange's end, where
//! its record's facts are copied once into a [`Finished`] for the export task. Its attributes
//! are made there, off the request path (`otlp.rs`). No key, prompt or answer text is ever
//! kept: only names, numbers, and the ids the proxy and the upstream give.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::HeaderValue;

use super::names;
use super::queue::Queue;
use crate::metrics::Metrics;
use crate::outcome::{Resent, Target};
use crate::usage::Tokens;

/// At most this much of a model name or an id is kept for a span: the upstream's request ids
/// are at most 128 bytes (a longer one is logged as `invalid`), and so are the names OpenAI
/// gives.
const NAME_BYTES: usize = 128;

/// A short string kept inline: a model name or an id. Copied, it keeps nothing else alive,
/// such as the read buffer a header value is a slice of.
#[derive(Clone, Copy)]
pub(crate) struct Short {
    bytes: [u8; NAME_BYTES],
    len: u8,
}

impl Short {
    /// `s`, if it is neither empty nor longer than [`NAME_BYTES`].
    pub(crate) fn new(s: &str) -> Option<Short> {
        Short::from_bytes(s.as_bytes())
    }

    /// A header's value, as [`Short::new`] takes a string; one that is not UTF-8 is written
    /// as none.
    pub(crate) fn from_bytes(s: &[u8]) -> Option<Short> {
        if s.is_empty() || s.len() > NAME_BYTES {
            return None;
        }
        let mut bytes = [0; NAME_BYTES];
        bytes[..s.len()].copy_from_slice(s);
        Some(Short {
            bytes,
            len: s.len() as u8,
        })
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).ok()
    }
}

/// The ids and sampling of one exchange's trace.
#[derive(Clone, Copy)]
pub(super) struct Ids {
    pub(super) trace: [u8; 16],
    pub(super) server: [u8; 8],
    pub(super) client: [u8; 8],
    /// The client's span, from its `traceparent`.
    pub(super) parent: Option<[u8; 8]>,
    pub(super) sampled: bool,
}

/// The spans of one exchange, while it runs.
pub(crate) struct Spans {
    sink: Arc<Sink>,
    started: Started,
}

/// What the spans know of themselves, from their start: ids, names and times.
pub(super) struct Started {
    pub(super) ids: Ids,
    /// The client's `tracestate`, kept for the spans as it came.
    pub(super) trace_state: Option<HeaderValue>,
    pub(super) method: &'static str,
    pub(super) route: Arc<str>,
    pub(super) operation: Option<&'static str>,
    pub(super) server_started: SystemTime,
    pub(super) client_started: Option<SystemTime>,
    pub(super) first_chunk: Option<SystemTime>,
    pub(super) target: Option<Arc<Target>>,
    pub(super) resent: Vec<Resent>,
}

/// What the exchange's record knows when it ends, as the spans keep it.
pub(crate) struct Ended {
    pub(crate) status: u16,
    pub(crate) upstream_status: u16,
    pub(crate) outcome: &'static str,
    pub(crate) completed: bool,
    pub(crate) error_code: Option<&'static str>,
    pub(crate) client: Arc<str>,
    /// The request id, unless it is longer than a [`Short`] (a client's may be).
    pub(crate) request_id: Option<Short>,
    pub(crate) upstream_request_id: Option<Short>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) attempts: u32,
    pub(crate) model: Option<Short>,
    pub(crate) response_id: Option<Short>,
    /// The tokens the upstream reported, if it did.
    pub(crate) reported: Option<Tokens>,
    /// How the exchange was charged: reported, estimated or none.
    pub(crate) usage: &'static str,
    pub(crate) stream: bool,
}

/// An exchange's spans once it ended, as the export task writes them.
pub(super) struct Finished {
    pub(super) started: Started,
    pub(super) at: SystemTime,
    pub(super) ended: Ended,
}

/// Where ended spans go, shared by every exchange of a proxy: the export queue, and the
/// counter of what it had no room for.
pub(super) struct Sink {
    pub(super) queue: Queue<Finished>,
    pub(super) metrics: Arc<Metrics>,
}

impl Started {
    /// The spans of the exchange: its `SERVER` span, and its `CLIENT` span if it went upstream.
    pub(super) fn spans(&self) -> u64 {
        1 + u64::from(self.client_started.is_some())
    }
}

impl Spans {
    pub(super) fn new(
        sink: Arc<Sink>,
        ids: Ids,
        trace_state: Option<HeaderValue>,
        method: &'static str,
        route: Arc<str>,
    ) -> Spans {
        Spans {
            sink,
            started: Started {
                ids,
                trace_state,
                method,
                operation: names::operation(&route),
                route,
                server_started: SystemTime::now(),
                client_started: None,
                first_chunk: None,
                target: None,
                resent: Vec::new(),
            },
        }
    }

    /// Starts the upstream call's span, once, and gives the `traceparent` that makes the
    /// upstream's spans its children.
    pub(crate) fn upstream_call(&mut self) -> Option<HeaderValue> {
        let started = &mut self.started;
        started.client_started.get_or_insert_with(SystemTime::now);
        traceparent(&started.ids.trace, &started.ids.client, started.ids.sampled)
    }

    /// A frame of the answer reached the client.
    pub(crate) fn chunk(&mut self) {
        if self.started.first_chunk.is_none() {
            self.started.first_chunk = Some(SystemTime::now());
        }
    }

    /// Where the upstream call went last, and each time it was sent again.
    pub(crate) fn tried(&mut self, target: Option<Arc<Target>>, resent: Vec<Resent>) {
        self.started.target = target;
        self.started.resent = resent;
    }

    /// Ends both spans with what the record knows: queued for export if sampled, or dropped
    /// and counted when the queue is full.
    pub(crate) fn end(self, ended: Ended) {
        if !self.started.ids.sampled {
            return;
        }
        let spans = self.started.spans();
        let finished = Finished {
            started: self.started,
            at: SystemTime::now(),
            ended,
        };
        if self.sink.queue.push(finished).is_err() {
            self.sink.metrics.traces.dropped.inc_by(spans);
        }
    }
}

/// The W3C `traceparent` of a span: version 00, its trace and span ids, and its flags.
fn traceparent(trace: &[u8; 16], span: &[u8; 8], sampled: bool) -> Option<HeaderValue> {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    hex(&mut out[3..35], trace);
    hex(&mut out[36..52], span);
    out[35] = b'-';
    out[52] = b'-';
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    HeaderValue::from_bytes(&out).ok()
}

/// `bytes` in lowercase hexadecimal, into `out`, twice as long.
fn hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_written_as_w3c_says() {
        let trace = [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ];
        let span = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        assert_eq!(
            traceparent(&trace, &span, true).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            traceparent(&trace, &span, false).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }
}
