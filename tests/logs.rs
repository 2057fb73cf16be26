//! Logs at `trace`, over full exchanges including errors and a cancel: one access line per
//! exchange, and neither the server's key nor a client's key anywhere.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

fn captured() -> support::capture::Captured {
    support::capture::logs()
}

fn text(logs: &support::capture::Captured) -> String {
    logs.text()
}

const CLIENT_KEY: &str = "ck-client-secret-987654";

#[tokio::test]
async fn trace_logs_never_contain_a_key_and_every_exchange_has_an_access_line() {
    let logs = captured();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", CLIENT_KEY)]).await;
    let auth = format!("Bearer {CLIENT_KEY}");

    // A success over HTTP/1.1, a stream over h2c, an upstream error, a bad client key.
    for (client, mock_header) in [
        (client(), None),
        (h2c_client(), Some(("x-mock-events", "3"))),
        (client(), Some(("x-mock-status", "429"))),
    ] {
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
        request
            .headers_mut()
            .insert("x-client-request-id", "log-test-ok".parse().unwrap());
        if let Some((name, value)) = mock_header {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let response = client.request(request).await.unwrap();
        let _ = body_bytes(response).await;
    }
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    request.headers_mut().insert(
        "authorization",
        "Bearer ck-wrong-guess-0001".parse().unwrap(),
    );
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 401);

    // A cancel mid-stream.
    let mut stream = raw_connect(proxy.addr).await;
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Client-Request-Id: log-test-cancel\r\nx-mock-events: 50\r\nx-mock-interval-ms: 20\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let all = text(&logs);
    assert!(
        all.contains("TRACE") || all.contains("\"level\":\"TRACE\""),
        "trace logging was not on"
    );
    for secret in [SERVER_KEY, CLIENT_KEY, "ck-wrong-guess-0001"] {
        assert!(!all.contains(secret), "{secret} appears in the logs");
    }

    let access: Vec<serde_json::Value> = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "memoctopus::access")
        .collect();
    let of = |id: &str| {
        access
            .iter()
            .filter(|v| v["fields"]["request_id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let ok = of("log-test-ok");
    assert_eq!(ok.len(), 3, "{ok:?}");
    let statuses: Vec<u64> = ok
        .iter()
        .map(|v| v["fields"]["status"].as_u64().unwrap())
        .collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    let streamed = ok
        .iter()
        .find(|v| v["fields"]["sse_events"] == 4)
        .expect("SSE events not counted");
    assert_eq!(streamed["fields"]["outcome"], "completed");
    assert_eq!(
        streamed["fields"]["upstream_request_id"],
        "req_mock_upstream_1"
    );
    for field in [
        "method",
        "route",
        "upstream_status",
        "request_bytes",
        "response_bytes",
        "head_ms",
        "total_ms",
    ] {
        assert!(
            !streamed["fields"][field].is_null(),
            "access line lacks {field}"
        );
    }
    let cancel = of("log-test-cancel");
    assert_eq!(cancel.len(), 1, "{access:?}");
    assert_eq!(cancel[0]["fields"]["outcome"], "client_cancelled");
    assert!(cancel[0]["fields"]["sse_events"].as_u64().unwrap() >= 1);
    assert!(cancel[0]["fields"]["response_bytes"].as_u64().unwrap() > 0);
}

/// Error paths too: unreachable upstream, first-byte timeout, an upstream 401 that echoes the
/// key, a body over the limit, an unknown route. Neither the logs nor any byte a client
/// received may carry a key.
#[tokio::test]
async fn error_paths_leak_no_key_to_logs_or_clients() {
    let logs = captured();
    let mock = MockUpstream::start().await;
    let faults = support::faults::FaultUpstream::start().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut received = Vec::new();

    let unreachable = format!("http://127.0.0.1:{closed_port}/v1");
    let faulty = format!("http://{}/v1", faults.addr);
    let setups: [(&str, &[(&str, &str)]); 3] = [
        (&unreachable, &[]),
        (&faulty, &[]),
        (
            &format!("http://{}/v1", mock.addr),
            &[
                ("PROXY_FIRST_BYTE_TIMEOUT", "200ms"),
                ("PROXY_MAX_BODY_BYTES", "10"),
            ],
        ),
    ];
    for (base, extra) in setups {
        let mut vars = vec![("OPENAI_BASE_URL", base), ("PROXY_CLIENT_KEYS", CLIENT_KEY)];
        vars.extend_from_slice(extra);
        let proxy = spawn_proxy(&mock, &vars).await;
        for (path, header, body) in [
            ("/v1/chat/completions", ("x-fault", "unauthorized"), "{}"),
            (
                "/v1/chat/completions",
                ("x-mock-head-delay-ms", "1000"),
                "{}",
            ),
            (
                "/v1/chat/completions",
                ("x-any", "1"),
                "{\"much\":\"too long for ten bytes\"}",
            ),
            ("/v1/nowhere", ("x-any", "1"), "{}"),
        ] {
            let mut request = chat_request(&proxy.url(path), body);
            request
                .headers_mut()
                .insert("authorization", auth.parse().unwrap());
            request
                .headers_mut()
                .insert(header.0, header.1.parse().unwrap());
            let response = client().request(request).await.unwrap();
            received.extend(format!("{:?}", response.headers()).into_bytes());
            received.extend(body_bytes(response).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = text(&logs);
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.contains("upstream_auth_failed")
            && received.contains("upstream_first_byte_timeout")
    );
    assert!(received.contains("upstream_unreachable") && received.contains("request_too_large"));
    for secret in [SERVER_KEY, CLIENT_KEY, "sk-serve"] {
        assert!(!all.contains(secret), "{secret} appears in the logs");
        assert!(!received.contains(secret), "{secret} reached a client");
    }
    assert!(
        all.contains("check OPENAI_API_KEY"),
        "the operator was not told about the rejected key"
    );
}
