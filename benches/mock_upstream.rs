//! A fast mock of the OpenAI API, for the benchmarks and the SDK compatibility suites.
//!
//! `cargo run --release --example mock-upstream -- 127.0.0.1:9100` prints
//! `mock-upstream listening on ADDR` and serves until killed. Request headers script it:
//! - `x-mock-events: N` (default 5) and `x-mock-interval-ms: D` (default 0): the size and pace
//!   of a stream, for chat with `"stream": true` and transcriptions with `stream=true`;
//! - `x-mock-status: 429`: answer that status with an OpenAI error body;
//! - `x-mock-head-delay-ms: D`: wait before the response head;
//! - `x-mock-fail-after: N`: break a stream off after N events, as an upstream reset would.
//!
//! `--tls ADDR CA_OUT` also serves TLS on ADDR, as OpenAI's edge does: a certificate for
//! `localhost` from a fresh test CA (written to CA_OUT in PEM, for `PROXY_UPSTREAM_CA` and
//! nginx's `proxy_ssl_trusted_certificate`), HTTP/2 and HTTP/1.1 by ALPN, and at most 128
//! streams per HTTP/2 connection (nginx's default, and about what public edges allow).
//!
//! `GET .../realtime` with `Upgrade: websocket` is a small Realtime API (see `realtime`).
//!
//! `GET /stats` answers its counters as JSON (requests, upload bytes, streams completed and
//! cancelled by the other side); `POST /stats/reset` zeroes them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Sleep;

#[path = "events.rs"]
mod events;
use events::{event, Kind, CHAT_JSON};

const TRANSCRIPTION_JSON: &str = r#"{"text":"Imagine the wildest idea that you've ever had, and you're curious about how it might scale to something that's a 100, a 1,000 times bigger.","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,"total_tokens":59}}"#;
const EMBEDDING_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,0.015797347]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
const MODELS_JSON: &str = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1686935002,"owned_by":"openai"}]}"#;
const MODEL_JSON: &str =
    r#"{"id":"gpt-4o","object":"model","created":1686935002,"owned_by":"openai"}"#;

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    upload_bytes: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
}

const USAGE: &str = "usage: mock-upstream [ADDR] [--tls TLS_ADDR CA_OUT]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .map_or("127.0.0.1:9100", String::as_str)
        .parse()
        .expect(USAGE);
    let tls = match args.get(1).map(String::as_str) {
        Some("--tls") => {
            let tls_addr: SocketAddr = args.get(2).expect(USAGE).parse().expect(USAGE);
            let ca_out = args.get(3).expect(USAGE).clone();
            Some((tls_addr, tls_config(&ca_out)))
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(serve(addr, tls));
}

/// A fresh CA, written to `ca_out`, and a `localhost` certificate it signed.
fn tls_config(ca_out: &str) -> Arc<rustls::ServerConfig> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: with rcgen's default for both, OpenSSL (nginx) takes the leaf, whose
    // issuer would then equal its subject, for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "memoctopus bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(ca_out, ca.pem()).expect("write the CA certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn serve(addr: SocketAddr, tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>) {
    let stats = Arc::new(Stats::default());
    if let Some((tls_addr, config)) = tls {
        let listener = TcpListener::bind(tls_addr).await.expect("bind");
        println!(
            "mock-upstream listening on {} (TLS)",
            listener.local_addr().unwrap()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (stats, acceptor) = (stats.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(TokioIo::new(stream), stats).await;
                    }
                });
            }
        });
    }
    let listener = TcpListener::bind(addr).await.expect("bind");
    println!(
        "mock-upstream listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        tokio::spawn(serve_connection(TokioIo::new(stream), stats));
    }
}

async fn serve_connection<I>(io: I, stats: Arc<Stats>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| answer(req, stats.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(128);
    let _ = builder.serve_connection_with_upgrades(io, service).await;
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Reads a request body to its end, counting it and keeping at most `keep` bytes of it.
async fn drain(mut body: Incoming, keep: usize, stats: &Stats) -> Vec<u8> {
    let mut kept = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            stats.upload_bytes.fetch_add(data.len() as u64, Relaxed);
            if kept.len() < keep {
                kept.extend_from_slice(&data[..data.len().min(keep - kept.len())]);
            }
        }
    }
    kept
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn answer(
    req: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<MockBody>, Infallible> {
    if req.uri().path().ends_with("/realtime") && req.headers().contains_key("sec-websocket-key") {
        return Ok(realtime(req));
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/stats" {
        if parts.method == Method::POST {
            for counter in [
                &stats.requests,
                &stats.upload_bytes,
                &stats.streams_completed,
                &stats.streams_cancelled,
            ] {
                counter.store(0, Relaxed);
            }
        }
        let json = format!(
            r#"{{"requests":{},"upload_bytes":{},"streams_completed":{},"streams_cancelled":{}}}"#,
            stats.requests.load(Relaxed),
            stats.upload_bytes.load(Relaxed),
            stats.streams_completed.load(Relaxed),
            stats.streams_cancelled.load(Relaxed)
        );
        return Ok(json_answer(StatusCode::OK, json));
    }
    stats.requests.fetch_add(1, Relaxed);
    // Multipart uploads are counted and dropped; only their head is kept, where the small
    // `stream` field of a test form sits after the file.
    let head = drain(body, 64 * 1024, &stats).await;
    let h = &parts.headers;
    if let Some(ms) = number(h, "x-mock-head-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) =
        number(h, "x-mock-status").and_then(|s| StatusCode::from_u16(s as u16).ok())
    {
        let error = format!(
            r#"{{"error":{{"message":"mock upstream error {}","type":"requests","param":null,"code":"rate_limit_exceeded"}}}}"#,
            status.as_u16()
        );
        return Ok(json_answer(status, error));
    }
    let events = number(h, "x-mock-events").unwrap_or(5);
    let interval = Duration::from_millis(number(h, "x-mock-interval-ms").unwrap_or(0));
    let fail_after = number(h, "x-mock-fail-after");

    let response = if path.ends_with("/chat/completions") {
        if contains(&head, b"\"stream\":true") || contains(&head, b"\"stream\": true") {
            // With `"stream_options": {"include_usage": true}`, a last chunk carries usage.
            let kind = if contains(&head, b"\"include_usage\":true") {
                Kind::ChatWithUsage
            } else {
                Kind::Chat
            };
            let mut response = sse(kind, events, interval, stats);
            if let (Some(n), MockBody::Paced(p)) = (fail_after, response.body_mut()) {
                p.fail_after = Some(n);
            }
            response
        } else {
            json_answer(StatusCode::OK, CHAT_JSON)
        }
    } else if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
        if contains(&head, b"name=\"stream\"\r\n\r\ntrue") {
            sse(Kind::Transcript, events, interval, stats)
        } else {
            json_answer(StatusCode::OK, TRANSCRIPTION_JSON)
        }
    } else if path.ends_with("/embeddings") {
        json_answer(StatusCode::OK, EMBEDDING_JSON)
    } else if path.ends_with("/models") {
        json_answer(StatusCode::OK, MODELS_JSON)
    } else if path.contains("/models/") {
        json_answer(StatusCode::OK, MODEL_JSON)
    } else if path.ends_with("/audio/speech") {
        // Binary audio, chunked, in paced pieces: as OpenAI streams speech.
        let mut response = Response::new(MockBody::paced(Kind::Audio, events, interval, stats));
        response
            .headers_mut()
            .insert("content-type", "audio/mpeg".parse().unwrap());
        response
    } else {
        json_answer(
            StatusCode::NOT_FOUND,
            format!(
                r#"{{"error":{{"message":"Invalid URL ({} {path})","type":"invalid_request_error","param":null,"code":null}}}}"#,
                parts.method
            ),
        )
    };
    Ok(with_openai_headers(response))
}

fn with_openai_headers(mut response: Response<MockBody>) -> Response<MockBody> {
    let h = response.headers_mut();
    h.insert("x-request-id", "req_mock_0123456789abcdef".parse().unwrap());
    h.insert("openai-processing-ms", "7".parse().unwrap());
    h.insert("x-ratelimit-remaining-requests", "4999".parse().unwrap());
    response
}

/// The Realtime API's WebSocket, enough for the SDKs: `session.created` first (with what the
/// mock saw of the upgrade under `mock`, so that a suite can check the key and the URL), then
/// `session.updated` for a `session.update`, and every other frame echoed back.
fn realtime(mut req: Request<Incoming>) -> Response<MockBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
    let seen = serde_json::json!({
        "authorization": req.headers().get("authorization").and_then(|v| v.to_str().ok()),
        "target": req.uri().to_string(),
        "subprotocols": req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
    });
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let created = serde_json::json!({
            "type": "session.created",
            "event_id": "event_mock_1",
            "session": {"type": "realtime", "id": "sess_mock", "object": "realtime.session", "model": "gpt-realtime"},
            "mock": seen,
        });
        if ws.send(Message::text(created.to_string())).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            let reply = match &message {
                Message::Text(text) if text.contains("\"session.update\"") => {
                    let update: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    Message::text(
                        serde_json::json!({
                            "type": "session.updated",
                            "event_id": "event_mock_2",
                            "session": update["session"],
                        })
                        .to_string(),
                    )
                }
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(MockBody::Full(None));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(&key).parse().unwrap(),
    );
    response
}

fn json_answer(status: StatusCode, json: impl Into<Bytes>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::Full(Some(json.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    with_openai_headers(response)
}

fn sse(kind: Kind, events: u64, interval: Duration, stats: Arc<Stats>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::paced(kind, events, interval, stats));
    let h = response.headers_mut();
    h.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    h.insert("cache-control", "no-cache".parse().unwrap());
    response
}

/// A body that is all there at once, or a stream paced by a timer inside the body itself (no
/// task per stream), which counts itself completed or cancelled.
enum MockBody {
    Full(Option<Bytes>),
    Paced(Box<Paced>),
}

struct Paced {
    /// Break off with an error after this many events.
    fail_after: Option<u64>,
    kind: Kind,
    next: u64,
    events: u64,
    interval: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    stats: Arc<Stats>,
    done: bool,
}

impl MockBody {
    fn paced(kind: Kind, events: u64, interval: Duration, stats: Arc<Stats>) -> MockBody {
        MockBody::Paced(Box::new(Paced {
            fail_after: None,
            kind,
            next: 0,
            events,
            interval,
            timer: None,
            stats,
            done: false,
        }))
    }
}

/// A stream broken off on purpose.
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream broken off by x-mock-fail-after")
    }
}

impl std::error::Error for Broken {}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        let p = match &mut *self {
            MockBody::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Paced(p) => p,
        };
        if p.done {
            return Poll::Ready(None);
        }
        if p.fail_after.is_some_and(|n| p.next >= n) {
            return Poll::Ready(Some(Err(Broken)));
        }
        if p.next > 0 && !p.interval.is_zero() {
            let interval = p.interval;
            let timer = p
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = timer.deadline() + interval;
            timer.as_mut().reset(next);
        }
        let last = p.next + 1 >= p.events;
        let frame = event(p.kind, p.next, last);
        p.next += 1;
        if last {
            p.done = true;
            p.stats.streams_completed.fetch_add(1, Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Paced(p) => p.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Paced(_) => SizeHint::default(),
        }
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        if !self.done {
            self.stats.streams_cancelled.fetch_add(1, Relaxed);
        }
    }
}
