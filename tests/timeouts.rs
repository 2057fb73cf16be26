//! Timeouts: 504 before the answer starts; an abnormal end after it has started.

mod support;

use std::time::Duration;

use support::mock::expected_chat_sse;
use support::*;
use tokio::time::Instant;

#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake_and_gives_504() {
    // Accepts TCP (the kernel does) but never answers the TLS handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}/v1", silent.local_addr().unwrap());
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("OPENAI_BASE_URL", &base),
            ("PROXY_CONNECT_TIMEOUT", "200ms"),
        ],
    )
    .await;
    let started = Instant::now();
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "upstream_connect_timeout");
    assert!(message.contains("PROXY_CONNECT_TIMEOUT"), "{message}");
}

#[tokio::test]
async fn first_byte_timeout_gives_504_and_drops_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_FIRST_BYTE_TIMEOUT", "300ms")]).await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("x-mock-head-delay-ms", "5000".parse().unwrap());
    let started = Instant::now();
    let response = client().request(request).await.unwrap();
    let answered = Instant::now();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.status(), 504);
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "upstream_first_byte_timeout");
    assert!(message.contains("PROXY_FIRST_BYTE_TIMEOUT"), "{message}");
    let dropped = mock
        .wait_for_drop(started, Duration::from_secs(2))
        .await
        .expect("upstream not dropped");
    assert!(dropped <= answered + Duration::from_millis(100));
}

#[tokio::test]
async fn idle_timeout_mid_stream_ends_the_response_abnormally() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_IDLE_TIMEOUT", "300ms")]).await;
    let response = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 5, 1000))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let (got, clean) = read_all(response).await;
    assert!(!clean, "a cut stream must not look complete");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert!(String::from_utf8_lossy(&got).contains("tok0"));
    assert!(mock
        .wait_for_drop(started, Duration::from_secs(2))
        .await
        .is_some());
}

#[tokio::test]
async fn idle_timeout_also_ends_h2_streams_abnormally() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_IDLE_TIMEOUT", "300ms")]).await;
    let response = h2c_client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 5, 1000))
        .await
        .unwrap();
    let (_, clean) = read_all(response).await;
    assert!(!clean);
}

#[tokio::test]
async fn total_timeout_cuts_a_long_stream_abnormally() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_TOTAL_TIMEOUT", "500ms")]).await;
    let started = Instant::now();
    let response = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 50, 50))
        .await
        .unwrap();
    let (_, clean) = read_all(response).await;
    assert!(!clean);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_live_stream_is_never_cut_by_the_idle_timeout() {
    let mock = MockUpstream::start().await;
    // Events every 100 ms, idle timeout 300 ms, stream 1.5 s: five times the idle timeout.
    let proxy = spawn_proxy(&mock, &[("PROXY_IDLE_TIMEOUT", "300ms")]).await;
    let response = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 15, 100))
        .await
        .unwrap();
    let (got, clean) = read_all(response).await;
    assert!(clean);
    assert_eq!(String::from_utf8(got).unwrap(), expected_chat_sse(15));
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_upstream_is_dropped() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_IDLE_TIMEOUT", "300ms")]).await;
    stall_and_expect_408(
        &proxy,
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\nhalf",
    )
    .await;
    assert!(mock.requests().iter().all(|s| s.body.is_none()));
}

/// Sends `bytes` (a head and perhaps part of a body), then nothing: the answer is a 408 well
/// before 2 s (the tests set `PROXY_IDLE_TIMEOUT` to 300 ms).
async fn stall_and_expect_408(proxy: &TestProxy, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut stream = raw_connect(proxy.addr).await;
    stream.write_all(bytes).await.unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The request waits for its body's first bytes before it goes upstream (so that HTTP/2 sends
/// HEADERS and DATA in one write): a client that stalls before them costs the upstream nothing,
/// not even a connection, and still gets its 408.
#[tokio::test]
async fn an_upload_stalled_before_its_first_byte_never_reaches_the_upstream() {
    let (mock, ca) = tls_mock(tls::Alpn::Both, mock::MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "auto")
        .settings(&[("PROXY_IDLE_TIMEOUT", "300ms")])
        .start()
        .await;
    stall_and_expect_408(
        &proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    assert!(mock.requests().is_empty(), "{:?}", mock.requests().len());
    let opened = r#"memoctopus_upstream_connections_opened_total{protocol="http2"}"#;
    assert_eq!(metric(&proxy, opened).await, 0.0);
    // The same request, whole, does go upstream: the series above is the one that counts it.
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(metric(&proxy, opened).await, 1.0);
}
