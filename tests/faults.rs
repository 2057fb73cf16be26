//! Broken upstreams: 502 or 504 before the answer starts, an abnormal end after it has started,
//! and a broken connection is never reused.

mod support;

use std::time::Duration;

use support::faults::{FaultUpstream, OK_BODY};
use support::*;

async fn proxy_for(upstream: &FaultUpstream, extra: &[(&str, &str)]) -> TestProxy {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}/v1", upstream.addr);
    let mut vars = vec![("OPENAI_BASE_URL", base.as_str())];
    vars.extend_from_slice(extra);
    spawn_proxy(&mock, &vars).await
}

fn faulty(proxy: &TestProxy, fault: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("x-fault", fault.parse().unwrap());
    request
}

async fn still_serves(proxy: &TestProxy, upstream: &FaultUpstream, connections_before: usize) {
    let response = client().request(faulty(proxy, "none")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, OK_BODY);
    // The one pooled connection went to the faulty exchange, so a new one is needed: the
    // broken connection was not put back.
    assert_eq!(
        upstream.connections(),
        connections_before + 1,
        "the broken connection was reused"
    );
}

#[tokio::test]
async fn failures_before_the_head_give_502() {
    let upstream = FaultUpstream::start().await;
    let proxy = proxy_for(&upstream, &[]).await;
    for fault in ["reset-before-head", "close-before-head", "malformed-head"] {
        let response = client().request(faulty(&proxy, fault)).await.unwrap();
        assert_eq!(response.status(), 502, "{fault}");
        // The request was written before the upstream failed: it may have been processed,
        // so it was sent once, and the answer says so.
        let (code, message) = error_fields(&body_string(response).await);
        assert_eq!(code, "upstream_request_may_have_been_processed", "{fault}");
        assert!(message.contains("may have processed"), "{fault}: {message}");
        let before = upstream.connections();
        still_serves(&proxy, &upstream, before).await;
    }
}

#[tokio::test]
async fn failures_after_the_head_end_the_answer_abnormally() {
    let upstream = FaultUpstream::start().await;
    let proxy = proxy_for(&upstream, &[("PROXY_IDLE_TIMEOUT", "300ms")]).await;
    for fault in [
        "reset-mid-stream",
        "stall-mid-stream",
        "short-body",
        "close-mid-chunk",
    ] {
        let response = client().request(faulty(&proxy, fault)).await.unwrap();
        assert_eq!(response.status(), 200, "{fault}");
        let (_, clean) = tokio::time::timeout(Duration::from_secs(3), read_all(response))
            .await
            .unwrap();
        assert!(!clean, "{fault}: a broken answer looked complete");
        let before = upstream.connections();
        still_serves(&proxy, &upstream, before).await;
    }
}

#[tokio::test]
async fn h2_clients_see_a_reset_when_the_upstream_breaks_mid_stream() {
    let upstream = FaultUpstream::start().await;
    let proxy = proxy_for(&upstream, &[]).await;
    let response = h2c_client()
        .request(faulty(&proxy, "reset-mid-stream"))
        .await
        .unwrap();
    let (_, clean) = read_all(response).await;
    assert!(!clean);
}

#[tokio::test]
async fn an_upstream_401_is_not_passed_through() {
    let upstream = FaultUpstream::start().await;
    let proxy = proxy_for(&upstream, &[]).await;
    let response = client()
        .request(faulty(&proxy, "unauthorized"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = body_string(response).await;
    let (code, message) = error_fields(&body);
    assert_eq!(code, "upstream_auth_failed");
    assert!(
        message.contains("upstream rejected the proxy's API key"),
        "{message}"
    );
    assert!(
        !body.contains("sk-serve") && !body.contains("6789"),
        "the key's echo reached the client: {body}"
    );
}
