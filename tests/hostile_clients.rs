//! Hostile or broken clients on raw sockets: each gets the right status or a clean close,
//! nothing reaches the upstream that should not, and the proxy goes on serving.

mod support;

use std::time::Duration;

use support::h2_frames::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn status_of(proxy: &TestProxy, raw: &[u8]) -> String {
    let answer = raw_exchange(proxy.addr, raw, Duration::from_secs(2)).await;
    answer.lines().next().unwrap_or("(closed)").to_owned()
}

/// The answers on one connection, in order: status code, lower-cased head, body.
fn answers(raw: &str) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(head_end) = rest.find("\r\n\r\n") {
        let head = rest[..head_end].to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body_end = (head_end + 4 + length).min(rest.len());
        out.push((status, head, rest[head_end + 4..body_end].to_owned()));
        rest = &rest[body_end..];
    }
    out
}

/// Sends `raw` on a fresh connection and expects one refusal in OpenAI's shape, after which
/// the proxy closes the connection.
async fn assert_refused(proxy: &TestProxy, raw: &[u8], status: u16) -> String {
    let answer = raw_exchange(proxy.addr, raw, Duration::from_secs(2)).await;
    let all = answers(&answer);
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    assert_eq!(all.len(), 1, "{shown} got {answer}");
    let (got, head, body) = &all[0];
    assert_eq!(*got, status, "{shown} got {answer}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let (code, message) = error_fields(body);
    assert!(code.is_string(), "{body}");
    message
}

/// Everything the proxy sends until it closes the connection, which it must within 5 s.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let (answer, closed) = support::read_until_closed(stream, Duration::from_secs(5)).await;
    assert!(closed, "connection kept open");
    answer
}

async fn assert_still_serves(proxy: &TestProxy) {
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

const CHAT: &str = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n";

#[tokio::test]
async fn ambiguous_lengths_are_refused_with_400_and_never_forwarded() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let cases = [
        (
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "both",
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            "both",
        ),
        (
            "Content-Length: 2\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
            "both",
        ),
        (
            "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
            "two different",
        ),
        ("Content-Length: 2, 40\r\n\r\n{}", "not a number"),
        ("Content-Length: -2\r\n\r\n{}", "not a number"),
        ("Transfer-Encoding: gzip\r\n\r\n{}", "must end with chunked"),
        (
            "Transfer-Encoding: chunked, gzip\r\n\r\n{}",
            "must end with chunked",
        ),
    ];
    for (headers, expected) in cases {
        let raw = format!("{CHAT}{headers}");
        let message = assert_refused(&proxy, raw.as_bytes(), 400).await;
        assert!(message.contains(expected), "{headers:?}: {message}");
    }
    let http_10 =
        b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let message = assert_refused(&proxy, http_10, 400).await;
    assert!(message.contains("HTTP/1.0"), "{message}");
    assert!(
        mock.requests().is_empty(),
        "forwarded: {:?}",
        mock.requests().iter().map(|s| &s.uri).collect::<Vec<_>>()
    );
    assert_still_serves(&proxy).await;
}

/// The classic smuggling shape: a front end that frames by `Content-Length` would see one
/// request, one that frames by chunks would see two. The proxy answers 400 and reads no
/// further, so neither the first request nor the one hidden behind it reaches the upstream.
#[tokio::test]
async fn content_length_with_chunked_cannot_smuggle_a_request() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let raw = format!("{CHAT}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}");
    let mut stream = raw_connect(proxy.addr).await;
    stream.write_all(raw.as_bytes()).await.unwrap();
    // The connection must close after its answers: read_to_end returns.
    let answer = read_until_closed(&mut stream).await;
    let all = answers(&answer);
    assert_eq!(all.len(), 1, "{answer}");
    assert_eq!(all[0].0, 400, "{answer}");
    assert!(
        mock.requests().is_empty(),
        "forwarded: {:?}",
        mock.requests()
    );
    assert_still_serves(&proxy).await;
}

/// A good request and an ambiguous one in a single write: the first is forwarded and
/// answered, then the second is refused, in order, on the same connection.
#[tokio::test]
async fn a_refusal_comes_after_the_answers_before_it() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let raw = format!(
        "{CHAT}Content-Length: 2\r\n\r\n{{}}\
         {CHAT}Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n\
         {CHAT}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         {CHAT}Content-Length: 2\r\n\r\n{{}}"
    );
    let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(3)).await;
    let statuses: Vec<u16> = answers(&answer).iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 400], "{answer}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in seen {
        assert_eq!(s.body.as_deref(), Some(&b"{}"[..]));
    }
}

/// Heads, bodies and chunk-size lines cut at every few bytes still arrive whole: the guard
/// holds an unfinished head or line back until its end comes.
#[tokio::test]
async fn requests_cut_into_small_writes_pass_unchanged() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let body = "{\"model\":\"gpt-4o-mini\",\"messages\":[]}";
    let raw = format!(
        "{CHAT}Content-Length: {}\r\n\r\n{body}\
         {CHAT}Transfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{body}\r\n0\r\nX-Trailer: t\r\n\r\n\
         {CHAT}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        body.len(),
        body.len()
    );
    let mut stream = raw_connect(proxy.addr).await;
    for piece in raw.as_bytes().chunks(7) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The connection must close after its answers: read_to_end returns.
    let answer = read_until_closed(&mut stream).await;
    let statuses: Vec<u16> = answers(&answer).iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200], "{answer}");
    let bodies: Vec<_> = mock.requests().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0].as_deref(), Some(body.as_bytes()));
    assert_eq!(bodies[1].as_deref(), Some(body.as_bytes()));
    assert_eq!(bodies[2].as_deref(), Some(&b"{}"[..]));
}

#[tokio::test]
async fn a_bad_head_on_a_kept_alive_connection_is_refused_in_turn() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let good = format!("{CHAT}Content-Length: 2\r\n\r\n{{}}");
    stream.write_all(good.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let bad = format!("{CHAT}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}");
    stream.write_all(bad.as_bytes()).await.unwrap();
    // The connection must close after its answers: read_to_end returns.
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn malformed_heads_get_400_in_openai_shape() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    for raw in [
        &b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n",
        b"POST /v1/chat/completions HTTP/9.9\r\nHost: x\r\n\r\n",
        b"P\x01ST /v1/chat/completions HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        assert_refused(&proxy, raw, 400).await;
    }
    assert!(mock.requests().is_empty());
    assert_still_serves(&proxy).await;
}

#[tokio::test]
async fn too_many_header_lines_get_431_in_openai_shape() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let lines: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let raw = format!("{CHAT}{lines}Content-Length: 2\r\n\r\n{{}}");
    let message = assert_refused(&proxy, raw.as_bytes(), 431).await;
    assert!(message.contains("header lines"), "{message}");
    assert!(mock.requests().is_empty());
    assert_still_serves(&proxy).await;
}

#[tokio::test]
async fn opaque_header_bytes_are_forwarded_unmangled() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Latin1: caf\xe9 cr\xe8me\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let status = status_of(&proxy, raw).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        mock.last_request().headers["x-latin1"].as_bytes(),
        b"caf\xe9 cr\xe8me"
    );
}

// ---- HTTP/2 abuse, with hand-made frames (a well-behaved client library would not do this).

#[tokio::test]
async fn h2_rapid_reset_flood_is_cut_off() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let rss_before = memory_kib(std::process::id(), "VmRSS:");
    let mut stream = raw_connect(proxy.addr).await;
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(4, 0, 0, &[]));
    let headers = request_headers(&proxy.addr.to_string());
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(1, 0x4, id, &headers)); // HEADERS, END_HEADERS
        flood.extend(frame(3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = stream.write_all(&flood).await;
    let types = frame_types(&mut stream, Duration::from_secs(3)).await;
    assert!(
        types.contains(&7),
        "no GOAWAY after a reset flood: {types:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        mock.requests().len() < 300,
        "{} requests reached the upstream",
        mock.requests().len()
    );
    assert!(
        memory_kib(std::process::id(), "VmRSS:") < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {} KiB",
        memory_kib(std::process::id(), "VmRSS:")
    );
    assert_still_serves(&proxy).await;
}

#[tokio::test]
async fn h2_streams_beyond_the_limit_are_refused() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let mut burst = PREFACE.to_vec();
    burst.extend(frame(4, 0, 0, &[]));
    let headers = request_headers(&proxy.addr.to_string());
    // 400 streams that each wait for a body that never comes.
    for i in 0..400u32 {
        burst.extend(frame(1, 0x4, 2 * i + 1, &headers));
    }
    stream.write_all(&burst).await.unwrap();
    let types = frame_types(&mut stream, Duration::from_millis(1500)).await;
    assert!(
        types.contains(&3) || types.contains(&7),
        "streams over the limit were not refused: {types:?}"
    );
    assert!(
        mock.log.lock().unwrap().connections_opened
            <= memoctopus::bounds::H2_MAX_CONCURRENT_STREAMS as usize
    );
    drop(stream);
    assert_still_serves(&proxy).await;
}

#[tokio::test]
async fn h2_huge_header_lists_are_refused() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    let big = "v".repeat(1 << 20);
    let mut block = request_headers(&proxy.addr.to_string());
    block.extend(header_block(&[("x-huge", &big)]));
    // HEADERS then CONTINUATION frames of 16 KiB.
    let mut chunks = block.chunks(16384).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { 0x4 | 0x1 } else { 0x1 };
        bytes.extend(frame(
            if first { 1 } else { 9 },
            if first { flags } else { flags & 0x4 },
            1,
            chunk,
        ));
        first = false;
    }
    let _ = stream.write_all(&bytes).await;
    let types = frame_types(&mut stream, Duration::from_secs(2)).await;
    assert!(
        types.contains(&3) || types.contains(&7) || types.contains(&1),
        "{types:?}"
    );
    assert!(
        mock.requests().is_empty(),
        "a 1 MiB header list reached the upstream"
    );
    assert_still_serves(&proxy).await;
}
