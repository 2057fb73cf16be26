//! Fail closed: no setting, key-file state, environment quirk or silent connection opens what
//! the configuration shut. Each case is tried from outside, as an attacker or a careless
//! deploy would: the release of settings through the real binary, requests through sockets.

mod support;

use std::process::Command;
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::h2_frames::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const CLIENT_KEY: &str = "ck-fail-closed-4411";

fn with_key(request: http::request::Builder, key: Option<&str>) -> Request<Full<bytes::Bytes>> {
    let request = match key {
        Some(key) => request.header("authorization", format!("Bearer {key}")),
        None => request,
    };
    request.body(Full::new(bytes::Bytes::new())).unwrap()
}

async fn chat_status(proxy: &TestProxy, key: Option<&str>) -> u16 {
    let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    body_bytes(response).await;
    status
}

// ---- Settings and files that would mean "no client check"

#[test]
fn client_key_lists_that_hold_no_key_stop_start_up() {
    let dir = scratch_dir("no-key-lists");
    for value in [",", " , ", ",,", "\t", " "] {
        let (code, stdout, stderr) = check_config_in(
            &dir,
            &[("OPENAI_API_KEY", "sk-test"), ("PROXY_CLIENT_KEYS", value)],
        );
        assert_eq!(code, Some(64), "PROXY_CLIENT_KEYS={value:?}: {stdout}");
        assert!(stderr.contains("PROXY_CLIENT_KEYS"), "{value:?}: {stderr}");
        assert!(!stdout.contains("configuration OK"), "{stdout}");
    }
    for contents in [
        "",
        "\n\n",
        "# the apps\n\n# none yet\n",
        "   \n\t\n",
        "key-for-app-a,key-for-app-b\n",
    ] {
        let file = dir.join("clients");
        std::fs::write(&file, contents).unwrap();
        let (code, _, stderr) = check_config_in(
            &dir,
            &[
                ("OPENAI_API_KEY", "sk-test"),
                ("PROXY_CLIENT_KEYS_FILE", file.to_str().unwrap()),
            ],
        );
        assert_eq!(code, Some(64), "file {contents:?}: {stderr}");
        assert!(stderr.contains("PROXY_CLIENT_KEYS_FILE"), "{stderr}");
        assert!(
            stderr.contains("no client key") || stderr.contains("one name:key entry a line"),
            "{stderr}"
        );
        assert!(!stderr.contains("key-for-app"), "{stderr}");
    }
}

#[tokio::test]
async fn a_key_file_emptied_while_serving_keeps_the_old_keys() {
    let dir = scratch_dir("emptied-keys");
    let file = dir.join("clients");
    std::fs::write(&file, format!("web:{CLIENT_KEY}\n")).unwrap();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS_FILE", file.to_str().unwrap())]).await;
    assert_eq!(chat_status(&proxy, None).await, 401);
    assert_eq!(chat_status(&proxy, Some(CLIENT_KEY)).await, 200);

    let failures =
        r#"memoctopus_key_reloads_total{setting="PROXY_CLIENT_KEYS_FILE",result="error"}"#;
    for (round, contents) in ["", "# rotated out\n\n"].into_iter().enumerate() {
        let tmp = dir.join("clients.tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        // The watcher reads every second: wait until it has refused the change.
        let refused = eventually(Duration::from_secs(5), || async {
            metric(&proxy, failures).await >= (round + 1) as f64
        })
        .await;
        assert!(refused.is_some(), "the {contents:?} file was not refused");
        assert_eq!(chat_status(&proxy, None).await, 401, "{contents:?}");
        assert_eq!(chat_status(&proxy, Some(CLIENT_KEY)).await, 200);
    }
    assert_eq!(
        mock.requests().len(),
        3,
        "only keyed requests went upstream"
    );
}

#[test]
fn an_empty_environment_value_lets_dotenv_apply() {
    let dir = scratch_dir("empty-env");
    std::fs::write(
        dir.join(".env"),
        format!(
            "OPENAI_API_KEY=sk-from-dotenv\nPROXY_CLIENT_KEYS={CLIENT_KEY}\nHOST=127.0.0.1\nPROXY_METRICS_ADDR=127.0.0.1:9191\nPROXY_CLIENT_RATE=60\n"
        ),
    )
    .unwrap();
    // What docker compose passes for `NAME: ${NAME}` when the host has no such variable.
    let (code, stdout, stderr) = check_config_in(
        &dir,
        &[
            ("PROXY_CLIENT_KEYS", ""),
            ("HOST", ""),
            ("PROXY_METRICS_ADDR", ""),
            ("PROXY_CLIENT_RATE", ""),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("PROXY_CLIENT_KEYS=(1 key, masked)"),
        "{stdout}"
    );
    assert!(stdout.contains("HOST=127.0.0.1\n"), "{stdout}");
    assert!(
        stdout.contains("PROXY_METRICS_ADDR=127.0.0.1:9191"),
        "{stdout}"
    );
    assert!(stdout.contains("PROXY_CLIENT_RATE=60 a minute"), "{stdout}");
    assert!(!stdout.contains(CLIENT_KEY), "{stdout}");

    // Only whitespace is neither a value nor unset: refused, naming the setting.
    let (code, _, stderr) = check_config_in(&dir, &[("PROXY_CLIENT_KEYS", "  ")]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("PROXY_CLIENT_KEYS"), "{stderr}");
}

#[test]
fn a_misspelled_setting_is_named_with_the_one_meant_and_never_its_value() {
    let dir = scratch_dir("misspelled");
    let vars = [
        ("OPENAI_API_KEY", "sk-test"),
        ("PROXY_CLIENT_KEY", "ck-misspelled-value-77"),
        ("PROXY_IDLE_TIMEOT", "5s"),
        // What Kubernetes injects for a Service named `proxy`: not a mistake.
        ("PROXY_SERVICE_HOST", "10.0.0.7"),
        ("PROXY_PORT", "tcp://10.0.0.7:8000"),
    ];
    let (code, stdout, stderr) = check_config_in(&dir, &vars);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("PROXY_CLIENT_KEY is not a setting")
            && stdout.contains("did you mean PROXY_CLIENT_KEYS?"),
        "{stdout}"
    );
    assert!(
        stdout.contains("did you mean PROXY_IDLE_TIMEOUT?"),
        "{stdout}"
    );
    assert!(!stdout.contains("PROXY_SERVICE_HOST"), "{stdout}");
    assert!(!stdout.contains("PROXY_PORT "), "{stdout}");
    assert!(!stdout.contains("ck-misspelled-value-77"), "{stdout}");

    // Serving, the same warning is logged at start.
    let mut child = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .env_clear()
        .envs(vars)
        .envs([("HOST", "127.0.0.1"), ("PORT", "0")])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logged = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logged.contains("WARN") && logged.contains("did you mean PROXY_CLIENT_KEYS?"),
        "{logged}"
    );
    assert!(!logged.contains("ck-misspelled-value-77"), "{logged}");
}

// ---- Connections that would hold a slot for ever

#[tokio::test]
async fn a_silent_h2c_connection_is_closed_with_goaway_at_the_header_read_timeout() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_HEADER_READ_TIMEOUT", "300ms"),
            ("PROXY_MAX_CONNECTIONS", "2"),
        ],
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        let mut stream = raw_connect(proxy.addr).await;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        silent.push(stream);
    }
    let started = Instant::now();
    for stream in &mut silent {
        let (types, closed) = frames_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed, "a silent HTTP/2 connection stayed open: {types:?}");
        assert!(types.contains(&7), "closed without GOAWAY: {types:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // Both slots are free again.
    assert_eq!(chat_status(&proxy, None).await, 200);
    assert_eq!(
        metric(
            &proxy,
            r#"memoctopus_connections_closed_total{reason="idle"}"#
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn an_h2c_connection_is_closed_once_idle_after_its_requests_and_never_while_a_stream_runs() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_HEADER_READ_TIMEOUT", "300ms")]).await;
    // A stream of 1 s, over three times the timeout, is not cut.
    let response = h2c_client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 10, 100))
        .await
        .unwrap();
    let (body, complete) = read_all(response).await;
    assert!(complete, "the stream was cut");
    assert_eq!(String::from_utf8_lossy(&body), mock::expected_chat_sse(10));

    // Then one request on a raw connection, and silence: GOAWAY after the timeout.
    let mut stream = raw_connect(proxy.addr).await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    let health = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/health"),
        (":authority", "localhost"),
    ]);
    bytes.extend(frame(1, 0x4 | 0x1, 1, &health));
    stream.write_all(&bytes).await.unwrap();
    let started = Instant::now();
    let (types, closed) = frames_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the idle connection stayed open: {types:?}");
    assert!(types.contains(&1) && types.contains(&7), "{types:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn an_h2c_connection_is_closed_gracefully_after_its_thousandth_request_and_loses_none() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let client = h2c_client();
    for i in 0..1010 {
        let response = client
            .request(with_key(Request::get(proxy.url("/health")), None))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(response.status(), 200, "request {i}");
        body_bytes(response).await;
    }
    assert_eq!(
        metric(
            &proxy,
            r#"memoctopus_connections_closed_total{reason="max_requests"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn streams_reset_right_after_they_start_are_counted() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    let headers = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "localhost"),
        ("content-type", "application/json"),
        ("x-mock-head-delay-ms", "2000"),
    ]);
    for i in 0..40u32 {
        let id = 2 * i + 1;
        let mut bytes = frame(1, 0x4, id, &headers);
        bytes.extend(frame(0, 0x1, id, b"{}"));
        stream.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        stream
            .write_all(&frame(3, 0, id, &8u32.to_be_bytes()))
            .await
            .unwrap();
    }
    let counted = eventually(Duration::from_secs(3), || async {
        metric(&proxy, "memoctopus_client_stream_resets_total").await == 40.0
    })
    .await;
    assert!(
        counted.is_some(),
        "resets counted: {}",
        metric(&proxy, "memoctopus_client_stream_resets_total").await
    );
}

#[tokio::test]
async fn the_admin_listener_serves_probes_without_a_key_and_closes_silent_connections() {
    let mock = MockUpstream::start().await;
    let proxy = ProxyStart::before(&mock)
        .settings(&[
            ("PROXY_CLIENT_KEYS", CLIENT_KEY),
            ("PROXY_HEADER_READ_TIMEOUT", "500ms"),
        ])
        .with_admin()
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let url = |path: &str| format!("http://{admin}{path}");
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/metrics", 200),
        ("/v1/chat/completions", 404),
    ] {
        let response = client()
            .request(with_key(Request::get(url(path)), None))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        body_bytes(response).await;
    }
    // The proxy's own port no longer serves /metrics.
    let response = client()
        .request(with_key(
            Request::get(proxy.url("/metrics")),
            Some(CLIENT_KEY),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Half-sent heads, more than the admin listener's cap: each is closed at the timeout,
    // and none of them costs the proxy's port anything.
    let mut held = Vec::new();
    for _ in 0..memoctopus::bounds::ADMIN_MAX_CONNECTIONS + 10 {
        let mut stream = raw_connect(admin).await;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .unwrap();
        held.push(stream);
    }
    assert_eq!(chat_status(&proxy, Some(CLIENT_KEY)).await, 200);
    let started = Instant::now();
    for stream in &mut held {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed, "a half-sent head held an admin connection");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let response = client()
        .request(with_key(Request::get(url("/health")), None))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

// ---- Client values that would reach OpenAI

const TRAILERS: &str =
    "authorization: Bearer ck-client-value-in-trailer\r\nopenai-project: proj_client\r\nopenai-organization: org_client\r\napi-key: ck-client-api-key\r\n";

#[tokio::test]
async fn http1_request_trailers_never_reach_the_upstream_on_either_protocol() {
    let mock = MockUpstream::start().await;
    for protocol in ["http1", "http2"] {
        let proxy = spawn_proxy(&mock, &[("PROXY_UPSTREAM_PROTOCOL", protocol)]).await;
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: authorization\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n{TRAILERS}\r\n"
        );
        let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{protocol}: {answer}");
        let seen = mock.last_request();
        assert_eq!(seen.body.as_deref(), Some(&b"{}"[..]), "{protocol}");
        assert!(seen.trailers.is_none(), "{protocol}: {:?}", seen.trailers);
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {SERVER_KEY}"),
            "{protocol}"
        );
        assert!(!seen.headers.contains_key("openai-project"));
    }
}

#[tokio::test]
async fn http2_request_trailers_never_reach_an_http2_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_UPSTREAM_PROTOCOL", "http2")]).await;
    let mut stream = raw_connect(proxy.addr).await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    bytes.extend(frame(1, 0x4, 1, &request_headers("localhost")));
    bytes.extend(frame(0, 0, 1, b"{}"));
    let trailers = header_block(&[
        ("authorization", "Bearer ck-client-value-in-trailer"),
        ("openai-project", "proj_client"),
        ("api-key", "ck-client-api-key"),
    ]);
    bytes.extend(frame(1, 0x4 | 0x1, 1, &trailers));
    stream.write_all(&bytes).await.unwrap();
    let answered = eventually(Duration::from_secs(3), || async {
        !mock.requests().is_empty()
    })
    .await;
    assert!(answered.is_some(), "nothing reached the upstream");
    let seen = mock.last_request();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.body.as_deref(), Some(&b"{}"[..]));
    assert!(seen.trailers.is_none(), "{:?}", seen.trailers);
}

// ---- What the proxy's own endpoints tell a stranger

#[tokio::test]
async fn metrics_on_the_proxy_port_need_a_client_key_and_own_endpoints_carry_no_cors() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", &format!("web:{CLIENT_KEY}")),
            ("PROXY_CORS_ORIGINS", "*"),
        ],
    )
    .await;
    let get = |path: &str, key: Option<&str>| {
        with_key(
            Request::get(proxy.url(path)).header("origin", "https://evil.example"),
            key,
        )
    };
    let response = client().request(get("/metrics", None)).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
    let body = body_string(response).await;
    assert!(!body.contains("web"), "{body}");

    let response = client()
        .request(get("/metrics", Some(CLIENT_KEY)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));
    for path in ["/health", "/ready"] {
        let response = client().request(get(path, None)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-origin"),
            "{path}"
        );
    }
    // The forwarded routes still answer browsers.
    let mut chat = chat_request(&proxy.url("/v1/chat/completions"), "{}");
    chat.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    chat.headers_mut().insert(
        "authorization",
        format!("Bearer {CLIENT_KEY}").parse().unwrap(),
    );
    let response = client().request(chat).await.unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn a_bare_keys_name_tells_nothing_about_the_key() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS", CLIENT_KEY)]).await;
    assert_eq!(chat_status(&proxy, Some(CLIENT_KEY)).await, 200);
    let text = metrics_text(&proxy).await;
    assert!(text.contains("client=\"key-1\""), "{text}");
    let digest = ring::digest::digest(&ring::digest::SHA256, CLIENT_KEY.as_bytes());
    let hashed: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!text.contains(&hashed), "a name holds the key's hash");
}

// ---- Smaller gaps

#[tokio::test]
async fn a_long_chunk_size_line_does_not_switch_the_framing_guard_off() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let raw = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000002\r\n{}\r\n0\r\n\r\n\
POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(3)).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    assert!(
        answer.contains("both Content-Length and Transfer-Encoding"),
        "{answer}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn wildcard_routes_refuse_path_parameters_and_raw_non_ascii() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_EXTRA_ROUTES", "GET /v1/models/*")]).await;
    for target in [
        &b"/v1/models/..;/files"[..],
        b"/v1/models/gpt;x",
        b"/v1/models/caf\xc3\xa9",
        b"/v1/models/\xff",
    ] {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(proxy.addr, &raw, Duration::from_secs(2)).await;
        let status = answer.get(9..12).unwrap_or("(closed)");
        assert!(
            status == "404" || status == "400",
            "{}: {answer}",
            String::from_utf8_lossy(target)
        );
    }
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
    let response = client()
        .request(with_key(Request::get(proxy.url("/v1/models/gpt-4o")), None))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_upstream_request_id_that_is_no_request_id_is_not_logged() {
    let logs = capture::logs();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let planted = "sk-proj-planted-by-the-upstream-0099";
    for (id, value) in [
        ("fail-closed-reqid-1", "Bearer sk-proj-planted"),
        ("fail-closed-reqid-2", planted),
        ("fail-closed-reqid-3", "req_0123456789abcdef"),
    ] {
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        request
            .headers_mut()
            .insert("x-mock-request-id", value.parse().unwrap());
        request
            .headers_mut()
            .insert("x-client-request-id", id.parse().unwrap());
        let response = client().request(request).await.unwrap();
        body_bytes(response).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = logs.text();
    let logged = |id: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "memoctopus::access" && v["fields"]["request_id"] == id)
            .map(|v| v["fields"]["upstream_request_id"].clone())
    };
    assert_eq!(logged("fail-closed-reqid-1").unwrap(), "invalid");
    assert_eq!(logged("fail-closed-reqid-2").unwrap(), "invalid");
    assert_eq!(
        logged("fail-closed-reqid-3").unwrap(),
        "req_0123456789abcdef"
    );
    assert!(!text.contains(planted), "the planted value was logged");
}
