//! Answers the proxy makes itself: unknown routes, wrong methods, unreachable upstreams, and
//! request targets that try to reach anything but the two routes.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn unknown_path_gets_404_in_openai_shape() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = client()
        .request(chat_request(&proxy.url("/v1/embeddings"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_string(response).await;
    let (code, message) = error_fields(&body);
    assert_eq!(code, serde_json::Value::Null);
    assert_eq!(message, "Invalid URL (POST /v1/embeddings)");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], serde_json::Value::Null);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn wrong_method_gets_405_with_allow() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = client()
        .get(proxy.url("/v1/chat/completions").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let (code, _) = error_fields(&body_string(response).await);
    assert_eq!(code, "method_not_allowed");

    let request = Request::delete(proxy.url("/health"))
        .body(Full::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn closed_upstream_port_gets_502_at_once() {
    let proxy = ProxyStart::without_upstream().start().await;
    let started = std::time::Instant::now();
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.status(), 502);
    assert!(response.headers().contains_key("x-client-request-id"));
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "upstream_unreachable");
    assert!(
        message.contains("Could not reach the upstream"),
        "{message}"
    );
}

#[tokio::test]
async fn unresolvable_upstream_host_gets_502() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[("OPENAI_BASE_URL", "http://no-such-host.invalid/v1")],
    )
    .await;
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let (code, _) = error_fields(&body_string(response).await);
    assert_eq!(code, "upstream_unreachable");
}

#[tokio::test]
async fn path_tricks_never_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let targets = [
        "/v1/chat/completions/../../admin",
        "/v1/chat/completions/..",
        "/v1/audio/../chat/completions",
        "/v1/%2e%2e/chat/completions",
        "/v1/chat/completions%2f..%2f..%2fadmin",
        "/v1/chat/%63ompletions",
        "//v1/chat/completions",
        "/v1//chat/completions",
        "/v1/chat/completions/",
        "http://evil.example/admin",
        "http://evil.example/v1/models",
        "*",
    ];
    for target in targets {
        let raw = format!(
            "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(2)).await;
        let status_line = answer.lines().next().unwrap_or_default().to_owned();
        assert!(
            status_line.starts_with("HTTP/1.1 4"),
            "{target} was answered {status_line:?}"
        );
    }
    assert!(
        mock.requests().is_empty(),
        "reached the upstream: {:?}",
        mock.requests().iter().map(|s| &s.uri).collect::<Vec<_>>()
    );

    // Absolute-form naming another host on a real route still goes only to our upstream.
    let raw = "POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = mock.last_request();
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.headers["host"], mock.addr.to_string());
}

#[tokio::test]
async fn the_proxy_keeps_serving_after_bad_requests() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let answer = raw_exchange(proxy.addr, garbage, Duration::from_secs(2)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
