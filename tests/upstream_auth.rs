//! `PROXY_UPSTREAM_AUTH` and `PROXY_UPSTREAM_QUERY`: upstreams that take the key elsewhere and
//! want parameters on every URL, as Azure OpenAI does, in both of its URL styles.

mod support;

use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn api_key_auth_sends_the_key_in_api_key_and_no_authorization() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}/openai/v1", mock.addr);
    let proxy = spawn_proxy(
        &mock,
        &[
            ("OPENAI_BASE_URL", &base),
            ("PROXY_UPSTREAM_AUTH", "api-key"),
        ],
    )
    .await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), r#"{"model":"gpt-4o"}"#);
    // An Azure SDK sends its key as api-key; a client's key never goes upstream in either.
    request
        .headers_mut()
        .insert("api-key", "client-key-never-forwarded".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let seen = mock.last_request();
    assert_eq!(seen.uri, "/openai/v1/chat/completions");
    assert_eq!(seen.headers["api-key"], SERVER_KEY);
    assert_eq!(seen.headers.get_all("api-key").iter().count(), 1);
    assert!(!seen.headers.contains_key("authorization"));
}

#[tokio::test]
async fn the_configured_query_is_added_unless_the_client_sent_the_name() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[(
            "PROXY_UPSTREAM_QUERY",
            "api-version=2024-10-21&tenant=a%20b",
        )],
    )
    .await;
    for (path, expected) in [
        (
            "/v1/chat/completions",
            "/v1/chat/completions?api-version=2024-10-21&tenant=a%20b",
        ),
        (
            "/v1/chat/completions?api-version=preview",
            "/v1/chat/completions?api-version=preview&tenant=a%20b",
        ),
        (
            "/v1/chat/completions?x=1&tenant=mine",
            "/v1/chat/completions?x=1&tenant=mine&api-version=2024-10-21",
        ),
    ] {
        let response = client()
            .request(chat_request(&proxy.url(path), "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        body_bytes(response).await;
        assert_eq!(mock.last_request().uri, expected);
    }
}

/// Azure's deployment style: `POST /openai/deployments/NAME/chat/completions?api-version=...`,
/// reached through an extra route, with an `AzureOpenAI` SDK's `api-key` checked as a client
/// key, and the server's own key sent as `api-key`.
#[tokio::test]
async fn the_azure_deployment_style_works_through_an_extra_route() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}/openai", mock.addr);
    let proxy = spawn_proxy(
        &mock,
        &[
            ("OPENAI_BASE_URL", &base),
            ("PROXY_UPSTREAM_AUTH", "api-key"),
            ("PROXY_UPSTREAM_QUERY", "api-version=2024-10-21"),
            ("PROXY_EXTRA_ROUTES", "POST /v1/deployments/*"),
            ("PROXY_CLIENT_KEYS", "azure-app:ck-azure-app-9001"),
        ],
    )
    .await;
    let url = proxy.url("/v1/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
    let request = Request::post(&url)
        .header("content-type", "application/json")
        .header("api-key", "ck-azure-app-9001")
        .body(Full::from(r#"{"messages":[]}"#))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let seen = mock.last_request();
    assert_eq!(
        seen.uri,
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], SERVER_KEY);
    assert!(!seen.headers.contains_key("authorization"));

    // A wrong api-key is refused like a wrong bearer token, and goes nowhere.
    let request = Request::post(&url)
        .header("api-key", "ck-azure-wrong-9002")
        .body(Full::from("{}"))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 401);
    body_bytes(response).await;
    assert_eq!(mock.requests().len(), 1);
}
