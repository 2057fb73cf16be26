//! An in-process hyper mock of OpenAI. Request headers script its answer:
//! - `x-mock-status: 429`: answer that status with an OpenAI error body (a 429 with OpenAI's
//!   `retry-after` and `x-ratelimit-*` headers);
//! - `x-mock-head-delay-ms: N`: wait before the response head;
//! - `x-mock-events: N` and `x-mock-interval-ms: D`: an SSE stream of N events D ms apart,
//!   ending with `data: [DONE]`;
//! - `x-mock-chunks: N` with the same interval: a JSON answer in N chunks;
//! - `x-mock-binary: N` with the same interval: N chunks of 4 KiB of `audio/mpeg`;
//! - `x-mock-gzip: 1`: a `Content-Encoding: gzip` answer with fixed bytes;
//! - `x-mock-request-id: V`: answer with `x-request-id: V` instead of `req_mock_upstream_1`;
//! - `x-mock-reset-after-head: 1`: the head and one chunk, then the stream is reset (HTTP/2)
//!   or the connection cut (HTTP/1.1);
//! - `x-mock-answer: NAME`: one of [`super::usage_answers::ANSWERS`], its writes 50 ms apart
//!   (or `x-mock-interval-ms` apart);
//! - `x-mock-model: M`: the chat JSON answer names model `M`.
//!
//! [`MockOptions`] make it behave like OpenAI's edge: TLS with HTTP/2 and HTTP/1.1 by ALPN, a
//! stream limit per connection, GOAWAY after N requests, a close after an idle time.
//!
//! It records every request (with its whole body), when each connection closed, and every
//! stream that the other side cancelled.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
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
    /// The request's trailers, if any came.
    pub trailers: Option<HeaderMap>,
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
    /// Requests whose answer was abandoned before its head (an HTTP/2 stream reset early).
    pub answers_abandoned: Vec<Instant>,
    /// Per TLS connection: the SNI the client sent, and the protocol ALPN chose.
    pub sni: Vec<Option<String>>,
    pub alpn: Vec<Option<String>>,
    /// Per TLS connection: whether the client resumed an earlier session.
    pub resumed: Vec<bool>,
    /// Requests being answered now, and the most there ever were at once.
    pub active: usize,
    pub most_active: usize,
}

impl MockLog {
    /// What the log says about connections, without its requests.
    pub fn clone_connections(&self) -> MockLog {
        MockLog {
            connections_opened: self.connections_opened,
            connections_closed: self.connections_closed.clone(),
            sni: self.sni.clone(),
            alpn: self.alpn.clone(),
            resumed: self.resumed.clone(),
            ..MockLog::default()
        }
    }
}

/// How the mock behaves beyond its answers.
#[derive(Clone, Default)]
pub struct MockOptions {
    /// Serve TLS with this configuration (see `support::tls`); its ALPN list decides between
    /// HTTP/2 and HTTP/1.1.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_streams: Option<u32>,
    /// Shut a connection down gracefully (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`) once
    /// it has received this many requests, as nginx's `keepalive_requests` does.
    pub goaway_after: Option<usize>,
    /// Cut a connection (no GOAWAY) that has had no request in flight for this long.
    pub idle_close: Option<Duration>,
}

#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<MockLog>>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        MockUpstream::start_with(MockOptions::default()).await
    }

    pub async fn start_with(options: MockOptions) -> MockUpstream {
        let listener =
            memoctopus::inbound::listener::bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(MockLog::default()));
        let mock = MockUpstream {
            addr,
            log: log.clone(),
        };
        let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                log.lock().unwrap().connections_opened += 1;
                let log = log.clone();
                let options = options.clone();
                let acceptor = acceptor.clone();
                let mut stream = Lingering(Some(stream), false);
                tokio::spawn(async move {
                    match acceptor {
                        None => {
                            stream.arm();
                            serve(TokioIo::new(stream), &options, log.clone()).await
                        }
                        Some(acceptor) => {
                            let Ok(mut tls) = acceptor.accept(stream).await else {
                                log.lock().unwrap().connections_closed.push(Instant::now());
                                return;
                            };
                            tls.get_mut().0.arm();
                            {
                                let session = tls.get_ref().1;
                                let mut log = log.lock().unwrap();
                                log.sni.push(session.server_name().map(str::to_owned));
                                log.resumed.push(
                                    session.handshake_kind()
                                        == Some(rustls::HandshakeKind::Resumed),
                                );
                                log.alpn.push(
                                    session
                                        .alpn_protocol()
                                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                                );
                            }
                            serve(TokioIo::new(tls), &options, log.clone()).await
                        }
                    }
                    log.lock().unwrap().connections_closed.push(Instant::now());
                });
            }
        });
        mock
    }

    pub fn connections_opened(&self) -> usize {
        self.log.lock().unwrap().connections_opened
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
                    .chain(log.answers_abandoned.iter())
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

/// Serves one connection with the options' stream limit, GOAWAY count and idle cut.
async fn serve<I>(io: I, options: &MockOptions, log: Arc<Mutex<MockLog>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let service = {
        let (log, requests, in_flight, enough, last_activity) = (
            log.clone(),
            requests.clone(),
            in_flight.clone(),
            enough.clone(),
            last_activity.clone(),
        );
        let goaway_after = options.goaway_after;
        service_fn(move |req| {
            let n = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if goaway_after == Some(n) {
                enough.notify_one();
            }
            let guard = InFlight::new(in_flight.clone(), log.clone(), last_activity.clone());
            let log = log.clone();
            async move {
                let mut abandoned = Abandoned(Some(log.clone()));
                let response = answer(req, log).await;
                abandoned.0 = None;
                response.map(|r| r.map(|body| body.holding(guard)))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(options.max_streams);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let idle_close = options.idle_close;
    let mut shut_down = false;
    loop {
        let idle_check = async {
            match idle_close {
                Some(limit) => tokio::time::sleep(limit / 4).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = enough.notified(), if !shut_down => {
                shut_down = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check => {
                let idle_since = *last_activity.lock().unwrap();
                if in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                    && idle_since.elapsed() >= idle_close.unwrap_or_default()
                {
                    // Dropped without a word, as an edge that times out idle connections does.
                    return;
                }
            }
        }
    }
}

/// A socket that, once the server is done with it, keeps reading (and discarding) for a
/// second before it closes, as nginx's `lingering_close` and public edges do. Without it, a
/// frame the client sent just before the close (a WINDOW_UPDATE, a PING, a stream the
/// server's last GOAWAY will refuse) makes the kernel answer with a reset, which throws away
/// answers the client has not read yet: a failure no real upstream produces.
pub struct Lingering(Option<tokio::net::TcpStream>, bool);

impl Lingering {
    /// From now on, linger on close. A TLS handshake that failed closes at once, so that its
    /// alert is what the client sees.
    fn arm(&mut self) {
        self.1 = true;
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let Some(mut stream) = self.0.take().filter(|_| self.1) {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    }
}

impl tokio::io::AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl tokio::io::AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Notes an answer dropped before its head was ready.
struct Abandoned(Option<Arc<Mutex<MockLog>>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            log.lock().unwrap().answers_abandoned.push(Instant::now());
        }
    }
}

/// Counts a request as being answered until its body is done or dropped.
pub struct InFlight {
    count: Arc<std::sync::atomic::AtomicUsize>,
    log: Arc<Mutex<MockLog>>,
    last_activity: Arc<Mutex<Instant>>,
}

impl InFlight {
    fn new(
        count: Arc<std::sync::atomic::AtomicUsize>,
        log: Arc<Mutex<MockLog>>,
        last_activity: Arc<Mutex<Instant>>,
    ) -> InFlight {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *last_activity.lock().unwrap() = Instant::now();
        let mut l = log.lock().unwrap();
        l.active += 1;
        l.most_active = l.most_active.max(l.active);
        drop(l);
        InFlight {
            count,
            log,
            last_activity,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        *self.last_activity.lock().unwrap() = Instant::now();
        self.log.lock().unwrap().active -= 1;
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
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (Some(collected.to_bytes()), trailers)
        }
        Err(_) => {
            log.lock().unwrap().bodies_aborted.push(Instant::now());
            (None, None)
        }
    };
    let headers = parts.headers.clone();
    log.lock().unwrap().requests.push(Seen {
        method: parts.method,
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body: body.clone(),
        trailers,
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
        .header(
            "x-request-id",
            headers
                .get("x-mock-request-id")
                .cloned()
                .unwrap_or(HeaderValue::from_static("req_mock_upstream_1")),
        )
        .header("openai-processing-ms", "42")
        .header(
            "x-ratelimit-remaining-requests",
            if status == StatusCode::TOO_MANY_REQUESTS {
                "0"
            } else {
                "4999"
            },
        )
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5");
    if status == StatusCode::TOO_MANY_REQUESTS {
        // What OpenAI sends with a 429, so that a test can see it pass through untouched.
        builder = builder
            .header("retry-after", "20")
            .header("x-ratelimit-limit-requests", "5000")
            .header("x-ratelimit-reset-requests", "19.5s");
    }

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

    if let Some(name) = headers.get("x-mock-answer").and_then(|v| v.to_str().ok()) {
        let Some(canned) = super::usage_answers::answer(name) else {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(MockBody::full("no such x-mock-answer"))
                .unwrap());
        };
        let interval = if headers.contains_key("x-mock-interval-ms") {
            interval
        } else {
            Duration::from_millis(50)
        };
        let frames = canned
            .writes
            .iter()
            .map(|w| Bytes::from_static(w.as_bytes()))
            .collect();
        builder = builder.header("content-type", canned.content_type);
        return Ok(builder
            .body(MockBody::paced(frames, interval, log))
            .unwrap());
    }
    if let Some(model) = headers.get("x-mock-model").and_then(|v| v.to_str().ok()) {
        let json = CHAT_JSON.replace("\"model\":\"gpt-4\"", &format!("\"model\":\"{model}\""));
        return Ok(builder
            .header("content-type", "application/json")
            .body(MockBody::full(json))
            .unwrap());
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
    if headers.contains_key("x-mock-reset-after-head") {
        builder = builder.header("content-type", "text/event-stream");
        return Ok(builder
            .body(MockBody::broken(Bytes::from_static(
                b"data: {\"partial\":true}\n\n",
            )))
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

/// The mock's body: all at once, frames sent from a task at a pace (so that the task notices
/// when the reader goes away), or one chunk and then an error. It holds the request's
/// in-flight count until it is done.
pub struct MockBody {
    kind: Kind,
    _in_flight: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Paced(mpsc::Receiver<Bytes>),
    /// One chunk, then an error once the timer fires, so that the head is surely through.
    Broken(Option<Bytes>, Pin<Box<tokio::time::Sleep>>),
}

impl MockBody {
    fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody {
            kind: Kind::Full(Some(bytes.into())),
            _in_flight: None,
        }
    }

    fn broken(first: impl Into<Bytes>) -> MockBody {
        MockBody {
            kind: Kind::Broken(
                Some(first.into()),
                Box::pin(tokio::time::sleep(Duration::from_millis(50))),
            ),
            _in_flight: None,
        }
    }

    fn holding(mut self, guard: InFlight) -> MockBody {
        self._in_flight = Some(guard);
        self
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
        MockBody {
            kind: Kind::Paced(rx),
            _in_flight: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Paced(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            Kind::Broken(first, timer) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => timer
                    .as_mut()
                    .poll(cx)
                    .map(|()| Some(Err("the mock breaks this answer off".into()))),
            },
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
