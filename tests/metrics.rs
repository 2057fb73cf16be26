//! `/metrics`: scraped after known traffic, the counts add up.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use memoctopus::Config;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn scrape(url: &str) -> String {
    let response = client().get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    body_string(response).await
}

/// The value of a series that must be there.
fn value(text: &str, name: &str) -> f64 {
    series(text, name).unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

#[tokio::test]
async fn counts_match_known_traffic() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_MAX_BODY_BYTES", "1000")]).await;
    let chat = "/v1/chat/completions";

    // 3 plain answers, one 429, one SSE stream of 4 events (3 + [DONE]), one body over the limit.
    for _ in 0..3 {
        let response = client()
            .request(chat_request(&proxy.url(chat), "{}"))
            .await
            .unwrap();
        body_bytes(response).await;
    }
    let mut request = chat_request(&proxy.url(chat), "{}");
    request
        .headers_mut()
        .insert("x-mock-status", "429".parse().unwrap());
    body_bytes(client().request(request).await.unwrap()).await;
    let mut request = chat_request(&proxy.url(chat), r#"{"stream":true}"#);
    request
        .headers_mut()
        .insert("x-mock-events", "3".parse().unwrap());
    body_bytes(client().request(request).await.unwrap()).await;
    let request = Request::post(proxy.url("/v1/audio/transcriptions"))
        .body(Full::from(vec![b'x'; 2000]))
        .unwrap();
    assert_eq!(client().request(request).await.unwrap().status(), 413);

    // A client that leaves mid-stream.
    let mut stream = raw_connect(proxy.addr).await;
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-events: 50\r\nx-mock-interval-ms: 20\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf).await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = scrape(&proxy.url("/metrics")).await;
    let route = r#"route="/v1/chat/completions""#;
    assert_eq!(
        value(
            &text,
            &format!(
                r#"memoctopus_requests_total{{{route},method="POST",status="200",outcome="completed",client="anonymous"}}"#
            )
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"memoctopus_requests_total{{{route},method="POST",status="429",outcome="completed",client="anonymous"}}"#
            )
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"memoctopus_requests_total{{{route},method="POST",status="200",outcome="client_cancelled",client="anonymous"}}"#
            )
        ),
        1.0
    );
    assert_eq!(value(&text, "memoctopus_body_limit_rejections_total"), 1.0);
    assert_eq!(
        value(
            &text,
            &format!("memoctopus_client_cancellations_total{{{route}}}")
        ),
        1.0
    );
    assert!(value(&text, &format!("memoctopus_sse_events_total{{{route}}}")) >= 5.0);
    assert_eq!(
        value(
            &text,
            &format!("memoctopus_request_duration_seconds_count{{{route}}}")
        ),
        6.0
    );
    assert_eq!(
        value(
            &text,
            &format!("memoctopus_upstream_head_seconds_count{{{route}}}")
        ),
        6.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"memoctopus_request_duration_seconds_bucket{{{route},le="600"}}"#)
        ),
        6.0
    );
    assert!(
        value(
            &text,
            &format!("memoctopus_response_bytes_total{{{route}}}")
        ) > 0.0
    );
    assert_eq!(value(&text, "memoctopus_in_flight_requests"), 0.0);
    assert_eq!(value(&text, "memoctopus_open_sse_streams"), 0.0);
    assert!(value(&text, "memoctopus_open_connections") >= 1.0);
    assert_eq!(
        value(&text, r#"memoctopus_upstream_errors_total{kind="connect"}"#),
        0.0
    );
    assert!(!text.contains(SERVER_KEY));
}

#[tokio::test]
async fn upstream_errors_are_counted_by_kind() {
    let proxy = ProxyStart::without_upstream().start().await;
    for _ in 0..2 {
        client()
            .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
            .await
            .unwrap();
    }
    let text = scrape(&proxy.url("/metrics")).await;
    assert_eq!(
        value(&text, r#"memoctopus_upstream_errors_total{kind="connect"}"#),
        2.0
    );
}

#[tokio::test]
async fn refused_request_heads_are_counted_by_kind() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let text = scrape(&proxy.url("/metrics")).await;
    for kind in ["bad_request", "too_large"] {
        let series = format!(r#"memoctopus_refused_request_heads_total{{kind="{kind}"}}"#);
        assert_eq!(value(&text, &series), 0.0);
    }
    let ambiguous = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for _ in 0..2 {
        raw_exchange(proxy.addr, ambiguous, Duration::from_secs(2)).await;
    }
    let lines: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let crowded = format!("GET /health HTTP/1.1\r\n{lines}\r\n");
    raw_exchange(proxy.addr, crowded.as_bytes(), Duration::from_secs(2)).await;
    let text = scrape(&proxy.url("/metrics")).await;
    assert_eq!(
        value(
            &text,
            r#"memoctopus_refused_request_heads_total{kind="bad_request"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"memoctopus_refused_request_heads_total{kind="too_large"}"#
        ),
        1.0
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let mock = MockUpstream::start().await;
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let config = Config::from_vars([
        ("OPENAI_API_KEY", SERVER_KEY.to_string()),
        ("OPENAI_BASE_URL", format!("http://{}/v1", mock.addr)),
        ("PROXY_METRICS_ADDR", metrics_addr.to_string()),
    ])
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(memoctopus::run_with_admin_listener(
        listener,
        Some(metrics_listener),
        config,
        std::future::pending(),
    ));

    let response = client()
        .request(chat_request(
            &format!("http://{addr}/v1/chat/completions"),
            "{}",
        ))
        .await
        .unwrap();
    body_bytes(response).await;
    let response = client()
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "/metrics is still on the proxy's port"
    );
    let text = scrape(&format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(
        value(
            &text,
            r#"memoctopus_requests_total{route="/v1/chat/completions",method="POST",status="200",outcome="completed",client="anonymous"}"#
        ),
        1.0
    );
}

/// The process's own figures, read from `/proc/self` at each scrape: what the dashboard's
/// memory and CPU panels show. Compared with what `/proc` says of the test's process, which is
/// the proxy's too.
#[tokio::test]
async fn the_process_memory_cpu_and_descriptors_are_read_at_each_scrape() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let text = scrape(&proxy.url("/metrics")).await;
    let resident = value(&text, "memoctopus_process_resident_memory_bytes");
    let kib = memory_kib(std::process::id(), "VmRSS:") as f64;
    assert!(
        (resident / 1024.0 - kib).abs() < kib * 0.5,
        "{resident} bytes against VmRSS {kib} kB"
    );
    let fds = value(&text, "memoctopus_process_open_fds");
    assert!(fds >= 3.0, "{fds}");
    // A held connection is one more descriptor at the next scrape.
    let held: Vec<_> =
        futures_util::future::join_all((0..20).map(|_| raw_connect(proxy.addr))).await;
    let text = scrape(&proxy.url("/metrics")).await;
    assert!(value(&text, "memoctopus_process_open_fds") >= fds + 20.0);
    drop(held);
    // CPU time only grows: spend some and see it.
    let before = value(&text, "memoctopus_process_cpu_seconds_total");
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_millis(300) {
        std::hint::black_box((0..1000u64).sum::<u64>());
    }
    let text = scrape(&proxy.url("/metrics")).await;
    let after = value(&text, "memoctopus_process_cpu_seconds_total");
    assert!(after - before >= 0.2, "{before} then {after}");
    let started = value(&text, "memoctopus_process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now && now - started < 600.0, "{started}");
}
