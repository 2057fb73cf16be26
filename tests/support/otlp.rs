//! A real OTLP/HTTP receiver: it takes `POST /v1/traces`, decodes each export with the official
//! OpenTelemetry protobuf messages (`opentelemetry-proto`), and keeps the spans, the raw bytes
//! and the headers it got.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One span as exported, with its resource's attributes.
#[derive(Clone, Debug)]
pub struct Exported {
    pub span: Span,
    pub resource: HashMap<String, Value>,
    pub scope_schema_url: String,
}

impl Exported {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.span.attributes, key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            Value::IntValue(n) => Some(*n),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attribute(key)? {
            Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    }

    pub fn double(&self, key: &str) -> Option<f64> {
        match self.attribute(key)? {
            Value::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Received {
    spans: Vec<Exported>,
    raw: Vec<Bytes>,
    headers: Vec<HeaderMap>,
    undecodable: usize,
}

#[derive(Clone)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let received = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let received = received.clone();
                        async move { Ok::<_, hyper::Error>(take(request, &received).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver { addr, received }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Every byte of every export.
    pub fn raw(&self) -> Vec<u8> {
        let received = self.received.lock().unwrap();
        assert_eq!(received.undecodable, 0, "an export did not decode");
        received.raw.iter().flat_map(|b| b.to_vec()).collect()
    }

    pub fn headers(&self) -> Vec<HeaderMap> {
        self.received.lock().unwrap().headers.clone()
    }

    /// The spans of the exchange whose `memoctopus.request_id` is `id` (said by one of its
    /// spans: the client span, or the server span alone), once `count` of them arrived.
    pub async fn spans_of(&self, id: &str, count: usize) -> Vec<Exported> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.spans();
            let named = all
                .iter()
                .find(|s| s.str("memoctopus.request_id") == Some(id));
            let spans: Vec<Exported> = match named {
                Some(named) => {
                    // Its own span, and the spans it is the parent or the child of.
                    let of_it = |s: &Exported| {
                        s.span.trace_id == named.span.trace_id
                            && (s.span.span_id == named.span.span_id
                                || s.span.span_id == named.span.parent_span_id
                                || s.span.parent_span_id == named.span.span_id)
                    };
                    all.iter().filter(|s| of_it(s)).cloned().collect()
                }
                None => Vec::new(),
            };
            if spans.len() >= count {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} spans of {id} exported: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn take(request: Request<Incoming>, received: &Mutex<Received>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut received = received.lock().unwrap();
    received.headers.push(parts.headers.clone());
    received.raw.push(bytes.clone());
    let ok = parts.uri.path() == "/v1/traces"
        && parts.headers.get("content-type").map(|v| v.as_bytes())
            == Some(b"application/x-protobuf");
    match ExportTraceServiceRequest::decode(bytes) {
        Ok(export) if ok => {
            for resource_spans in export.resource_spans {
                let resource: HashMap<String, Value> = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|kv| Some((kv.key, kv.value?.value?)))
                    .collect();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        received.spans.push(Exported {
                            span,
                            resource: resource.clone(),
                            scope_schema_url: scope.schema_url.clone(),
                        });
                    }
                }
            }
        }
        _ => received.undecodable += 1,
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap()
}
