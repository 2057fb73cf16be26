//! Plain JSON exchanges: what the upstream receives, and what the client gets back.

mod support;

use http::{Request, StatusCode, Version};
use http_body_util::Full;
use support::mock::{CHAT_JSON, GZIP_BYTES};
use support::*;

const CHAT_BODY: &str = r#"{"model":"gpt-4","messages":[{"role":"developer","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]}"#;

#[tokio::test]
async fn chat_json_round_trip_swaps_the_key_and_keeps_end_to_end_headers() {
    let mock = MockUpstream::start().await;
    // With the usage meter off, Accept-Encoding too passes (tests/usage.rs has it on).
    let proxy = spawn_proxy(&mock, &[("PROXY_USAGE", "off")]).await;

    let request = Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key-never-forwarded")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dies here")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("x-request-id", "client-chosen-id")
        .header("accept-encoding", "gzip, br")
        .header("openai-beta", "assistants=v2")
        .header("openai-project", "proj_client_choice")
        .body(Full::from(CHAT_BODY))
        .unwrap();
    let response = client().request(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-request-id"], "req_mock_upstream_1");
    assert_eq!(h["openai-processing-ms"], "42");
    assert_eq!(h["x-ratelimit-remaining-requests"], "4999");
    assert_eq!(h["x-client-request-id"], "client-chosen-id");
    assert!(
        !h.contains_key("keep-alive"),
        "hop-by-hop Keep-Alive came back to the client"
    );
    assert_eq!(body_string(response).await, CHAT_JSON);

    let seen = mock.last_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(seen.headers["host"], mock.addr.to_string());
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "openai-project",
        "proxy-authorization",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream"
        );
    }
    let connection = seen
        .headers
        .get("connection")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        connection.is_none() || connection.as_deref() == Some("keep-alive"),
        "{connection:?}"
    );
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["accept-encoding"], "gzip, br");
    assert_eq!(seen.headers["openai-beta"], "assistants=v2");
    assert_eq!(seen.headers["x-request-id"], "client-chosen-id");
    assert_eq!(seen.headers["x-client-request-id"], "client-chosen-id");
    assert_eq!(seen.headers["content-length"], CHAT_BODY.len().to_string());
    assert_eq!(seen.body.unwrap(), CHAT_BODY.as_bytes());
}

#[tokio::test]
async fn organization_and_project_come_from_the_server_settings() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("OPENAI_ORGANIZATION", "org-server"),
            ("OPENAI_PROJECT", "proj_server"),
        ],
    )
    .await;
    let request = Request::post(proxy.url("/v1/chat/completions"))
        .header("openai-organization", "org-client")
        .body(Full::from(CHAT_BODY))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.last_request();
    assert_eq!(seen.headers["openai-organization"], "org-server");
    assert_eq!(seen.headers["openai-project"], "proj_server");
}

#[tokio::test]
async fn query_string_is_kept_and_base_path_is_used() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}/openai/v1/", mock.addr);
    let proxy = spawn_proxy(&mock, &[("OPENAI_BASE_URL", &base)]).await;
    let response = client()
        .request(chat_request(
            &proxy.url("/v1/chat/completions?api-version=2024-06-01&x=a%20b"),
            CHAT_BODY,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        mock.last_request().uri,
        "/openai/v1/chat/completions?api-version=2024-06-01&x=a%20b"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_body() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    for status in [400u16, 429, 500, 503] {
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), CHAT_BODY);
        request.headers_mut().insert("x-mock-status", status.into());
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), status);
        let remaining = if status == 429 { "0" } else { "4999" };
        assert_eq!(
            response.headers()["x-ratelimit-remaining-requests"],
            remaining
        );
        let body = body_string(response).await;
        assert_eq!(
            body,
            format!(
                r#"{{"error":{{"message":"mock error {status}","type":"requests","param":null,"code":"rate_limit_exceeded"}}}}"#
            )
        );
    }
}

#[tokio::test]
async fn gzip_answers_stay_gzip() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), CHAT_BODY);
    request
        .headers_mut()
        .insert("x-mock-gzip", "1".parse().unwrap());
    request
        .headers_mut()
        .insert("accept-encoding", "gzip".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        response.headers()["content-length"],
        GZIP_BYTES.len().to_string()
    );
    assert_eq!(body_bytes(response).await, GZIP_BYTES);
}

#[tokio::test]
async fn health_and_ready_answer_without_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = client()
        .get(proxy.url("/health").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(body_string(response).await, r#"{"status":"ok"}"#);
    let response = client()
        .get(proxy.url("/ready").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = h2c_client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), CHAT_BODY))
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req_mock_upstream_1");
    assert_eq!(body_string(response).await, CHAT_JSON);
    let seen = mock.last_request();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    assert_eq!(seen.body.unwrap(), CHAT_BODY.as_bytes());
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let client = client();
    for _ in 0..5 {
        let response = client
            .request(chat_request(&proxy.url("/v1/chat/completions"), CHAT_BODY))
            .await
            .unwrap();
        assert_eq!(body_string(response).await, CHAT_JSON);
    }
    assert_eq!(mock.requests().len(), 5);
    assert_eq!(mock.log.lock().unwrap().connections_opened, 1);
}
