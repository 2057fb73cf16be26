//! A scriptable broken upstream on raw TCP. The request's `x-fault` header picks what goes
//! wrong; it counts connections, so tests can tell that a broken one was not reused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const OK_BODY: &str = r#"{"ok":true}"#;

#[derive(Clone)]
pub struct FaultUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl FaultUpstream {
    pub async fn start() -> FaultUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        FaultUpstream { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one request head and its Content-Length body; returns the head, or None at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + length);
            return Some(head);
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reset(stream: TcpStream) {
    // Linger 0: close with RST instead of FIN.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_request(&mut stream, &mut buf).await {
        let fault = head
            .lines()
            .find_map(|l| l.strip_prefix("x-fault:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let event = "data: {\"n\":1}\n\n";
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        match fault.as_str() {
            "reset-before-head" => return reset(stream),
            "close-before-head" => return,
            "malformed-head" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 abc\r\n\x01\x02 garbage\r\n\r\n")
                    .await;
                return;
            }
            "reset-mid-stream" => {
                let _ = stream
                    .write_all(format!("{sse_head}{chunk}").as_bytes())
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return reset(stream);
            }
            "stall-mid-stream" => {
                let _ = stream
                    .write_all(format!("{sse_head}{chunk}").as_bytes())
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "short-body" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"partial\":")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            "close-mid-chunk" => {
                let _ = stream
                    .write_all(format!("{sse_head}64\r\ndata: only part").as_bytes())
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            "unauthorized" => {
                let body = r#"{"error":{"message":"Incorrect API key provided: sk-serve*****6789. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
            _ => {
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{OK_BODY}",
                    OK_BODY.len()
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}
