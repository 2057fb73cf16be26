//! `PROXY_CLIENT_MAX_IN_FLIGHT` and `PROXY_CLIENT_RATE`: a client over its limit gets a 429 in
//! OpenAI's shape with `Retry-After` and a code that says the proxy refused it, and nothing
//! goes upstream. The upstream's own 429 passes through untouched.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;

const KEYS: &str = "web:ck-limits-web-8001,batch:ck-limits-batch-8002";

fn as_client(url: &str, key: &str) -> Request<Full<bytes::Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::from("{}"))
        .unwrap()
}

fn slow_stream(url: &str, key: &str) -> Request<Full<bytes::Bytes>> {
    let mut request = as_client(url, key);
    request.headers_mut().insert("x-mock-events", 10.into());
    request
        .headers_mut()
        .insert("x-mock-interval-ms", 100.into());
    request
}

/// A proxy-made 429: its code and its Retry-After in whole seconds.
async fn refusal(response: http::Response<hyper::body::Incoming>) -> (String, u64) {
    assert_eq!(response.status(), 429);
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (code, message) = error_fields(&body_string(response).await);
    assert!(message.contains("PROXY_CLIENT_"), "{message}");
    (code.as_str().unwrap().to_owned(), retry_after)
}

#[tokio::test]
async fn a_client_over_its_in_flight_cap_gets_429_and_the_others_go_on() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_CLIENT_MAX_IN_FLIGHT", "2"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    // web holds both of its slots with two 1 s streams.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let response = client()
            .request(slow_stream(&url, "ck-limits-web-8001"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(tokio::spawn(read_all(response)));
    }
    let seen_before = mock.requests().len();

    let logs = support::capture::logs();
    let mut request = as_client(&url, "ck-limits-web-8001");
    request
        .headers_mut()
        .insert("x-request-id", "limited-8001".parse().unwrap());
    let refused = client().request(request).await.unwrap();
    assert_eq!(
        refusal(refused).await,
        ("proxy_concurrency_limit".into(), 1)
    );
    // The access log says which limit refused it.
    let line = eventually(Duration::from_secs(2), || async {
        logs.text().lines().any(|l| {
            l.contains("\"request_id\":\"limited-8001\"")
                && l.contains("\"error_code\":\"proxy_concurrency_limit\"")
                && l.contains("\"outcome\":\"limited\"")
        })
    })
    .await;
    assert!(line.is_some(), "{}", logs.text());
    assert_eq!(
        mock.requests().len(),
        seen_before,
        "the refused request went upstream"
    );

    // batch is its own client, with its own two slots.
    for _ in 0..2 {
        let response = client()
            .request(as_client(&url, "ck-limits-batch-8002"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }

    // The slot comes back when a stream ends: its last byte, not its head.
    for stream in streams {
        let (_, clean) = stream.await.unwrap();
        assert!(clean);
    }
    let response = client()
        .request(as_client(&url, "ck-limits-web-8001"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_client_limit_rejections_total{client=\"web\",limit=\"concurrency\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"429\",outcome=\"limited\",client=\"web\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn the_rate_limit_allows_the_burst_then_refills_over_time() {
    let mock = MockUpstream::start().await;
    // 120 a minute is one every 500 ms; a burst of 3.
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_CLIENT_RATE", "120"),
            ("PROXY_CLIENT_RATE_BURST", "3"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let status = |key: &'static str| {
        let url = url.clone();
        async move {
            let response = client().request(as_client(&url, key)).await.unwrap();
            let status = response.status().as_u16();
            if status == 429 {
                refusal(response).await
            } else {
                body_bytes(response).await;
                (status.to_string(), 0)
            }
        }
    };
    for _ in 0..3 {
        assert_eq!(status("ck-limits-web-8001").await.0, "200");
    }
    assert_eq!(
        status("ck-limits-web-8001").await,
        ("proxy_rate_limit".into(), 1)
    );
    // Another client's bucket is full.
    assert_eq!(status("ck-limits-batch-8002").await.0, "200");
    assert_eq!(mock.requests().len(), 4);

    // One token comes back after 500 ms, and only one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status("ck-limits-web-8001").await.0, "200");
    assert_eq!(status("ck-limits-web-8001").await.0, "proxy_rate_limit");
    assert_eq!(mock.requests().len(), 5);
}

#[tokio::test]
async fn without_client_keys_every_client_is_one_anonymous_client() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_MAX_IN_FLIGHT", "1")]).await;
    let url = proxy.url("/v1/chat/completions");
    let held = client()
        .request(stream_request(&url, 5, 100))
        .await
        .unwrap();
    let held = tokio::spawn(read_all(held));
    // Another connection, another "client", the same anonymous slot.
    let refused = client().request(chat_request(&url, "{}")).await.unwrap();
    assert_eq!(refusal(refused).await.0, "proxy_concurrency_limit");
    held.await.unwrap();
    let response = client().request(chat_request(&url, "{}")).await.unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"200\",outcome=\"completed\",client=\"anonymous\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn the_upstreams_own_429_passes_through_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_CLIENT_MAX_IN_FLIGHT", "5"),
            ("PROXY_CLIENT_RATE", "600"),
        ],
    )
    .await;
    let mut request = as_client(&proxy.url("/v1/chat/completions"), "ck-limits-web-8001");
    request.headers_mut().insert("x-mock-status", 429.into());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    let body = body_bytes(response).await;
    // Exactly what the mock sent (see support/mock.rs), so that SDKs back off as OpenAI asks.
    assert_eq!(headers["retry-after"], "20");
    assert_eq!(headers["x-ratelimit-limit-requests"], "5000");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-reset-requests"], "19.5s");
    assert_eq!(
        &body[..],
        br#"{"error":{"message":"mock error 429","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn metrics_and_the_access_log_name_the_client_and_never_its_key() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[(
            "PROXY_CLIENT_KEYS",
            "web:ck-limits-web-8001,ck-limits-bare-8003",
        )],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    for key in [
        "ck-limits-web-8001",
        "ck-limits-bare-8003",
        "ck-limits-wrong-8004",
    ] {
        let response = client().request(as_client(&url, key)).await.unwrap();
        body_bytes(response).await;
    }
    let text = metrics_text(&proxy).await;
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("memoctopus_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains("status=\"200\"") && l.contains("client=\"web\"")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("status=\"200\"") && l.contains("client=\"key-")),
        "the bare key has no derived name: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("status=\"401\"") && l.contains("client=\"unauthenticated\"")),
        "{requests:?}"
    );
    assert!(!text.contains("ck-limits"), "a key is in /metrics");
    let logs = capture::logs().text();
    assert!(
        logs.contains("\"client\":\"web\""),
        "no client in the access log"
    );
    assert!(!logs.contains("ck-limits"), "a key is in the log");
}
