//! The Realtime API's WebSocket (`GET /v1/realtime`, enabled as an extra route) through the
//! proxy: the server's key goes upstream, the client's never does, frames pass both ways as
//! bytes, and either side closing closes the other.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::ws_mock::WsMock;
use support::*;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const REALTIME: (&str, &str) = ("PROXY_EXTRA_ROUTES", "GET /v1/realtime");

async fn spawn(ws: &WsMock, extra: &[(&str, &str)]) -> TestProxy {
    let mut vars = vec![REALTIME];
    vars.extend_from_slice(extra);
    ProxyStart::at(&format!("http://{}/v1", ws.addr))
        .settings(&vars)
        .start()
        .await
}

/// Opens a WebSocket to the proxy with `headers`; a refused upgrade comes back as its answer.
async fn connect(
    proxy: &TestProxy,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), http::Response<Option<Vec<u8>>>> {
    let mut request = format!("ws://{}{path}", proxy.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Ok(connected) => Ok(connected),
        Err(tungstenite::Error::Http(response)) => {
            if let Some(body) = response.body() {
                capture::received(body);
            }
            Err(*response)
        }
        Err(error) => panic!("the WebSocket handshake failed: {error}"),
    }
}

const CLIENT_AUTH: (&str, &str) = ("authorization", "Bearer client-key-never-forwarded");

async fn echo(ws: &mut Ws, message: Message) -> Message {
    ws.send(message).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no echo within 5 s")
        .unwrap()
        .unwrap();
    capture::received(reply.clone().into_data().as_ref());
    reply
}

#[tokio::test]
async fn text_and_binary_frames_round_trip_with_the_server_key_upstream() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let (mut socket, response) = connect(
        &proxy,
        "/v1/realtime?model=gpt-realtime",
        &[CLIENT_AUTH, ("sec-websocket-protocol", "realtime")],
    )
    .await
    .expect("upgrade refused");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "realtime");
    assert_eq!(response.headers()["x-request-id"], "req_ws_mock_1");

    let text = Message::text(r#"{"type":"session.update","session":{"type":"realtime"}}"#);
    assert_eq!(echo(&mut socket, text.clone()).await, text);
    let audio = Message::binary((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
    assert_eq!(echo(&mut socket, audio.clone()).await, audio);

    let seen = &ws.handshakes()[0];
    assert_eq!(seen.uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    assert_eq!(seen.headers["sec-websocket-protocol"], "realtime");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers.contains_key("sec-websocket-key"));
    assert!(seen.headers.contains_key("x-client-request-id"));
    assert_eq!(
        metric(&proxy, "memoctopus_open_realtime_sessions").await,
        1.0
    );

    socket.close(None).await.unwrap();
    ws.wait_for_end(Duration::from_secs(2)).await.unwrap();
    let closed = eventually(Duration::from_secs(2), || async {
        metric(&proxy, "memoctopus_open_realtime_sessions").await == 0.0
    })
    .await;
    assert!(closed.is_some(), "the session gauge stayed up");
    let up = metric(
        &proxy,
        "memoctopus_request_bytes_total{route=\"/v1/realtime\"}",
    )
    .await;
    let down = metric(
        &proxy,
        "memoctopus_response_bytes_total{route=\"/v1/realtime\"}",
    )
    .await;
    // Frames from the client are masked and a little larger than the mock's answers.
    assert!(up > 70_000.0 && down > 70_000.0, "up {up}, down {down}");
    let logs = capture::logs().text();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"route\":\"/v1/realtime\"")
                && l.contains("\"status\":101")
                && l.contains("\"request_bytes\":700")
            // The client sent the Close frame; the upstream answered it and closed first.
            && l.contains("\"outcome\":\"upstream_closed\"")),
        "no access log line for the session"
    );
}

#[tokio::test]
async fn without_the_route_a_websocket_gets_404_and_the_connection_closes() {
    let ws = WsMock::start(None).await;
    let proxy = ProxyStart::at(&format!("http://{}/v1", ws.addr))
        .start()
        .await;
    let refused = connect(&proxy, "/v1/realtime?model=gpt-realtime", &[CLIENT_AUTH])
        .await
        .expect_err("upgraded without the route");
    assert_eq!(refused.status(), 404);
    assert_eq!(refused.headers()["connection"], "close");
    assert!(ws.handshakes().is_empty());
}

#[tokio::test]
async fn a_browser_key_in_the_subprotocol_is_checked_and_never_forwarded() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(
        &ws,
        &[("PROXY_CLIENT_KEYS", "browser:ck-realtime-browser-6001")],
    )
    .await;
    let path = "/v1/realtime?intent=transcription";
    let (mut socket, response) = connect(
        &proxy,
        path,
        &[(
            "sec-websocket-protocol",
            "realtime, openai-insecure-api-key.ck-realtime-browser-6001",
        )],
    )
    .await
    .expect("the subprotocol key was refused");
    assert_eq!(response.headers()["sec-websocket-protocol"], "realtime");
    let hello = Message::text("{}");
    assert_eq!(echo(&mut socket, hello.clone()).await, hello);
    let seen = &ws.handshakes()[0];
    assert_eq!(seen.headers["sec-websocket-protocol"], "realtime");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );

    for protocols in [
        Some("realtime, openai-insecure-api-key.ck-realtime-wrong-6002"),
        Some("realtime"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = protocols
            .map(|p| ("sec-websocket-protocol", p))
            .into_iter()
            .collect();
        let refused = connect(&proxy, path, &headers).await.expect_err("admitted");
        assert_eq!(refused.status(), 401, "{protocols:?}");
    }
    assert_eq!(
        ws.handshakes().len(),
        1,
        "a refused client reached the upstream"
    );
    // An unkeyed proxy also strips a browser's key (it would be OpenAI's key otherwise).
    let open = spawn(&ws, &[]).await;
    connect(
        &open,
        path,
        &[(
            "sec-websocket-protocol",
            "openai-insecure-api-key.sk-browser-user-key-6003, realtime",
        )],
    )
    .await
    .expect("upgrade refused");
    let seen = ws.handshakes().pop().unwrap();
    assert_eq!(seen.headers["sec-websocket-protocol"], "realtime");
}

#[tokio::test]
async fn the_client_leaving_closes_the_upstream_within_100_ms() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let (mut socket, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .unwrap();
    echo(&mut socket, Message::text("x")).await;
    // Gone without a Close frame, as a killed tab or a dropped network is.
    let left = Instant::now();
    drop(socket);
    let ended = ws
        .wait_for_end(Duration::from_secs(2))
        .await
        .expect("the upstream never saw it");
    assert!(
        ended - left <= DROP_LIMIT,
        "the upstream saw it after {:?}",
        ended - left
    );
}

#[tokio::test]
async fn the_upstream_closing_closes_the_client_within_100_ms() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let (mut socket, _) = connect(
        &proxy,
        "/v1/realtime?model=m&mock=close-after-ms-200",
        &[CLIENT_AUTH],
    )
    .await
    .unwrap();
    // The mock's Close frame arrives, then the connection ends.
    loop {
        match tokio::time::timeout(Duration::from_secs(3), socket.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => continue,
            Ok(Some(Ok(_))) => continue,
            Ok(None | Some(Err(_))) => break,
            Err(_) => panic!("the client's side stayed open"),
        }
    }
    let seen = Instant::now();
    let closed = ws.closed_first()[0];
    assert!(
        seen - closed <= DROP_LIMIT,
        "the client saw it after {:?}",
        seen - closed
    );
}

#[tokio::test]
async fn an_idle_session_is_closed_after_the_idle_timeout() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[("PROXY_IDLE_TIMEOUT", "400ms")]).await;
    let (mut socket, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .unwrap();
    let opened = Instant::now();
    // Traffic keeps it open past the timeout.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        echo(&mut socket, Message::text("keep")).await;
    }
    let active = Instant::now();
    assert!(active - opened >= Duration::from_millis(800));
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the idle session stayed open");
    let idle = active.elapsed();
    assert!(
        idle >= Duration::from_millis(350) && idle < Duration::from_millis(1200),
        "closed after {idle:?} idle"
    );
    ws.wait_for_end(Duration::from_secs(1))
        .await
        .expect("the upstream stayed open");
    let logs = capture::logs().text();
    assert!(
        logs.contains("\"outcome\":\"idle_timeout\""),
        "no idle_timeout in the log"
    );
}

#[tokio::test]
async fn a_refused_upgrade_passes_back_with_its_status() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let refused = connect(
        &proxy,
        "/v1/realtime?model=m&mock=refuse-429",
        &[CLIENT_AUTH],
    )
    .await
    .expect_err("upgraded");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "7");
    assert_eq!(refused.headers()["connection"], "close");
    let body = String::from_utf8(refused.body().clone().unwrap()).unwrap();
    assert!(body.contains("rate_limit_exceeded"), "{body}");

    // The upstream refusing the server's key is a 502, and its message never reaches the client.
    let wrong_key = ProxyStart::at(&format!("http://{}/v1", ws.addr))
        .settings(&[
            REALTIME,
            ("OPENAI_API_KEY", "sk-realtime-wrong-server-key-6004"),
        ])
        .start()
        .await;
    let refused = connect(&wrong_key, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .expect_err("upgraded");
    assert_eq!(refused.status(), 502);
    let body = String::from_utf8(refused.body().clone().unwrap()).unwrap();
    assert_eq!(error_fields(&body).0, "upstream_auth_failed");
}

#[tokio::test]
async fn sessions_count_against_the_client_limits() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[("PROXY_CLIENT_MAX_IN_FLIGHT", "1")]).await;
    let (mut first, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .unwrap();
    let refused = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .expect_err("a second session was admitted");
    assert_eq!(refused.status(), 429);
    let body = String::from_utf8(refused.body().clone().unwrap()).unwrap();
    assert_eq!(error_fields(&body).0, "proxy_concurrency_limit");
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    let admitted = eventually(Duration::from_secs(2), || async {
        connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
            .await
            .is_ok()
    })
    .await;
    assert!(admitted.is_some(), "the slot never came back");
}

#[tokio::test]
async fn the_drain_waits_for_a_session_until_the_grace_and_then_closes_it() {
    let ws = WsMock::start(None).await;
    let mut proxy = spawn(&ws, &[("PROXY_SHUTDOWN_GRACE", "600ms")]).await;
    let (mut socket, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .unwrap();
    let signalled = Instant::now();
    proxy.shutdown();
    // Still served during the grace.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        echo(&mut socket, Message::text("still")).await,
        Message::text("still")
    );
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the session outlived the grace");
    let after = signalled.elapsed();
    assert!(
        after >= Duration::from_millis(550),
        "closed after {after:?}"
    );
    let report = proxy.handle.await.unwrap().unwrap();
    assert_eq!(report.cut, 1);
    ws.wait_for_end(Duration::from_secs(1))
        .await
        .expect("the upstream stayed open");
}

/// The path users take: `wss://` to a TLS upstream that offers h2 and http/1.1, as OpenAI's
/// edge does; the upgrade goes over a connection of its own that offered only http/1.1.
#[tokio::test]
async fn over_a_tls_upstream_the_upgrade_goes_over_http1() {
    let ca = tls::TestCa::new("ws");
    let ws = WsMock::start(Some(ca.server_config(tls::Alpn::Both))).await;
    let base_url = format!("https://localhost:{}/v1", ws.addr.port());
    let ca_path = ca.ca_pem_path();
    let proxy = ProxyStart::at(&base_url)
        .settings(&[REALTIME, ("PROXY_UPSTREAM_CA", &ca_path)])
        .start()
        .await;
    let (mut socket, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .expect("upgrade refused");
    let audio = Message::binary(vec![7u8; 200_000]);
    assert_eq!(echo(&mut socket, audio.clone()).await, audio);
    assert_eq!(
        ws.handshakes()[0].headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
}

/// 25 MiB of audio frames each way through the real binary: every byte comes back in order,
/// and the proxy's memory does not grow with what passes through it.
#[tokio::test]
async fn a_25_mib_audio_stream_passes_in_constant_memory() {
    let ws = WsMock::start(None).await;
    let base_url = format!("http://{}/v1", ws.addr);
    let mut child = Binary::start(
        &scratch_dir("realtime-25m"),
        &[
            ("OPENAI_API_KEY", SERVER_KEY),
            ("OPENAI_BASE_URL", &base_url),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("PROXY_EXTRA_ROUTES", "GET /v1/realtime"),
            ("PROXY_LOG_FORMAT", "json"),
        ],
    );
    let proxy = TestProxy::external(child.addr);
    let (socket, _) = connect(&proxy, "/v1/realtime?intent=transcription", &[CLIENT_AUTH])
        .await
        .expect("upgrade refused");
    let baseline = memory_kib(child.pid(), "VmRSS:");

    const FRAME: usize = 32 * 1024;
    const FRAMES: usize = 800; // 25 MiB
    let (mut sink, mut stream) = socket.split();
    let sending = tokio::spawn(async move {
        for i in 0..FRAMES {
            let frame: Vec<u8> = (0..FRAME).map(|j| ((i * 7 + j) % 251) as u8).collect();
            sink.send(Message::binary(frame)).await.unwrap();
        }
        sink
    });
    let mut received = 0usize;
    while received < FRAMES {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream stalled")
            .unwrap()
            .unwrap();
        let data = message.into_data();
        let expected: Vec<u8> = (0..FRAME)
            .map(|j| ((received * 7 + j) % 251) as u8)
            .collect();
        assert!(
            data[..] == expected[..],
            "frame {received} came back different"
        );
        received += 1;
    }
    let _sink = sending.await.unwrap();
    let peak = memory_kib(child.pid(), "VmHWM:");
    child.kill();
    assert!(
        peak < baseline + 8 * 1024,
        "the proxy grew from {baseline} KiB to a peak of {peak} KiB carrying 25 MiB each way"
    );
}

/// A session keeps its connection's slot under `PROXY_MAX_CONNECTIONS`: at the limit, the next
/// client waits in the listen backlog until the session ends.
#[tokio::test]
async fn a_session_holds_its_connection_slot() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[("PROXY_MAX_CONNECTIONS", "1")]).await;
    let (mut socket, _) = connect(&proxy, "/v1/realtime?model=m", &[CLIENT_AUTH])
        .await
        .unwrap();
    let health = {
        let url = proxy.url("/health");
        tokio::spawn(async move { client().get(url.parse().unwrap()).await.map(|r| r.status()) })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !health.is_finished(),
        "a second connection was served beside the session"
    );
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    let status = tokio::time::timeout(Duration::from_secs(3), health)
        .await
        .expect("the waiting client was never served")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_key_subprotocol_in_any_case_and_on_any_request_is_taken_out() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(
        &ws,
        &[("PROXY_CLIENT_KEYS", "browser:ck-realtime-case-6101")],
    )
    .await;
    let (_socket, _) = connect(
        &proxy,
        "/v1/realtime",
        &[(
            "sec-websocket-protocol",
            "realtime, OpenAI-Insecure-API-Key.ck-realtime-case-6101",
        )],
    )
    .await
    .expect("the key in another case was not read");
    let seen = ws.handshakes().pop().unwrap();
    assert_eq!(seen.headers["sec-websocket-protocol"], "realtime");

    let open = spawn(&ws, &[]).await;
    connect(
        &open,
        "/v1/realtime",
        &[(
            "sec-websocket-protocol",
            "OPENAI-INSECURE-API-KEY.sk-browser-upper-6102, realtime",
        )],
    )
    .await
    .expect("upgrade refused");
    let seen = ws.handshakes().pop().unwrap();
    assert_eq!(seen.headers["sec-websocket-protocol"], "realtime");

    // A plain GET on the route, no upgrade: the subprotocol's key is taken out all the same.
    let mock = MockUpstream::start().await;
    let plain = spawn_proxy(&mock, &[REALTIME]).await;
    let request = http::Request::get(plain.url("/v1/realtime"))
        .header(
            "sec-websocket-protocol",
            "openai-insecure-api-key.sk-browser-plain-6103",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.last_request();
    assert!(
        !seen.headers.contains_key("sec-websocket-protocol"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn an_upgrade_from_a_browser_origin_is_switched_only_for_an_allowed_origin() {
    let ws = WsMock::start(None).await;
    let allowing = spawn(&ws, &[("PROXY_CORS_ORIGINS", "https://app.example")]).await;
    let refused = connect(
        &allowing,
        "/v1/realtime",
        &[("origin", "https://evil.example")],
    )
    .await
    .expect_err("switched for another origin");
    assert_eq!(refused.status(), 403);
    connect(
        &allowing,
        "/v1/realtime",
        &[("origin", "https://app.example")],
    )
    .await
    .expect("the allowed origin was refused");
    // Without PROXY_CORS_ORIGINS no browser origin may open a session (a page on any site
    // could otherwise spend the key through a sidecar on localhost).
    let closed = spawn(&ws, &[]).await;
    let refused = connect(
        &closed,
        "/v1/realtime",
        &[("origin", "https://evil.example")],
    )
    .await
    .expect_err("switched for a browser origin");
    assert_eq!(refused.status(), 403);
    // A client that is no browser sends no Origin, and is switched.
    connect(&closed, "/v1/realtime", &[])
        .await
        .expect("refused");
    assert_eq!(ws.handshakes().len(), 2);
}

#[tokio::test]
async fn an_http10_upgrade_or_an_upgrade_with_a_body_is_refused() {
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let upgrade = "Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for raw in [
        format!("GET /v1/realtime HTTP/1.0\r\n{upgrade}\r\n"),
        format!("GET /v1/realtime HTTP/1.1\r\n{upgrade}Content-Length: 5\r\n\r\nhello"),
    ] {
        let answer = raw_exchange(proxy.addr, raw.as_bytes(), Duration::from_secs(2)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{raw}: {answer}"
        );
        assert!(answer.contains("invalid_request_error"), "{answer}");
    }
    assert!(
        ws.handshakes().is_empty(),
        "a refused upgrade reached the upstream"
    );
}

#[tokio::test]
async fn a_sessions_usage_is_read_from_its_response_done_events_and_charged() {
    let logs = capture::logs();
    let ws = WsMock::start(None).await;
    // A budget of 150 with nothing reserved: the session is admitted, costs 180, and spends it.
    let proxy = spawn(
        &ws,
        &[
            (
                "PROXY_CLIENT_KEYS",
                "talker:ck-realtime-talker-7001 token_budget=150/day",
            ),
            ("PROXY_CLIENT_OUTPUT_RESERVE", "0"),
        ],
    )
    .await;
    let headers = [
        ("authorization", "Bearer ck-realtime-talker-7001"),
        ("x-client-request-id", "rt-usage"),
        (
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        ),
    ];
    let (mut socket, response) = connect(&proxy, "/v1/realtime?model=gpt-realtime", &headers)
        .await
        .expect("upgrade refused");
    assert!(!response.headers().contains_key("sec-websocket-extensions"));
    // No compression is offered upstream, so the frames stay readable.
    assert!(!ws.handshakes()[0]
        .headers
        .contains_key("sec-websocket-extensions"));

    socket.send(Message::text("mock:responses")).await.unwrap();
    let mut texts = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the mock's events stopped")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = &next {
            texts.push(text.to_string());
            if text.contains("mock.done") {
                break;
            }
        }
    }
    // Every event reached the client whole, the fragmented ones joined by its own library.
    assert_eq!(texts.len(), 5);
    assert!(texts[2].ends_with(r#""output_token_details":{"text_tokens":10,"audio_tokens":40}}}}"#));
    socket.close(None).await.unwrap();
    ws.wait_for_end(Duration::from_secs(2)).await.unwrap();

    let (input, output, cached) = support::ws_mock::RESPONSES_USAGE;
    let series = |kind: &str| {
        format!(
            "memoctopus_tokens_total{{client=\"talker\",model=\"gpt-realtime\",upstream=\"default\",type=\"{kind}\"}}"
        )
    };
    wait_for_metric(
        &proxy,
        &series("input"),
        input as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&proxy, &series("output")).await, output as f64);
    assert_eq!(metric(&proxy, &series("cached")).await, cached as f64);
    let line = logs.access_line("rt-usage");
    assert_eq!(line["route"], "/v1/realtime");
    assert_eq!(line["usage"], "reported", "{line}");
    assert_eq!(line["model"], "gpt-realtime");
    assert_eq!(line["input_tokens"], input);
    assert_eq!(line["output_tokens"], output);
    assert_eq!(line["cached_tokens"], cached);

    // The session's 180 tokens went to the budget: the next session is refused.
    let refused = connect(&proxy, "/v1/realtime?model=gpt-realtime", &headers[..1])
        .await
        .expect_err("admitted over the budget");
    assert_eq!(refused.status(), 429);
    assert_eq!(ws.handshakes().len(), 1);
}

#[tokio::test]
async fn a_session_without_usage_or_with_unreadable_frames_is_estimated_and_says_why() {
    let logs = capture::logs();
    let ws = WsMock::start(None).await;
    let proxy = spawn(&ws, &[]).await;
    let open = |id: &'static str| {
        let proxy = &proxy;
        async move {
            connect(proxy, "/v1/realtime", &[("x-client-request-id", id)])
                .await
                .expect("upgrade refused")
                .0
        }
    };
    // An echo, then the client leaves: nothing reported.
    let mut quiet = open("rt-quiet").await;
    let hello = Message::text(r#"{"type":"session.update","session":{"instructions":"hi"}}"#);
    assert_eq!(echo(&mut quiet, hello).await.len(), 57);
    quiet.close(None).await.unwrap();
    // A compressed message: the client's library refuses it, and the meter cannot read it.
    let mut compressed = open("rt-compressed").await;
    compressed
        .send(Message::text("mock:compressed"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), compressed.next()).await;
    assert!(
        matches!(next, Ok(Some(Err(_)) | None)),
        "the client read {next:?}"
    );
    drop(compressed);
    for id in ["rt-quiet", "rt-compressed"] {
        let ended = eventually(Duration::from_secs(5), || async {
            logs.text().contains(&format!("\"request_id\":\"{id}\""))
        })
        .await;
        assert!(ended.is_some(), "no access line for {id}");
    }
    let quiet = logs.access_line("rt-quiet");
    assert_eq!(quiet["usage"], "estimated");
    assert_eq!(quiet["usage_reason"], "not_reported");
    // Input: a token for every four bytes the client sent, its 57 bytes of JSON in a masked
    // frame (63) and its Close frame (6). Output: the strings in the echo's nested value,
    // `instructions` and `hi`, 14 bytes.
    assert_eq!(quiet["request_bytes"], 69);
    assert_eq!(quiet["input_tokens"], 18, "{quiet}");
    assert_eq!(quiet["output_tokens"], 4, "{quiet}");
    let unread = logs.access_line("rt-compressed");
    assert_eq!(unread["usage"], "estimated");
    assert_eq!(unread["usage_reason"], "compressed");
    // One token for every byte the upstream sent: the frame's 2-byte header and 24 bytes.
    assert_eq!(unread["output_tokens"], 26, "{unread}");
}

#[tokio::test]
async fn an_upgrade_refused_with_429_switches_on_the_next_upstream_which_then_keeps_it() {
    use support::fleet::{Behaviour, FleetUpstream};
    let busy = FleetUpstream::start(
        "busy",
        Behaviour::Refuse(429, vec![("retry-after", "30".to_owned())]),
    )
    .await;
    let ws = WsMock::start(None).await;
    let dir = scratch_dir("realtime-failover");
    std::fs::write(dir.join("busy-key"), "sk-fleet-busy").unwrap();
    std::fs::write(dir.join("ws-key"), SERVER_KEY).unwrap();
    std::fs::write(
        dir.join("upstreams.toml"),
        format!(
            "[[upstream]]\nname = \"busy\"\nbase_url = \"{}\"\napi_key_file = \"busy-key\"\npriority = 0\n\n\
             [[upstream]]\nname = \"ws\"\nbase_url = \"http://{}/v1\"\napi_key_file = \"ws-key\"\npriority = 1\n",
            busy.base_url(),
            ws.addr
        ),
    )
    .unwrap();
    let proxy = ProxyStart::upstreams_file(&dir.join("upstreams.toml"))
        .settings(&[REALTIME])
        .start()
        .await;
    for session in 0..2 {
        let (mut socket, response) =
            connect(&proxy, "/v1/realtime?model=gpt-realtime", &[CLIENT_AUTH])
                .await
                .expect("upgrade refused");
        assert_eq!(response.status(), 101);
        let text = Message::text(format!(r#"{{"type":"session.update","n":{session}}}"#));
        assert_eq!(echo(&mut socket, text.clone()).await, text);
    }
    // busy was asked once, with its own key, then rested; ws switched both.
    let asked = busy.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].authorization, "Bearer sk-fleet-busy");
    let switched = ws.handshakes();
    assert_eq!(switched.len(), 2);
    assert_eq!(
        switched[0].headers["authorization"],
        format!("Bearer {SERVER_KEY}")
    );
    assert_eq!(switched[0].uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_upstream_failovers_total{from=\"busy\",to=\"ws\",reason=\"rate_limited\"}"
        )
        .await,
        1.0
    );
}
