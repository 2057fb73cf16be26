//! Optional inbound TLS: `PROXY_TLS_CERT` and `PROXY_TLS_KEY` make the proxy speak HTTPS, with
//! HTTP/2 and HTTP/1.1 by ALPN, to a client that trusts the certificate.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use memoctopus::Config;
use support::tls::TestCa;
use support::*;

/// The proxy's certificate for `localhost` and its key, as files, from a test CA of its own.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: TestCa,
}

fn make_cert(name: &str) -> TestCert {
    let ca = TestCa::new(&format!("inbound-{name}"));
    let dir = scratch_dir(&format!("tls-{name}"));
    let (cert, key) = ca.server_files(&dir);
    TestCert { dir, cert, key, ca }
}

fn https_client(
    cert: &TestCert,
    h2: bool,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let roots = cert.ca.roots();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn tls_proxy(mock: &MockUpstream, cert: &TestCert) -> TestProxy {
    let config = Config::from_vars([
        ("OPENAI_API_KEY", SERVER_KEY.to_string()),
        ("OPENAI_BASE_URL", format!("http://{}/v1", mock.addr)),
        ("PROXY_TLS_CERT", cert.cert.display().to_string()),
        ("PROXY_TLS_KEY", cert.key.display().to_string()),
    ])
    .unwrap();
    ProxyStart::config(config).start().await
}

#[tokio::test]
async fn https_with_h2_and_http1_by_alpn() {
    let cert = make_cert("alpn");
    let mock = MockUpstream::start().await;
    let proxy = tls_proxy(&mock, &cert).await;
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );

    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let request = Request::post(&url)
            .header("authorization", "Bearer client-key")
            .header("x-mock-events", "3")
            .body(Full::from(r#"{"stream":true}"#))
            .unwrap();
        let response = https_client(&cert, h2).request(request).await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(
            body_string(response).await,
            support::mock::expected_chat_sse(3)
        );
        assert_eq!(
            mock.last_request().headers["authorization"],
            format!("Bearer {SERVER_KEY}")
        );
    }
    // Plain HTTP on the TLS port gets nowhere.
    let plain = client()
        .get(
            format!("http://127.0.0.1:{}/health", proxy.addr.port())
                .parse()
                .unwrap(),
        )
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[test]
fn bad_or_missing_certificates_name_their_setting() {
    let cert = make_cert("bad");
    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let other = make_cert("other");
    let path = |p: &PathBuf| p.display().to_string();
    for (vars, setting) in [
        (vec![("PROXY_TLS_CERT", path(&cert.cert))], "PROXY_TLS_KEY"),
        (vec![("PROXY_TLS_KEY", path(&cert.key))], "PROXY_TLS_CERT"),
        (
            vec![
                ("PROXY_TLS_CERT", path(&garbage)),
                ("PROXY_TLS_KEY", path(&cert.key)),
            ],
            "PROXY_TLS_CERT",
        ),
        (
            vec![
                ("PROXY_TLS_CERT", "/nonexistent/cert.pem".to_string()),
                ("PROXY_TLS_KEY", path(&cert.key)),
            ],
            "PROXY_TLS_CERT",
        ),
        (
            vec![
                ("PROXY_TLS_CERT", path(&cert.cert)),
                ("PROXY_TLS_KEY", path(&garbage)),
            ],
            "PROXY_TLS_KEY",
        ),
        (
            vec![
                ("PROXY_TLS_CERT", path(&cert.cert)),
                ("PROXY_TLS_KEY", path(&other.key)),
            ],
            "PROXY_TLS_KEY",
        ),
    ] {
        let mut all = vec![("OPENAI_API_KEY", SERVER_KEY.to_string())];
        all.extend(vars);
        let error = Config::from_vars(all).unwrap_err();
        assert_eq!(error.setting, setting, "{error}");
    }
}
