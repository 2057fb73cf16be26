//! Graceful drain: /ready flips, streams in flight finish byte-identical, then the listener
//! closes; what outlives the grace period is cut.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::mock::expected_chat_sse;
use support::*;
use tokio::time::{sleep, Instant};

#[tokio::test]
async fn a_stream_in_flight_finishes_while_ready_reports_draining() {
    let mock = MockUpstream::start().await;
    let mut proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_SHUTDOWN_DELAY", "500ms"),
            ("PROXY_SHUTDOWN_GRACE", "10s"),
        ],
    )
    .await;
    assert_eq!(
        metric(&proxy, "memoctopus_drain_started_timestamp_seconds").await,
        0.0
    );
    // 30 events 100 ms apart: a 3-second stream.
    let request = stream_request(&proxy.url("/v1/chat/completions"), 30, 100);
    let response = client().request(request).await.unwrap();
    let reader =
        tokio::spawn(async move { response.into_body().collect().await.map(|c| c.to_bytes()) });

    sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    proxy.shutdown();
    sleep(Duration::from_millis(50)).await;

    // During the delay: still accepting, and /ready says 503 while /health says 200.
    let ready = client()
        .get(proxy.url("/ready").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = client()
        .get(proxy.url("/health").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The drain's start is on /metrics, for an alert on a drain that does not end.
    let started = metric(&proxy, "memoctopus_drain_started_timestamp_seconds").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - started).abs() < 5.0, "{started} vs {now}");

    // After the delay: new connections are refused.
    sleep(Duration::from_millis(600)).await;
    let refused = tokio::net::TcpStream::connect(proxy.addr).await;
    assert!(
        refused.is_err(),
        "the listener is still open after the delay"
    );

    // The stream in flight completes byte-identical.
    let body = reader.await.unwrap().expect("the stream was cut");
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        expected_chat_sse(30)
    );
    let report = proxy.handle.await.unwrap().unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(report.cut, 0);
    assert!(report.finished >= 1, "{report:?}");
}

#[tokio::test]
async fn exchanges_beyond_the_grace_period_are_cut_and_counted() {
    let mock = MockUpstream::start().await;
    let mut proxy = spawn_proxy(&mock, &[("PROXY_SHUTDOWN_GRACE", "300ms")]).await;
    let request = stream_request(&proxy.url("/v1/chat/completions"), 100, 100);
    let response = client().request(request).await.unwrap();
    let reader = tokio::spawn(async move { response.into_body().collect().await.is_ok() });
    sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    proxy.shutdown();
    let report = proxy.handle.await.unwrap().unwrap();
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(report.cut, 1, "{report:?}");
    assert!(
        !reader.await.unwrap(),
        "a cut stream must not look complete"
    );
    // The upstream was dropped too.
    assert!(mock
        .wait_for_drop(signalled, Duration::from_secs(1))
        .await
        .is_some());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_at_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let mut proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = raw_connect(proxy.addr).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    proxy.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(2), proxy.handle)
        .await
        .expect("drain hung on an idle connection");
    assert_eq!(report.unwrap().unwrap().cut, 0);
    let n = stream.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was not closed");
}
