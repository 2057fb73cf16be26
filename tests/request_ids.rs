//! Every exchange has an id, sent upstream as X-Client-Request-Id and back to the client.

mod support;

use support::*;

#[tokio::test]
async fn a_sane_client_id_is_kept_both_ways() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("x-client-request-id", "trace-abc-123".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["x-client-request-id"], "trace-abc-123");
    // OpenAI's own id passes through untouched.
    assert_eq!(response.headers()["x-request-id"], "req_mock_upstream_1");
    assert_eq!(
        mock.last_request().headers["x-client-request-id"],
        "trace-abc-123"
    );
}

#[tokio::test]
async fn missing_or_insane_ids_are_replaced_by_a_generated_one() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut seen = Vec::new();
    for id in [None, Some("has space"), Some(&*"x".repeat(513))] {
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        if let Some(id) = id {
            request
                .headers_mut()
                .insert("x-client-request-id", id.parse().unwrap());
        }
        let response = client().request(request).await.unwrap();
        let returned = response.headers()["x-client-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(returned.starts_with("memo-"), "{returned}");
        assert_eq!(
            mock.last_request().headers["x-client-request-id"],
            returned.as_str()
        );
        seen.push(returned);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "generated ids repeat");
}

#[tokio::test]
async fn proxy_made_errors_carry_the_id_too() {
    let proxy = ProxyStart::without_upstream().start().await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("x-request-id", "mine-1".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-client-request-id"], "mine-1");
}
