//! Who the proxy trusts upstream, and how it gets there: `PROXY_UPSTREAM_CA` adds to the
//! built-in roots, a bad certificate is answered as a certificate problem, and `HTTPS_PROXY`
//! (with `NO_PROXY`) sends the connection through a forward proxy's `CONNECT` tunnel.

mod support;

use memoctopus::Config;
use support::connect_proxy::ConnectProxy;
use support::mock::{MockOptions, CHAT_JSON};
use support::tls::{Alpn, TestCa};
use support::*;

/// The forward proxy's password in these tests; the secret scan looks for it.
const PROXY_PASSWORD: &str = "pp-egress-secret-4242";

async fn chat(proxy: &TestProxy) -> (u16, String) {
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, body_string(response).await)
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_ca_is_a_certificate_error() {
    let (mock, _their_ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let our_ca = TestCa::new("someone-else");
    let proxy = ProxyStart::tls(&mock, &our_ca, "auto").start().await;
    let (status, body) = chat(&proxy).await;
    assert_eq!(status, 502);
    let (code, message) = error_fields(&body);
    assert_eq!(code, "upstream_certificate_error");
    assert!(message.contains("certificate"), "{message}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_certificate_error() {
    // The mock's certificate names localhost; the proxy is told 127.0.0.1.
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let base = format!("https://127.0.0.1:{}/v1", mock.addr.port());
    let proxy = ProxyStart::tls(&mock, &ca, "auto")
        .settings(&[("OPENAI_BASE_URL", &base)])
        .start()
        .await;
    let (status, body) = chat(&proxy).await;
    assert_eq!(status, 502);
    let (code, message) = error_fields(&body);
    assert_eq!(code, "upstream_certificate_error");
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn the_extra_ca_adds_to_the_built_in_roots() {
    // Trusted through PROXY_UPSTREAM_CA; the unit test in src/upstream/connect.rs checks that
    // the built-in public roots stay beside it.
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "auto").start().await;
    assert_eq!(chat(&proxy).await, (200, CHAT_JSON.to_owned()));
}

#[test]
fn a_bad_upstream_ca_file_names_the_setting() {
    let dir = scratch_dir("badca");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for path in [
        "/nonexistent/ca.pem".to_owned(),
        garbage.display().to_string(),
        empty.display().to_string(),
        dir.display().to_string(),
    ] {
        let error = Config::from_vars([
            ("OPENAI_API_KEY", SERVER_KEY.to_string()),
            ("PROXY_UPSTREAM_CA", path.clone()),
        ])
        .unwrap_err();
        assert_eq!(error.setting, "PROXY_UPSTREAM_CA", "{path}: {error}");
    }
}

#[tokio::test]
async fn egress_goes_through_the_connect_proxy_with_its_credentials() {
    for protocol in ["auto", "http1", "http2"] {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let forward = ConnectProxy::start(None).await;
        let proxy_url = format!("http://egress-user:{PROXY_PASSWORD}@{}", forward.addr);
        let proxy = ProxyStart::tls(&mock, &ca, protocol)
            .settings(&[("HTTPS_PROXY", &proxy_url)])
            .start()
            .await;
        assert_eq!(
            chat(&proxy).await,
            (200, CHAT_JSON.to_owned()),
            "{protocol}"
        );
        assert_eq!(
            chat(&proxy).await,
            (200, CHAT_JSON.to_owned()),
            "{protocol}"
        );
        let tunnels = forward.tunnels();
        assert!(!tunnels.is_empty(), "{protocol}: no tunnel");
        for tunnel in &tunnels {
            assert_eq!(tunnel.target, format!("localhost:{}", mock.addr.port()));
            // Basic base64("egress-user:pp-egress-secret-4242")
            assert_eq!(
                tunnel.proxy_authorization.as_deref(),
                Some("Basic ZWdyZXNzLXVzZXI6cHAtZWdyZXNzLXNlY3JldC00MjQy")
            );
        }
        // The upstream saw the request, through the tunnel, with SNI.
        assert_eq!(mock.requests().len(), 2);
        assert!(mock
            .log
            .lock()
            .unwrap()
            .sni
            .iter()
            .all(|s| s.as_deref() == Some("localhost")));
        // The client's own Proxy-Authorization never goes anywhere.
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        request.headers_mut().insert(
            "proxy-authorization",
            "Basic client-key-never-forwarded".parse().unwrap(),
        );
        assert_eq!(client().request(request).await.unwrap().status(), 200);
        assert!(!mock
            .last_request()
            .headers
            .contains_key("proxy-authorization"));
    }
}

#[tokio::test]
async fn no_proxy_bypasses_the_forward_proxy() {
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let forward = ConnectProxy::start(None).await;
    let proxy = ProxyStart::tls(&mock, &ca, "auto")
        .settings(&[("HTTPS_PROXY", &forward.url()), ("NO_PROXY", "localhost")])
        .start()
        .await;
    assert_eq!(chat(&proxy).await, (200, CHAT_JSON.to_owned()));
    assert!(forward.tunnels().is_empty());
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_forward_proxy_that_refuses_gets_a_502_naming_the_proxy() {
    for refusal in ["403 Forbidden", "407 Proxy Authentication Required"] {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let forward = ConnectProxy::start(Some(refusal)).await;
        let proxy_url = format!("http://egress-user:{PROXY_PASSWORD}@{}", forward.addr);
        let proxy = ProxyStart::tls(&mock, &ca, "auto")
            .settings(&[("HTTPS_PROXY", &proxy_url)])
            .start()
            .await;
        let (status, body) = chat(&proxy).await;
        assert_eq!(status, 502, "{refusal}");
        let (code, message) = error_fields(&body);
        assert_eq!(code, "forward_proxy_error");
        assert!(
            message.contains(&forward.addr.to_string()),
            "the message must name the proxy: {message}"
        );
        assert!(!message.contains("OpenAI"), "{message}");
        assert!(!message.contains(PROXY_PASSWORD), "{message}");
        assert!(mock.requests().is_empty());
    }
    // The password never reached a log line.
    let logs = capture::logs().text();
    assert!(!logs.contains(PROXY_PASSWORD));
}
