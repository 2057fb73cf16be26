//! `PROXY_EXTRA_ROUTES`: more OpenAI routes, forwarded exactly like the built-in ones.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::time::Instant;

const EXTRA: &str = "POST /v1/embeddings, GET /v1/models, GET /v1/models/*, POST /v1/responses, POST /v1/audio/translations, POST /v1/audio/speech";

#[tokio::test]
async fn listed_routes_are_forwarded_with_the_server_key() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_EXTRA_ROUTES", EXTRA)]).await;
    for (method, path) in [
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-4o"),
        ("GET", "/v1/models/ft:gpt-4o-mini:org:custom:abc123"),
        ("POST", "/v1/responses"),
        ("POST", "/v1/audio/translations"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(proxy.url(path))
            .header("authorization", "Bearer client-key")
            .body(Full::from(if method == "POST" { "{}" } else { "" }))
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let seen = mock.last_request();
        assert_eq!(seen.method.as_str(), method);
        assert_eq!(seen.uri, path);
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {SERVER_KEY}")
        );
    }
}

#[tokio::test]
async fn unlisted_routes_and_wildcard_tricks_stay_404() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_EXTRA_ROUTES", "GET /v1/models/*")]).await;
    for path in [
        "/v1/models",
        "/v1/models/",
        "/v1/models/../files",
        "/v1/models/%2e%2e/files",
        "/v1/files",
    ] {
        let response = client()
            .get(proxy.url(path).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = client()
        .request(chat_request(&proxy.url("/v1/models/x"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn the_default_forwards_only_the_two_built_in_routes() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = client()
        .get(proxy.url("/v1/models").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn speech_audio_streams_through_chunk_by_chunk() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_EXTRA_ROUTES", EXTRA)]).await;
    let request = Request::post(proxy.url("/v1/audio/speech"))
        .header("x-mock-binary", "5")
        .header("x-mock-interval-ms", "150")
        .body(Full::from(
            r#"{"model":"gpt-4o-mini-tts","input":"hi","voice":"alloy"}"#,
        ))
        .unwrap();
    let sent = Instant::now();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    assert!(!response.headers().contains_key("content-length"));
    let mut body = response.into_body();
    let mut got = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first.get_or_insert(sent.elapsed());
            got.extend_from_slice(&data);
        }
    }
    assert!(
        first.unwrap() < Duration::from_millis(300),
        "first audio bytes after {first:?}"
    );
    let expected: Vec<u8> = (0..5u8).flat_map(|i| vec![i; 4096]).collect();
    assert_eq!(got, expected);
}

/// The browser flow that never holds a long-lived key: the app's server mints a short-lived
/// client secret through the proxy, and the browser talks to OpenAI with that.
#[tokio::test]
async fn realtime_client_secrets_are_minted_through_an_extra_route() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            (
                "PROXY_EXTRA_ROUTES",
                "GET /v1/realtime, POST /v1/realtime/client_secrets",
            ),
            ("PROXY_CLIENT_KEYS", "app-server:ck-secrets-app-6101"),
        ],
    )
    .await;
    let body = r#"{"session":{"type":"transcription"},"expires_after":{"anchor":"created_at","seconds":60}}"#;
    let request = Request::post(proxy.url("/v1/realtime/client_secrets"))
        .header("authorization", "Bearer ck-secrets-app-6101")
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let seen = mock.last_request();
    assert_eq!(seen.uri, "/v1/realtime/client_secrets");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    assert_eq!(seen.body.as_deref(), Some(body.as_bytes()));
    // The route takes POST only.
    let response = client()
        .get(proxy.url("/v1/realtime/client_secrets").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}
