//! A WebSocket upstream, as OpenAI's Realtime API looks from the proxy: it checks the server's
//! key, echoes every text and binary frame, and, told so by the query string, refuses the
//! upgrade or closes first.
//!
//! - `?mock=refuse-429`: answer 429 with OpenAI's `retry-after` and an error body;
//! - `?mock=close-after-ms-N`: send a Close frame and drop the connection after N ms.
//!
//! The text message `mock:responses` is answered with [`RESPONSES`] instead of its echo: what
//! a Realtime server sends for two responses, their `response.done` events split across
//! frames with a ping between, and usage-like text where it must not count.
//!
//! A key other than the server's gets 401, as OpenAI does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use super::SERVER_KEY;

/// One upgrade request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub uri: String,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
pub struct WsLog {
    pub handshakes: Vec<Handshake>,
    /// When each accepted session ended, however it ended.
    pub ended: Vec<Instant>,
    /// When the mock closed a session itself.
    pub closed_first: Vec<Instant>,
    /// Bytes of frame payload echoed.
    pub echoed: u64,
}

#[derive(Clone)]
pub struct WsMock {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<WsLog>>,
}

impl WsMock {
    /// Plain, or TLS with `tls` (whose ALPN should offer `http/1.1`).
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> WsMock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(WsLog::default()));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let shared = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let log = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => session(stream, log).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                session(stream, log).await;
                            }
                        }
                    }
                });
            }
        });
        WsMock { addr, log }
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.log.lock().unwrap().handshakes.clone()
    }

    pub fn ended(&self) -> Vec<Instant> {
        self.log.lock().unwrap().ended.clone()
    }

    pub fn closed_first(&self) -> Vec<Instant> {
        self.log.lock().unwrap().closed_first.clone()
    }

    /// Waits until some session has ended, and says when it did.
    pub async fn wait_for_end(&self, limit: Duration) -> Option<Instant> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(at) = self.ended().first() {
                return Some(*at);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

fn refuse(status: u16, body: &str, headers: &[(&str, &str)]) -> ErrorResponse {
    let mut response = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(Some(body.to_owned())).unwrap()
}

// tungstenite decides the callback's types: its refusal is a whole HTTP response.
#[allow(clippy::result_large_err)]
async fn session<S>(stream: S, log: Arc<Mutex<WsLog>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut close_after = None;
    let check = |request: &Request, mut response: Response| {
        log.lock().unwrap().handshakes.push(Handshake {
            uri: request.uri().to_string(),
            headers: request.headers().clone(),
        });
        let query = request.uri().query().unwrap_or("");
        if request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {SERVER_KEY}"))
            && request
                .headers()
                .get("api-key")
                .and_then(|v| v.to_str().ok())
                != Some(SERVER_KEY)
        {
            return Err(refuse(
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-****","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                &[],
            ));
        }
        if query.contains("mock=refuse-429") {
            return Err(refuse(
                429,
                r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                &[
                    ("retry-after", "7"),
                    ("x-ratelimit-remaining-requests", "0"),
                ],
            ));
        }
        if let Some(ms) = query
            .split('&')
            .find_map(|p| p.strip_prefix("mock=close-after-ms-"))
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            close_after = Some(Duration::from_millis(ms));
        }
        // Select the first subprotocol offered, as OpenAI selects `realtime`.
        if let Some(first) = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", first.trim().parse().unwrap());
        }
        response
            .headers_mut()
            .insert("x-request-id", "req_ws_mock_1".parse().unwrap());
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let deadline = close_after.map(|after| Instant::now() + after);
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    log.lock().unwrap().closed_first.push(Instant::now());
                    let _ = ws.close(None).await;
                    break;
                }
            },
            None => ws.next().await,
        };
        match next {
            Some(Ok(Message::Text(text))) if text.as_str() == "mock:responses" => {
                for frame in responses() {
                    if ws.send(frame).await.is_err() {
                        break;
                    }
                }
            }
            Some(Ok(Message::Text(text))) if text.as_str() == "mock:compressed" => {
                let mut frame = Frame::message(
                    r#"{"type":"response.done"}"#,
                    OpCode::Data(Data::Text),
                    true,
                );
                frame.header_mut().rsv1 = true;
                let _ = ws.send(Message::Frame(frame)).await;
            }
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                log.lock().unwrap().echoed += message.len() as u64;
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    log.lock().unwrap().ended.push(Instant::now());
}

/// The usage [`RESPONSES`] report, added up: input, output, cached.
pub const RESPONSES_USAGE: (u64, u64, u64) = (120, 60, 40);

/// What `mock:responses` is answered with, as (frame's opcode and FIN, payload).
const RESPONSES: &[(&str, &str)] = &[
    // Usage below the top level is not the event's.
    (
        "text",
        r#"{"type":"session.created","session":{"model":"gpt-realtime","usage":{"input_tokens":999}}}"#,
    ),
    (
        "text+",
        r#"{"type":"response.output_audio.delta","delta":"UklGR"#,
    ),
    (
        "more",
        "iQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA",
    ),
    ("end", r#"="}"#),
    // The first response.done, in three frames with a ping between; its transcript holds
    // usage-like text.
    (
        "text+",
        r#"{"type":"response.done","event_id":"event_3","response":{"object":"realtime.response","status":"completed","output":[{"type":"message","content":[{"type":"output_audio","transcript":"say \"usage\":{\"input_tokens\":5000}"}]}],"us"#,
    ),
    ("ping", "keepalive"),
    (
        "more",
        r#"age":{"total_tokens":150,"input_tokens":100,"output_tokens":50,"input_token_details":{"cached_tokens":40,"text_tokens":60,"#,
    ),
    (
        "end",
        r#""audio_tokens":40},"output_token_details":{"text_tokens":10,"audio_tokens":40}}}}"#,
    ),
    // A binary message is never read as usage.
    (
        "binary",
        r#"{"type":"response.done","response":{"usage":{"input_tokens":7777}}}"#,
    ),
    // The second, in two frames.
    (
        "text+",
        r#"{"type":"response.done","response":{"status":"completed","usage":{"total_tokens":30,"#,
    ),
    ("end", r#""input_tokens":20,"output_tokens":10}}}"#),
    ("text", r#"{"type":"mock.done"}"#),
];

fn responses() -> Vec<Message> {
    RESPONSES
        .iter()
        .map(|(kind, payload)| {
            let payload = payload.as_bytes().to_vec();
            let frame = match *kind {
                "text" => Frame::message(payload, OpCode::Data(Data::Text), true),
                "text+" => Frame::message(payload, OpCode::Data(Data::Text), false),
                "more" => Frame::message(payload, OpCode::Data(Data::Continue), false),
                "end" => Frame::message(payload, OpCode::Data(Data::Continue), true),
                "binary" => Frame::message(payload, OpCode::Data(Data::Binary), true),
                _ => Frame::ping(payload),
            };
            Message::Frame(frame)
        })
        .collect()
}
