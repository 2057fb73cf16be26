//! Every token charge applied once, and nothing free: against a real `redis-server` that
//! answers late, rejects a charge, runs out of memory or restarts between admission and charge;
//! a drain with streams in flight; 50 concurrent requests against a budget of 100 on HTTP/1.1,
//! HTTP/2 and three replicas; and the answers the meter cannot read, which are charged an
//! estimate that the log and the metrics name.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::redis::RedisServer;
use support::*;

const SPENDER: &str = "ck-once-spend-0001";
/// The chat JSON answer's usage: 31 input and 17 output tokens.
const CHAT_COST: u64 = 48;

/// How long a backend switch may take to show in `/metrics`.
const WAIT: Duration = Duration::from_secs(15);
const SHARED: &str = "memoctopus_limits_backend{state=\"shared\"}";
const LOCAL: &str = "memoctopus_limits_backend{state=\"local\"}";

fn day() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
}

/// The spender's count for today under `prefix`.
fn count_key(prefix: &str) -> String {
    format!("{prefix}{{spender}}:tokens:day:{}", day())
}

fn chat(url: &str, answer: &str, head_delay_ms: u64) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {SPENDER}"))
        .header("x-mock-answer", answer)
        .header("x-mock-head-delay-ms", head_delay_ms.to_string())
        .body(Full::from("{}"))
        .unwrap()
}

async fn status_of(client: &TestClient, request: Request<Full<Bytes>>) -> u16 {
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    body_bytes(response).await;
    status
}

async fn shared_proxy(
    mock: &MockUpstream,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> TestProxy {
    let url = redis.url();
    let mut vars = vec![(
        "PROXY_CLIENT_KEYS",
        "spender:ck-once-spend-0001 token_budget=1000000/day",
    )];
    if !extra.iter().any(|(k, _)| *k == "PROXY_LIMITS_REDIS_URL") {
        vars.push(("PROXY_LIMITS_REDIS_URL", url.as_str()));
    }
    vars.extend_from_slice(extra);
    let proxy = spawn_proxy(mock, &vars).await;
    wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
    proxy
}

/// Waits until Redis holds `expected` for `key`, then checks that it still does a while later:
/// a charge sent again would show by then.
async fn settles_at(redis: &RedisServer, key: &str, expected: u64) {
    let expected = expected.to_string();
    let reached = eventually(Duration::from_secs(15), || async {
        redis.get(key) == expected
    })
    .await;
    assert!(
        reached.is_some(),
        "{key} never read {expected}: {:?}",
        redis.dump()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(redis.get(key), expected, "{:?}", redis.dump());
}

/// No slot and no reservation is left in Redis for the spender.
fn nothing_held(redis: &RedisServer, prefix: &str) {
    let dump = redis.dump();
    for what in ["in_flight", "reserved"] {
        let key = format!("{prefix}{{spender}}:{what}");
        assert!(
            dump.iter().all(|(k, _)| *k != key),
            "{key} is left: {dump:?}"
        );
    }
}

/// The end of a test whose charge timed out once: `tokens` counted once, the timeout counted,
/// Redis in force again, and nothing left held.
async fn counted_once_after_a_timeout(proxy: &TestProxy, redis: &RedisServer, tokens: u64) {
    settles_at(redis, &count_key("memoctopus:"), tokens).await;
    assert!(
        metric(
            proxy,
            "memoctopus_limits_redis_errors_total{kind=\"timeout\"}"
        )
        .await
            >= 1.0,
        "{}",
        metrics_text(proxy).await
    );
    wait_for_metric(proxy, SHARED, 1.0, WAIT).await;
    nothing_held(redis, "memoctopus:");
}

/// A TCP relay in front of Redis that passes requests at once and, while `hold` is set, keeps
/// Redis's replies back: Redis applies a write whose answer then comes late, as over a network
/// that stalls.
async fn stalling_relay(
    redis_port: u16,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    while hold.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_charge_whose_answer_comes_late_is_sent_again_and_counted_once() {
    use std::sync::atomic::Ordering;
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = stalling_relay(redis.port, hold.clone()).await;
    let url = format!("redis://127.0.0.1:{relay}");
    let proxy = shared_proxy(&mock, &redis, &[("PROXY_LIMITS_REDIS_URL", url.as_str())]).await;
    let chat_url = proxy.url("/v1/chat/completions");
    // Admitted by Redis; the answer ends while Redis's replies are held for longer than a
    // write may take (2 s): Redis applied the charge, and the proxy, not knowing, sends it
    // again.
    let exchange =
        tokio::spawn(async move { status_of(&client(), chat(&chat_url, "chat-json", 400)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    hold.store(true, Ordering::Relaxed);
    assert_eq!(exchange.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        redis.get(&count_key("memoctopus:")),
        CHAT_COST.to_string(),
        "applied while its answer was held"
    );
    hold.store(false, Ordering::Relaxed);
    // Once Redis answers again, the proxy has sent the charge again.
    wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
    counted_once_after_a_timeout(&proxy, &redis, CHAT_COST).await;
}

#[tokio::test]
async fn a_charge_while_redis_sleeps_is_counted_once() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let proxy = shared_proxy(&mock, &redis, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    // Admitted by Redis; the answer ends while Redis sleeps for longer than a write may take.
    let exchange =
        tokio::spawn(async move { status_of(&client(), chat(&url, "chat-json", 400)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let port = redis.port;
    // Off the runtime's thread, which the proxy shares: nothing here may block it.
    let sleeper = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "3"])
            .output()
            .unwrap()
    });
    assert_eq!(exchange.await.unwrap(), 200);
    let slept = sleeper.await.unwrap();
    assert_eq!(String::from_utf8_lossy(&slept.stdout).trim(), "OK");
    counted_once_after_a_timeout(&proxy, &redis, CHAT_COST).await;
}

#[tokio::test]
async fn a_charge_redis_rejects_is_dropped_and_the_good_ones_count_once() {
    let logs = support::capture::logs();
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let proxy = shared_proxy(&mock, &redis, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    // One answer reports more tokens than a Redis count can hold, beside three good ones.
    let mut exchanges = tokio::task::JoinSet::new();
    for answer in ["chat-json", "chat-json-poisoned", "chat-json", "chat-json"] {
        let url = url.clone();
        exchanges.spawn(async move { status_of(&client(), chat(&url, answer, 200)).await });
    }
    assert_eq!(exchanges.join_all().await, [200; 4]);
    settles_at(&redis, &count_key("memoctopus:"), 3 * CHAT_COST).await;
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_limits_redis_errors_total{kind=\"response\"}"
        )
        .await,
        1.0,
        "{}",
        metrics_text(&proxy).await
    );
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_limits_redis_errors_total{kind=\"connection\"}"
        )
        .await,
        0.0
    );
    let rejected = logs
        .text()
        .lines()
        .filter(|l| l.contains("rejected a charge"))
        .count();
    assert_eq!(rejected, 1, "logged once");
    // Redis stayed the one that decides.
    assert_eq!(metric(&proxy, SHARED).await, 1.0);
    assert_eq!(status_of(&client(), chat(&url, "chat-json", 0)).await, 200);
    settles_at(&redis, &count_key("memoctopus:"), 4 * CHAT_COST).await;
    nothing_held(&redis, "memoctopus:");
}

#[tokio::test]
async fn a_charge_redis_has_no_memory_for_waits_and_is_counted_once_when_it_has() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let proxy = shared_proxy(&mock, &redis, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    let exchange =
        tokio::spawn(async move { status_of(&client(), chat(&url, "chat-json", 500)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Out of memory, with Redis's default policy (noeviction): every write is refused.
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "1"]).trim(), "OK");
    assert_eq!(exchange.await.unwrap(), 200);
    wait_for_metric(&proxy, LOCAL, 1.0, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        redis.get(&count_key("memoctopus:")),
        "",
        "nothing applied while refused"
    );
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).trim(), "OK");
    settles_at(&redis, &count_key("memoctopus:"), CHAT_COST).await;
    wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
    nothing_held(&redis, "memoctopus:");
}

#[tokio::test]
async fn a_charge_after_redis_restarted_empty_lands_once_in_the_new_one() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let proxy = shared_proxy(&mock, &redis, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    let exchange =
        tokio::spawn(async move { status_of(&client(), chat(&url, "chat-json", 600)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Admitted by the first Redis; charged to a new one that has neither the slot nor the
    // scripts.
    redis.restart();
    assert_eq!(exchange.await.unwrap(), 200);
    settles_at(&redis, &count_key("memoctopus:"), CHAT_COST).await;
    wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
    nothing_held(&redis, "memoctopus:");
}

#[tokio::test]
async fn a_drain_writes_every_charge_and_slot_before_the_process_ends() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    // The streamed answer's usage: 12 input and 34 output tokens.
    const STREAM_COST: u64 = 46;
    for round in 0..20 {
        let prefix = format!("drain{round}:");
        let mut proxy = shared_proxy(
            &mock,
            &redis,
            &[
                ("PROXY_LIMITS_REDIS_PREFIX", prefix.as_str()),
                ("PROXY_SHUTDOWN_GRACE", "10s"),
            ],
        )
        .await;
        let url = proxy.url("/v1/chat/completions");
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let mut request = chat(&url, "chat-sse", 0);
            request
                .headers_mut()
                .insert("x-mock-interval-ms", "200".parse().unwrap());
            streams.spawn(async move {
                let response = client().request(request).await.unwrap();
                let status = response.status().as_u16();
                let (_, complete) = read_all(response).await;
                (status, complete)
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.shutdown();
        let report = tokio::time::timeout(Duration::from_secs(20), &mut proxy.handle)
            .await
            .expect("the drain ends")
            .unwrap()
            .unwrap();
        assert_eq!((report.finished, report.cut), (10, 0), "round {round}");
        assert_eq!(streams.join_all().await, [(200, true); 10], "round {round}");
        // Written before the process ended: read at once, not eventually.
        assert_eq!(
            redis.get(&count_key(&prefix)),
            (10 * STREAM_COST).to_string(),
            "round {round}: {:?}",
            redis.dump()
        );
        nothing_held(&redis, &prefix);
    }
}

/// 50 requests of one client at once, each held 3 s by the upstream so that all are in flight
/// together; returns how many were answered 200, and checks that the others got the budget's
/// 429.
async fn fifty_at_once(proxies: &[TestProxy], client: &TestClient) -> u64 {
    let mut exchanges = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = proxies[i % proxies.len()].url("/v1/chat/completions");
        let client = client.clone();
        exchanges.spawn(async move {
            let response = client.request(chat(&url, "chat-json", 3000)).await.unwrap();
            let status = response.status().as_u16();
            let body = body_string(response).await;
            if status == 429 {
                assert_eq!(error_fields(&body).0, "proxy_token_budget", "{body}");
            }
            status
        });
    }
    let statuses = exchanges.join_all().await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 200).count() as u64
}

/// The README's bound: spent < budget + the sum of (cost - reservation) over the requests in
/// flight at the last admission + that last one's reservation.
fn bound(budget: u64, admitted: u64, cost: u64, reserve: u64) -> u64 {
    budget + admitted * cost.saturating_sub(reserve) + reserve
}

#[tokio::test]
async fn fifty_concurrent_requests_cannot_overrun_a_budget_of_100() {
    let mock = MockUpstream::start().await;
    // A 2-byte JSON body reserves 1 token for its input, and 10 for its answer: 11 each, so
    // that 9 in flight (99) still leave room and a tenth does not (110).
    let keys = (
        "PROXY_CLIENT_KEYS",
        "spender:ck-once-spend-0001 token_budget=100/day",
    );
    let reserve = ("PROXY_CLIENT_OUTPUT_RESERVE", "10");
    for (name, client) in [("HTTP/1.1", client()), ("HTTP/2", h2c_client())] {
        let proxy = spawn_proxy(&mock, &[keys, reserve]).await;
        let admitted = fifty_at_once(std::slice::from_ref(&proxy), &client).await;
        assert_eq!(admitted, 10, "{name}");
        assert!(admitted * CHAT_COST < bound(100, admitted, CHAT_COST, 11));
        // Spent: nothing more passes in this window.
        assert_eq!(
            status_of(
                &client,
                chat(&proxy.url("/v1/chat/completions"), "chat-json", 0)
            )
            .await,
            429
        );
    }
    // With the default reserve (1024 tokens for the answer), one request at a time.
    let proxy = spawn_proxy(&mock, &[keys]).await;
    assert_eq!(
        fifty_at_once(std::slice::from_ref(&proxy), &client()).await,
        1
    );

    // Three replicas through one Redis admit as one process does.
    let redis = RedisServer::start();
    let url = redis.url();
    let shared = ("PROXY_LIMITS_REDIS_URL", url.as_str());
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let proxy = spawn_proxy(&mock, &[keys, reserve, shared]).await;
        wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
        replicas.push(proxy);
    }
    let admitted = fifty_at_once(&replicas, &client()).await;
    assert_eq!(admitted, 10);
    settles_at(&redis, &count_key("memoctopus:"), admitted * CHAT_COST).await;
    nothing_held(&redis, "memoctopus:");
}

async fn missing(proxy: &TestProxy, route: &str, reason: &str) -> f64 {
    metric(
        proxy,
        &format!("memoctopus_usage_missing_total{{client=\"spender\",route=\"{route}\",reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test]
async fn answers_the_meter_cannot_read_are_charged_an_estimate_that_says_why() {
    let logs = support::capture::logs();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            (
                "PROXY_CLIENT_KEYS",
                "spender:ck-once-spend-0001 token_budget=1000000/day",
            ),
            ("PROXY_EXTRA_ROUTES", "POST /v1/audio/speech,GET /v1/models"),
        ],
    )
    .await;
    let send = |path: &str, id: &str, mock_headers: &[(&str, &str)], body: Bytes, json: bool| {
        let mut request = Request::post(proxy.url(path))
            .header("authorization", format!("Bearer {SPENDER}"))
            .header("x-client-request-id", id)
            .header(
                "content-type",
                if json {
                    "application/json"
                } else {
                    "multipart/form-data; boundary=b0undary"
                },
            );
        for (name, value) in mock_headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(body)).unwrap()
    };
    let chat_body = Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#);
    let audio = Bytes::from(multipart(8192, "b0undary"));

    // A transcription as plain text: input from the upload, output from the text.
    let text = support::usage_answers::answer("transcription-text")
        .unwrap()
        .body();
    let request = send(
        "/v1/audio/transcriptions",
        "free-text",
        &[("x-mock-answer", "transcription-text")],
        audio.clone(),
        false,
    );
    assert_eq!(status_of(&client(), request).await, 200);
    // Speech: 3 chunks of 4 KiB of audio/mpeg, a token a KiB.
    let request = send(
        "/v1/audio/speech",
        "free-speech",
        &[("x-mock-binary", "3"), ("x-mock-interval-ms", "0")],
        chat_body.clone(),
        true,
    );
    assert_eq!(status_of(&client(), request).await, 200);
    // Compressed though asked for identity: a token a byte.
    let request = send(
        "/v1/chat/completions",
        "free-gzip",
        &[("x-mock-gzip", "1")],
        chat_body.clone(),
        true,
    );
    let response = client().request(request).await.unwrap();
    let gzip_len = body_bytes(response).await.len() as u64;
    // A stream without include_usage: a token for every four bytes of its data lines.
    let stream = support::usage_answers::answer("chat-sse-without-usage").unwrap();
    let request = send(
        "/v1/chat/completions",
        "free-stream",
        &[("x-mock-answer", stream.name)],
        chat_body.clone(),
        true,
    );
    assert_eq!(status_of(&client(), request).await, 200);
    // Cancelled while the upstream works on it: the prompt was there.
    let request = send(
        "/v1/chat/completions",
        "free-cancelled",
        &[("x-mock-head-delay-ms", "3000")],
        chat_body.clone(),
        true,
    );
    let cancelled =
        tokio::time::timeout(Duration::from_millis(500), client().request(request)).await;
    assert!(cancelled.is_err(), "the head came early");
    // Not metered: a GET, and the upstream's own error.
    let request = Request::get(proxy.url("/v1/models"))
        .header("authorization", format!("Bearer {SPENDER}"))
        .header("x-client-request-id", "free-models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(status_of(&client(), request).await, 200);
    let request = send(
        "/v1/chat/completions",
        "free-429",
        &[("x-mock-status", "429")],
        chat_body.clone(),
        true,
    );
    assert_eq!(status_of(&client(), request).await, 429);

    let cancelled_seen = eventually(Duration::from_secs(5), || async {
        missing(&proxy, "/v1/chat/completions", "no_answer").await == 1.0
    })
    .await;
    assert!(cancelled_seen.is_some(), "{}", metrics_text(&proxy).await);

    let data_bytes: u64 = stream
        .writes
        .iter()
        .map(|w| w.trim_end().strip_prefix("data:").unwrap().len() as u64)
        .sum();
    let chat_input = (chat_body.len() as u64).div_ceil(4);
    for (id, reason, input, output) in [
        (
            "free-text",
            "not_json",
            (audio.len() as u64).div_ceil(1024),
            (text.len() as u64).div_ceil(4),
        ),
        ("free-speech", "not_json", chat_input, 12),
        ("free-gzip", "compressed", chat_input, gzip_len),
        (
            "free-stream",
            "not_reported",
            chat_input,
            data_bytes.div_ceil(4),
        ),
        ("free-cancelled", "no_answer", chat_input, 0),
    ] {
        let line = logs.access_line(id);
        assert_eq!(line["usage"], "estimated", "{id}: {line}");
        assert_eq!(line["usage_reason"], reason, "{id}: {line}");
        assert_eq!(line["input_tokens"], input, "{id}: {line}");
        assert_eq!(line["output_tokens"], output, "{id}: {line}");
    }
    for id in ["free-models", "free-429"] {
        let line = logs.access_line(id);
        assert_eq!(line["usage"], "none", "{id}: {line}");
        assert_eq!(line["input_tokens"], 0, "{id}: {line}");
    }
    for (route, reason, count) in [
        ("/v1/audio/transcriptions", "not_json", 1.0),
        ("/v1/audio/speech", "not_json", 1.0),
        ("/v1/chat/completions", "compressed", 1.0),
        ("/v1/chat/completions", "not_reported", 1.0),
    ] {
        assert_eq!(
            missing(&proxy, route, reason).await,
            count,
            "{route} {reason}"
        );
    }
}

#[tokio::test]
async fn an_estimate_spends_the_budget_like_a_reported_count() {
    let mock = MockUpstream::start().await;
    // 12 KiB of speech is 12 tokens, and a 10-token budget is then spent.
    let proxy = spawn_proxy(
        &mock,
        &[
            (
                "PROXY_CLIENT_KEYS",
                "spender:ck-once-spend-0001 token_budget=10/day",
            ),
            ("PROXY_EXTRA_ROUTES", "POST /v1/audio/speech"),
        ],
    )
    .await;
    let speech = || {
        Request::post(proxy.url("/v1/audio/speech"))
            .header("authorization", format!("Bearer {SPENDER}"))
            .header("content-type", "application/json")
            .header("x-mock-binary", "3")
            .header("x-mock-interval-ms", "0")
            .body(Full::from(r#"{"input":"hi"}"#))
            .unwrap()
    };
    assert_eq!(status_of(&client(), speech()).await, 200);
    assert_eq!(status_of(&client(), speech()).await, 429);
}

#[test]
fn a_key_that_carries_limits_must_be_named() {
    let config = |keys: &str, extra: &[(&str, &str)]| {
        let mut vars = vec![("OPENAI_API_KEY", SERVER_KEY), ("PROXY_CLIENT_KEYS", keys)];
        vars.extend_from_slice(extra);
        memoctopus::Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    };
    let refused = config("web:ck-named-0001, ck-bare-0002 token_budget=50/hour", &[])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("entry 2") && refused.contains("needs a name"),
        "{refused}"
    );
    assert!(
        !refused.contains("ck-bare-0002"),
        "the message shows no key: {refused}"
    );
    let refused = config(
        "web:ck-named-0001,ck-bare-0002",
        &[("PROXY_CLIENT_TOKEN_BUDGET", "50/hour")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("entry 2") && refused.contains("needs a name"),
        "{refused}"
    );
    // Without limits a bare key works, with a warning that its name is its place.
    let config = config("ck-bare-0001,web:ck-named-0002", &[]).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("entries 1") && w.contains("key-N")),
        "{:?}",
        config.warnings
    );
}
