//! `PROXY_CORS_ORIGINS`: browsers get preflights answered and may read answers; unset, no
//! CORS header ever appears.

mod support;

use http::Request;
use http_body_util::Full;
use support::*;

fn preflight(url: &str, origin: &str) -> Request<Full<bytes::Bytes>> {
    Request::options(url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_gets_204_from_the_proxy() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[(
            "PROXY_CORS_ORIGINS",
            "https://app.example.com, https://other.example",
        )],
    )
    .await;
    let response = client()
        .request(preflight(
            &proxy.url("/v1/chat/completions"),
            "https://app.example.com",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type, x-stainless-os"
    );
    assert!(h.contains_key("access-control-max-age"));
    assert_eq!(h["vary"], "origin");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_cors_headers() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CORS_ORIGINS", "https://app.example.com")]).await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["vary"], "origin");
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("x-client-request-id"),
        "{exposed}"
    );
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CORS_ORIGINS", "https://app.example.com")]).await;
    let response = client()
        .request(preflight(
            &proxy.url("/v1/chat/completions"),
            "https://evil.example",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn unset_means_no_cors_at_all() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let response = client()
        .request(preflight(
            &proxy.url("/v1/chat/completions"),
            "https://app.example.com",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert!(response
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("access-control-")));
}
