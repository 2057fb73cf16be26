//! Inbound connection handling: the connection limit, and slow request heads.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn health_on(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn beyond_the_connection_limit_new_clients_wait_and_old_ones_are_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_MAX_CONNECTIONS", "2")]).await;
    let mut first = raw_connect(proxy.addr).await;
    let mut second = raw_connect(proxy.addr).await;
    assert!(health_on(&mut first, Duration::from_secs(1))
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(health_on(&mut second, Duration::from_secs(1))
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // The third waits in the backlog: no answer while two are open.
    let mut third = raw_connect(proxy.addr).await;
    assert_eq!(
        health_on(&mut third, Duration::from_millis(300)).await,
        None
    );
    // The open ones keep working.
    assert!(health_on(&mut first, Duration::from_secs(1))
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // When one leaves, the waiting one is served.
    drop(second);
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_slow_request_head_is_closed_after_the_header_read_timeout() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_HEADER_READ_TIMEOUT", "300ms")]).await;
    let mut stream = raw_connect(proxy.addr).await;
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "slow head held the connection for {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_HEADER_READ_TIMEOUT", "300ms")]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let started = tokio::time::Instant::now();
    read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a silent connection was held {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let big = "a".repeat(100 * 1024);
    let raw = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\n{{}}");
    let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(2)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let (code, _) = error_fields(body);
    assert_eq!(code, "request_header_fields_too_large");
    assert!(mock.requests().is_empty());
}
