//! A new user's common mistakes, each met with a message that says what to do: the proxy
//! pointed at itself, the example's placeholder key, OpenAI's URL without `/v1`, TLS to a plain
//! port, and the documents that must name every setting and exit status.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

#[test]
fn an_upstream_that_is_the_proxy_itself_stops_start_up() {
    for (host, base) in [
        ("127.0.0.1", "http://127.0.0.1:9650/v1"),
        ("127.0.0.1", "http://localhost:9650/v1"),
        ("0.0.0.0", "http://127.0.0.1:9650/v1"),
        ("::1", "http://[::1]:9650/v1"),
    ] {
        let (code, _, stderr) = check_config(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("HOST", host),
            ("PORT", "9650"),
            ("OPENAI_BASE_URL", base),
        ]);
        assert_eq!(code, Some(64), "{host} {base}: {stderr}");
        assert!(
            stderr.contains("OPENAI_BASE_URL") && stderr.contains("own address"),
            "{stderr}"
        );
    }
    // Another port on the same machine is another server.
    let (code, _, stderr) = check_config(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("HOST", "127.0.0.1"),
        ("PORT", "9650"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:9651/v1"),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_request_that_comes_back_through_the_proxy_gets_508_after_one_hop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // PORT=0 at start, so that only the per-request guard can catch it.
    let config = memoctopus::Config::from_vars([
        ("OPENAI_API_KEY", SERVER_KEY),
        ("OPENAI_BASE_URL", &format!("http://{addr}/v1")),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
    ])
    .unwrap();
    let proxy = ProxyStart::config(config).on(listener).start().await;
    let started = tokio::time::Instant::now();
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 508);
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "proxy_loop_detected");
    assert!(message.contains("OPENAI_BASE_URL"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Two exchanges in all: the client's, and the one hop that came back and was refused.
    let text = metrics_text(&proxy).await;
    let counted: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("memoctopus_requests_total{") && l.contains("/v1/chat/completions")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 2.0, "the loop went round more than once: {text}");

    // A chain of two proxies is no loop.
    let mock = MockUpstream::start().await;
    let inner = spawn_proxy(&mock, &[]).await;
    let outer = ProxyStart::at(&inner.url("/v1")).start().await;
    let response = client()
        .request(chat_request(&outer.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let via: Vec<_> = mock
        .last_request()
        .headers
        .get_all("via")
        .iter()
        .cloned()
        .collect();
    assert_eq!(via.len(), 2, "{via:?}");
}

#[test]
fn the_example_placeholder_key_starts_with_a_warning_that_says_what_to_do() {
    let (code, stdout, _) = check_config(&[("OPENAI_API_KEY", "sk-replace-me")]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("warning: OPENAI_API_KEY is still sk-replace-me")
            && stdout.contains("mock upstream"),
        "{stdout}"
    );
}

#[test]
fn openais_url_without_v1_is_refused_naming_the_right_one() {
    for base in [
        "https://api.openai.com",
        "https://api.openai.com/",
        "https://api.openai.com/chat",
    ] {
        let (code, _, stderr) =
            check_config(&[("OPENAI_API_KEY", "sk-test"), ("OPENAI_BASE_URL", base)]);
        assert_eq!(code, Some(64), "{base}");
        assert!(stderr.contains("use https://api.openai.com/v1"), "{stderr}");
    }
}

#[tokio::test]
async fn https_to_a_plain_port_suggests_http() {
    let mock = MockUpstream::start().await;
    let proxy = ProxyStart::at(&format!("https://127.0.0.1:{}/v1", mock.addr.port()))
        .start()
        .await;
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let (_, message) = error_fields(&body_string(response).await);
    assert!(
        message.contains("use http:// in OPENAI_BASE_URL"),
        "{message}"
    );
}

#[tokio::test]
async fn the_access_log_shows_the_upstreams_401() {
    let logs = capture::logs();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request
        .headers_mut()
        .insert("x-mock-status", "401".parse().unwrap());
    request
        .headers_mut()
        .insert("x-client-request-id", "first-hour-401".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 502);
    body_bytes(response).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let line = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["target"] == "memoctopus::access" && v["fields"]["request_id"] == "first-hour-401"
        })
        .expect("no access line");
    assert_eq!(line["fields"]["upstream_status"], 401, "{line}");
    assert!(line["fields"]["head_ms"].as_f64().unwrap() >= 0.0, "{line}");
}

#[test]
fn check_config_says_unset_and_durations_as_written() {
    let (code, stdout, _) = check_config(&[("OPENAI_API_KEY", "sk-test")]);
    assert_eq!(code, Some(0));
    for line in [
        "PROXY_SHUTDOWN_DELAY=0s\n",
        "PROXY_HEADER_READ_TIMEOUT=10s\n",
        "PROXY_CLIENT_KEYS=(unset: no client check)\n",
        "PROXY_EXTRA_ROUTES=(unset)\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from {stdout}");
    }
    assert!(!stdout.contains("PROXY_TLS="), "{stdout}");
    assert!(!stdout.contains("0ns"), "{stdout}");
}

#[test]
fn an_address_in_use_exits_69() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let vars = [
        ("OPENAI_API_KEY", "sk-test"),
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
    ];
    assert_eq!(run_once(&[], &vars).0, Some(69));
}

/// The README's Settings table and `config/example.env` name every setting, and nothing that
/// is not one.
#[test]
fn the_readme_and_example_env_document_every_setting_and_exit_status() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("config/example.env")).unwrap();
    let known: Vec<&str> = memoctopus::config::settings::SETTINGS
        .iter()
        .map(|s| s.name)
        .collect();
    for name in &known {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} missing from the README"
        );
        assert!(
            example.contains(&format!("{name}=")),
            "{name} missing from config/example.env"
        );
    }
    for line in example.lines() {
        let line = line.trim_start_matches("# ");
        if let Some((name, _)) = line.split_once('=') {
            if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !name.is_empty() {
                assert!(
                    known.contains(&name),
                    "config/example.env names {name}, not a setting"
                );
            }
        }
    }
    let table = &readme[readme.find("## Settings").unwrap()..];
    let table = &table[..table[3..].find("\n## ").unwrap()];
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        for name in row.split('|').nth(1).unwrap().split('`').skip(1).step_by(2) {
            assert!(
                known.contains(&name),
                "the README's Settings table names {name}"
            );
        }
    }
    for status in ["64", "69"] {
        assert!(
            readme.contains(&format!("exit status {status}"))
                || readme.contains(&format!("| {status} |")),
            "exit status {status} missing from the README"
        );
    }
}

/// With client keys, a request that came back through the proxy but carries no key gets 401,
/// as any keyless request does, and the proxy's `Via` entry is known in any case.
#[tokio::test]
async fn the_key_check_comes_before_the_loop_guard_and_via_is_matched_in_any_case() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", "web:ck-loop-web-1")]).await;
    let url = proxy.url("/v1/chat/completions");
    let keyed = |via: Option<String>, key: Option<&str>| {
        let mut request = chat_request(&url, "{}");
        request.headers_mut().remove("authorization");
        if let Some(key) = key {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        if let Some(via) = via {
            request.headers_mut().insert("via", via.parse().unwrap());
        }
        request
    };
    // The proxy's own entry, as the upstream saw it.
    let response = client()
        .request(keyed(None, Some("ck-loop-web-1")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let ours = mock.last_request().headers["via"]
        .to_str()
        .unwrap()
        .to_owned();
    let shouted = ours.to_ascii_uppercase();
    assert_ne!(shouted, ours);

    let response = client()
        .request(keyed(Some(ours.clone()), None))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a keyless client learned of the loop"
    );
    body_bytes(response).await;
    let response = client()
        .request(keyed(Some(shouted), Some("ck-loop-web-1")))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        508,
        "the entry in upper case was not known"
    );
    let (code, _) = error_fields(&body_string(response).await);
    assert_eq!(code, "proxy_loop_detected");
    assert_eq!(mock.requests().len(), 1);
}
