//! When the client goes away, the upstream exchange is dropped at once, in every phase, so no
//! tokens are generated for nobody. The four phases run against each upstream path: plain
//! HTTP, and TLS with each `PROXY_UPSTREAM_PROTOCOL` (over HTTP/2 the stream is reset, over
//! HTTP/1.1 the connection is closed).

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::mock::MockOptions;
use support::tls::Alpn;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, Instant};

/// Each upstream path a user may have: a mock and a proxy in front of it, and its name.
async fn each_upstream() -> Vec<(&'static str, MockUpstream, TestProxy)> {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut all = vec![("plain HTTP", mock, proxy)];
    for (name, protocol) in [
        ("TLS, auto", "auto"),
        ("TLS, http1", "http1"),
        ("TLS, http2", "http2"),
    ] {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
        all.push((name, mock, proxy));
    }
    all
}

#[tokio::test]
async fn client_leaving_while_waiting_for_the_first_byte_drops_the_upstream() {
    for (path, mock, proxy) in each_upstream().await {
        let stream = send_chat(&proxy, "x-mock-head-delay-ms: 3000\r\n").await;
        // Wait until the mock has the request, then leave.
        while mock.requests().is_empty() {
            sleep(Duration::from_millis(5)).await;
        }
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, path).await;
    }
}

#[tokio::test]
async fn client_leaving_mid_stream_drops_the_upstream_stream() {
    for (path, mock, proxy) in each_upstream().await {
        let mut stream =
            send_chat(&proxy, "x-mock-events: 100\r\nx-mock-interval-ms: 50\r\n").await;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("tok1") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, path).await;
        // The mock stopped producing events.
        assert_eq!(mock.log.lock().unwrap().streams_completed, 0, "{path}");
        assert_eq!(mock.cancelled_streams().len(), 1, "{path}");
    }
}

#[tokio::test]
async fn client_leaving_during_the_upload_aborts_the_upstream_request() {
    for (path, mock, proxy) in each_upstream().await {
        let mut stream = raw_connect(proxy.addr).await;
        stream
            .write_all(chat_head("", 1_000_000).as_bytes())
            .await
            .unwrap();
        stream.write_all(&vec![b'a'; 100_000]).await.unwrap();
        // Give the proxy time to open the upstream exchange and forward what it has.
        while mock.connections_opened() == 0 {
            sleep(Duration::from_millis(5)).await;
        }
        sleep(Duration::from_millis(100)).await;
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, path).await;
        // Nothing was half-sent as if it were complete.
        assert!(mock.requests().iter().all(|s| s.body.is_none()), "{path}");
    }
}

#[tokio::test]
async fn client_leaving_while_a_plain_answer_is_read_drops_the_upstream() {
    for (path, mock, proxy) in each_upstream().await {
        let mut stream = send_chat(&proxy, "x-mock-chunks: 5\r\nx-mock-interval-ms: 300\r\n").await;
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, path).await;
    }
}

#[tokio::test]
async fn h2_client_resetting_a_stream_drops_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let request = stream_request(&proxy.url("/v1/chat/completions"), 100, 50);
    let client = h2c_client();
    let response = client.request(request).await.unwrap();
    let mut body = response.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    let aborted = Instant::now();
    drop(body); // RST_STREAM; the connection itself stays open.
    assert_upstream_dropped(&mock, aborted, "plain HTTP").await;
    // The same h2 connection still serves.
    let response = client
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_dropped_upstream_connection_is_not_reused() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = send_chat(&proxy, "x-mock-events: 100\r\nx-mock-interval-ms: 20\r\n").await;
    let mut buf = vec![0u8; 4096];
    let _ = stream.read(&mut buf).await.unwrap();
    drop(stream);
    let _ = mock
        .wait_for_drop(
            Instant::now() - Duration::from_secs(1),
            Duration::from_secs(2),
        )
        .await;
    // A new exchange must work on a fresh connection, not the broken one.
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, support::mock::CHAT_JSON);
    assert_eq!(mock.log.lock().unwrap().connections_opened, 2);
}
