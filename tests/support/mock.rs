//! An in-process hyper mock of OpenAI. Request headers script its answer:
//! - `x-mock-status: 429`: answer that status with an OpenAI error body;
//! - `x-mock-head-delay-ms: N`: wait before the response head;
//! - `x-mock-events: N` and `x-mock-interval-ms: D`: an SSE stream of N events D ms apart,
//!   ending with `data: [DONE]`;
//! - `x-mock-chunks: N` with the same interval: a JSON answer in N chunks;
//! - `x-mock-binary: N` with the same interval: N chunks of 4 KiB of `audio/mpeg`;
//! - `x-mock-gzip: 1`: a `Content-Encoding: gzip` answer with fixed bytes.
//!
//! It records every request (with its whole body), when each connection closed, and every
//! stream that the other side cancelled.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const CHAT_JSON: &str = r#"{"id":"chatcmpl-123","object":"chat.completion","created":1741570283,"model":"gpt-4","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}"#;
pub const TRANSCRIPTION_JSON: &str = r#"{"text":"Imagine the wildest idea that you've ever had.","usage":{"type":"tokens","input_tokens":14,"output_tokens":45,"total_tokens":59}}"#;
pub const GZIP_BYTES: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0x56, 0x2a,
];

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// The whole body; `None` if it could not be read to its end.
    pub body: Option<Bytes>,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct MockLog {
    pub requests: Vec<Seen>,
    pub connections_opened: usize,
    /// When each connection ended, for cancellation tests.
    pub connections_closed: Vec<Instant>,
    /// Streams whose receiver went away before the last event, and when that was noticed.
    pub streams_cancelled: Vec<Instant>,
    pub streams_completed: usize,
    /// Requests whose body broke off before its end.
    pub bodies_aborted: Vec<Instant>,
}

#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<MockLog>>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(MockLog::default()));
        let mock = MockUpstream {
            addr,
            log: log.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                log.lock().unwrap().connections_opened += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let service_log = log.clone();
                    let service = service_fn(move |req| answer(req, service_log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    log.lock().unwrap().connections_closed.push(Instant::now());
                });
            }
        });
        mock
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    pub fn last_request(&self) -> Seen {
        self.requests().pop().expect("the mock saw no request")
    }

    pub fn closed_connections(&self) -> Vec<Instant> {
        self.log.lock().unwrap().connections_closed.clone()
    }

    pub fn cancelled_streams(&self) -> Vec<Instant> {
        self.log.lock().unwrap().streams_cancelled.clone()
    }

    /// Waits up to `limit` for a connection to close or a stream to be cancelled after
    /// `since`, and returns when that happened.
    pub async fn wait_for_drop(&self, since: Instant, limit: Duration) -> Option<Instant> {
        let until = Instant::now() + limit;
        loop {
            {
                let log = self.log.lock().unwrap();
                let seen = log
                    .connections_closed
                    .iter()
                    .chain(log.streams_cancelled.iter())
                    .chain(log.bodies_aborted.iter())
                    .filter(|t| **t >= since)
                    .min()
                    .copied();
                if seen.is_some() {
                    return seen;
                }
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<MockLog>>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => Some(collected.to_bytes()),
        Err(_) => {
            log.lock().unwrap().bodies_aborted.push(Instant::now());
            None
        }
    };
    let headers = parts.headers.clone();
    log.lock().unwrap().requests.push(Seen {
        method: parts.method,
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body: body.clone(),
        at: Instant::now(),
    });

    if let Some(ms) = header_number(&headers, "x-mock-head-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header_number(&headers, "x-mock-status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let interval =
        Duration::from_millis(header_number(&headers, "x-mock-interval-ms").unwrap_or(0));
    let is_transcription = parts.uri.path().ends_with("/audio/transcriptions");

    let mut builder = Response::builder()
        .status(status)
        .header("x-request-id", "req_mock_upstream_1")
        .header("openai-processing-ms", "42")
        .header("x-ratelimit-remaining-requests", "4999")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5");

    if !status.is_success() {
        let error = format!(
            r#"{{"error":{{"message":"mock error {}","type":"requests","param":null,"code":"rate_limit_exceeded"}}}}"#,
            status.as_u16()
        );
        let response = builder
            .header("content-type", "application/json")
            .body(MockBody::full(error))
            .unwrap();
        return Ok(response);
    }

    if let Some(events) = header_number(&headers, "x-mock-events") {
        let frames = (0..events)
            .map(|i| {
                let chunk = if is_transcription {
                    format!("data: {{\"type\":\"transcript.text.delta\",\"delta\":\" word{i}\"}}\n\n")
                } else {
                    format!(
                        "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}},\"finish_reason\":null}}]}}\n\n"
                    )
                };
                Bytes::from(chunk)
            })
            .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")))
            .collect();
        builder = builder
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache");
        return Ok(builder
            .body(MockBody::paced(frames, interval, log))
            .unwrap());
    }
    if let Some(chunks) = header_number(&headers, "x-mock-chunks") {
        let json = CHAT_JSON.as_bytes();
        let size = json.len().div_ceil(chunks.max(1) as usize);
        let frames = json.chunks(size).map(Bytes::copy_from_slice).collect();
        builder = builder.header("content-type", "application/json");
        return Ok(builder
            .body(MockBody::paced(frames, interval, log))
            .unwrap());
    }
    if let Some(chunks) = header_number(&headers, "x-mock-binary") {
        // Audio bytes, chunked, as `audio/speech` answers.
        let frames = (0..chunks)
            .map(|i| Bytes::from(vec![i as u8; 4096]))
            .collect();
        builder = builder.header("content-type", "audio/mpeg");
        return Ok(builder
            .body(MockBody::paced(frames, interval, log))
            .unwrap());
    }
    if headers.contains_key("x-mock-gzip") {
        builder = builder
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("content-length", GZIP_BYTES.len());
        return Ok(builder
            .body(MockBody::full(Bytes::from_static(GZIP_BYTES)))
            .unwrap());
    }
    let json = if is_transcription {
        TRANSCRIPTION_JSON
    } else {
        CHAT_JSON
    };
    let response = builder
        .header("content-type", "application/json")
        .header("content-length", json.len())
        .body(MockBody::full(json))
        .unwrap();
    Ok(response)
}

/// The mock's body: all at once, or frames sent from a task at a pace, so that the task
/// notices when the reader goes away.
pub enum MockBody {
    Full(Option<Bytes>),
    Paced(mpsc::Receiver<Bytes>),
}

impl MockBody {
    fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(bytes.into()))
    }

    fn paced(frames: Vec<Bytes>, interval: Duration, log: Arc<Mutex<MockLog>>) -> MockBody {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for (i, frame) in frames.into_iter().enumerate() {
                if i > 0 && !interval.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = tx.closed() => {
                            log.lock().unwrap().streams_cancelled.push(Instant::now());
                            return;
                        }
                    }
                }
                if tx.send(frame).await.is_err() {
                    log.lock().unwrap().streams_cancelled.push(Instant::now());
                    return;
                }
            }
            log.lock().unwrap().streams_completed += 1;
        });
        MockBody::Paced(rx)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Paced(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// The exact bytes of an SSE stream of `events` chat events, as the mock sends them.
pub fn expected_chat_sse(events: usize) -> String {
    let mut s = String::new();
    for i in 0..events {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str("data: [DONE]\n\n");
    s
}
