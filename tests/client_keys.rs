//! `PROXY_CLIENT_KEYS`: only clients with a listed bearer token spend the server's key.

mod support;

use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn a_missing_or_wrong_client_key_gets_401_and_nothing_goes_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", "ck-alpha, ck-beta")]).await;
    for auth in [
        None,
        Some("Bearer ck-gamma"),
        Some("Bearer ck-alph"),
        Some("Basic ck-alpha"),
    ] {
        let mut builder = Request::post(proxy.url("/v1/chat/completions"));
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let response = client()
            .request(builder.body(Full::from("{}")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let (code, _) = error_fields(&body_string(response).await);
        assert_eq!(code, "invalid_api_key");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_listed_client_key_passes_and_is_replaced_by_the_server_key() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", "ck-alpha,ck-beta")]).await;
    let request = Request::post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer ck-beta")
        .body(Full::from("{}"))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        mock.last_request().headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
}

#[tokio::test]
async fn health_and_ready_stay_open() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", "ck-alpha")]).await;
    for path in ["/health", "/ready"] {
        let response = client()
            .get(proxy.url(path).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}
