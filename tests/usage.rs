//! The usage meter and token budgets, as an operator sees them: `/metrics`, the access log and
//! the 429s. Every answer comes from the mock in writes 50 ms apart, with its `usage` object cut
//! between two writes and usage-like JSON in its generated text; the counters must match the
//! mock's figures exactly, and the client must get every byte, the first ones early.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::usage_answers::{UsageAnswer, ANSWERS};
use support::*;
use tokio::time::Instant;

const ROUTES: &str = "POST /v1/responses,POST /v1/embeddings";

fn route_of(answer: &UsageAnswer) -> &'static str {
    match answer.name.split('-').next().unwrap() {
        "chat" => "/v1/chat/completions",
        "responses" => "/v1/responses",
        "transcription" => "/v1/audio/transcriptions",
        _ => "/v1/embeddings",
    }
}

fn request(url: &str, key: &str, answer: &str, id: &str) -> Request<Full<Bytes>> {
    let mut request = chat_request(
        url,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}],"stream":true}"#,
    );
    let h = request.headers_mut();
    h.insert("authorization", format!("Bearer {key}").parse().unwrap());
    h.insert("x-mock-answer", answer.parse().unwrap());
    h.insert("x-client-request-id", id.parse().unwrap());
    h.insert("accept-encoding", "gzip, br".parse().unwrap());
    request
}

/// The body, and how long after the first frame the last one came.
async fn read_timed(response: http::Response<hyper::body::Incoming>) -> (Vec<u8>, Duration) {
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first.get_or_insert_with(Instant::now);
            bytes.extend_from_slice(&data);
        }
    }
    (bytes, first.map_or(Duration::ZERO, |f| f.elapsed()))
}

fn tokens_series(client: &str, model: &str, kind: &str) -> String {
    format!("memoctopus_tokens_total{{client=\"{client}\",model=\"{model}\",upstream=\"default\",type=\"{kind}\"}}")
}

/// Sends every canned answer through `proxy` as its own client, and checks the bytes, the
/// metrics and the log line against the mock's figures.
async fn every_answer_counts_exactly(proxy: &TestProxy, mock: &MockUpstream) {
    let logs = support::capture::logs();
    for (i, answer) in ANSWERS.iter().enumerate() {
        let key = format!("ck-usage-meter-{i:04}");
        let id = format!("usage-{}-{}", answer.name, proxy.addr.port());
        let response = client()
            .request(request(
                &proxy.url(route_of(answer)),
                &key,
                answer.name,
                &id,
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", answer.name);
        let (body, spread) = read_timed(response).await;
        assert_eq!(
            String::from_utf8(body).unwrap(),
            answer.body(),
            "{}: the client gets byte for byte what the upstream sent",
            answer.name
        );
        let gaps = (answer.writes.len() - 1) as u32;
        assert!(
            spread >= Duration::from_millis(40) * gaps,
            "{}: the first bytes came {spread:?} before the last; nothing may wait for the usage",
            answer.name
        );
        assert_eq!(
            mock.last_request().headers["accept-encoding"],
            "identity",
            "the meter asks for answers it can read"
        );

        let client_name = format!("c{i}");
        let fields = &logs.access_line(&id);
        assert_eq!(fields["client"], client_name.as_str());
        let model = answer.model;
        let text = metrics_text(proxy).await;
        let counted = |kind: &str| series(&text, &tokens_series(&client_name, model, kind));
        match (answer.tokens, answer.audio_seconds) {
            (Some((input, output, cached, reasoning)), _) => {
                for (kind, want) in [
                    ("input", input),
                    ("output", output),
                    ("cached", cached),
                    ("reasoning", reasoning),
                ] {
                    assert_eq!(
                        counted(kind),
                        Some(want as f64),
                        "{} {kind}\n{text}",
                        answer.name
                    );
                }
                assert_eq!(fields["usage"], "reported", "{}", answer.name);
                assert_eq!(fields["input_tokens"], input);
                assert_eq!(fields["output_tokens"], output);
                assert_eq!(fields["cached_tokens"], cached);
                assert_eq!(fields["reasoning_tokens"], reasoning);
                // The access log names a model as the metrics' label does.
                assert_eq!(fields["model"], model, "{}", answer.name);
            }
            (None, Some(seconds)) => {
                let name = format!(
                    "memoctopus_audio_seconds_total{{client=\"{client_name}\",model=\"{model}\"}}"
                );
                assert!(
                    text.lines().any(|l| l == format!("{name} {seconds}")),
                    "{name}\n{text}"
                );
                assert_eq!(fields["usage"], "reported");
                assert_eq!(counted("input"), None);
            }
            (None, None) => {
                assert_eq!(
                    counted("input"),
                    None,
                    "{}: nothing reported, nothing counted",
                    answer.name
                );
                assert_eq!(fields["usage"], "estimated", "{}", answer.name);
                assert!(fields["output_tokens"].as_u64().unwrap() >= 2);
                let route = route_of(answer);
                let missing = format!(
                    "memoctopus_usage_missing_total{{client=\"{client_name}\",route=\"{route}\",reason=\"not_reported\"}} 1"
                );
                assert!(text.lines().any(|l| l == missing), "{missing}\n{text}");
            }
        }
    }
}

fn keys_for_every_answer() -> String {
    (0..ANSWERS.len())
        .map(|i| format!("c{i}:ck-usage-meter-{i:04}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn every_kind_of_answer_is_counted_exactly_and_passes_byte_for_byte() {
    let _ = support::capture::logs();
    let mock = MockUpstream::start().await;
    let keys = keys_for_every_answer();
    let proxy = spawn_proxy(
        &mock,
        &[("PROXY_CLIENT_KEYS", &keys), ("PROXY_EXTRA_ROUTES", ROUTES)],
    )
    .await;
    every_answer_counts_exactly(&proxy, &mock).await;
}

#[tokio::test]
async fn usage_is_counted_over_tls_with_each_upstream_protocol() {
    let _ = support::capture::logs();
    let keys = keys_for_every_answer();
    for (protocol, alpn) in [
        ("auto", tls::Alpn::Both),
        ("http1", tls::Alpn::Both),
        ("http2", tls::Alpn::Http2Only),
    ] {
        let (mock, ca) = tls_mock(alpn, mock::MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol)
            .settings(&[("PROXY_CLIENT_KEYS", &keys), ("PROXY_EXTRA_ROUTES", ROUTES)])
            .start()
            .await;
        every_answer_counts_exactly(&proxy, &mock).await;
        let version = mock.last_request().version;
        let want = if protocol == "http1" {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        };
        assert_eq!(version, want, "{protocol}");
    }
}

/// Seconds until the current UTC day ends.
fn seconds_left_today() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

/// A proxy-made 429 for the token budget: its `type`, and its Retry-After.
async fn budget_refusal(response: http::Response<hyper::body::Incoming>) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&body_string(response).await).unwrap();
    assert_eq!(body["error"]["code"], "proxy_token_budget", "{body}");
    assert_eq!(body["error"]["type"], "tokens", "{body}");
    assert!(body["error"]["param"].is_null());
    retry_after
}

#[tokio::test]
async fn a_budget_lets_the_crossing_answer_finish_then_refuses_until_the_window_ends() {
    let mock = MockUpstream::start().await;
    // No client keys: every request is `anonymous`, which has the same budget.
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_TOKEN_BUDGET", "50/day")]).await;
    let url = proxy.url("/v1/chat/completions");
    // 48 tokens each: the first leaves 2, the second crosses 50 and still finishes whole.
    for _ in 0..2 {
        let response = client()
            .request(request(&url, "unused", "chat-json", "budget"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let (body, _) = read_timed(response).await;
        assert_eq!(body, ANSWERS[0].body().as_bytes());
    }
    let before = mock.requests().len();
    let response = client()
        .request(request(&url, "unused", "chat-json", "budget"))
        .await
        .unwrap();
    let retry_after = budget_refusal(response).await;
    let left = seconds_left_today();
    assert!(retry_after.abs_diff(left) <= 2, "{retry_after} vs {left}");
    assert_eq!(mock.requests().len(), before, "nothing went upstream");
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_client_limit_rejections_total{client=\"anonymous\",limit=\"token_budget\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_cancelled_stream_is_counted_as_cancelled_and_its_estimate_spends_the_budget() {
    let logs = support::capture::logs();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", "app:ck-usage-cancel-0001"),
            ("PROXY_CLIENT_TOKEN_BUDGET", "6/day"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let mut stream = stream_request(&url, 50, 20);
    stream.headers_mut().insert(
        "authorization",
        "Bearer ck-usage-cancel-0001".parse().unwrap(),
    );
    stream
        .headers_mut()
        .insert("x-client-request-id", "usage-cancelled".parse().unwrap());
    let response = client().request(stream).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    for _ in 0..2 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    let series = "memoctopus_usage_missing_total{client=\"app\",route=\"/v1/chat/completions\",reason=\"cancelled\"}";
    let counted = eventually(Duration::from_secs(5), || async {
        metric(&proxy, series).await == 1.0
    })
    .await;
    assert!(counted.is_some(), "{}", metrics_text(&proxy).await);
    let line = logs.access_line("usage-cancelled");
    assert_eq!(line["usage"], "estimated");
    assert_eq!(line["outcome"], "client_cancelled");
    // Input: a quarter of the 15-byte JSON body, rounded up; output: one or more a forwarded
    // event ("tok0", "tok1", ...).
    assert_eq!(line["input_tokens"], 4);
    let output = line["output_tokens"].as_u64().unwrap();
    assert!(output >= 2, "{output}");
    // Not a reported figure: nothing in memoctopus_tokens_total.
    assert!(!metrics_text(&proxy)
        .await
        .contains("memoctopus_tokens_total{"));

    let response = client()
        .request(request(
            &url,
            "ck-usage-cancel-0001",
            "chat-json",
            "after-cancel",
        ))
        .await
        .unwrap();
    budget_refusal(response).await;
}

#[tokio::test]
async fn a_key_entry_sets_its_own_limits_and_the_rest_take_the_defaults() {
    let mock = MockUpstream::start().await;
    let keys = "small:ck-usage-small-01 token_budget=10/day,\
        one:ck-usage-one-02 in_flight=1,\
        slow:ck-usage-slow-03 rate=60 burst=1,\
        big:ck-usage-big-04";
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", keys),
            ("PROXY_CLIENT_TOKEN_BUDGET", "1000/day"),
        ],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let send = |key: &'static str| {
        let url = url.clone();
        async move {
            client()
                .request(request(&url, key, "chat-json", "limits"))
                .await
                .unwrap()
        }
    };
    // small: its own 10-token budget, spent by the first answer.
    assert_eq!(send("ck-usage-small-01").await.status(), 200);
    budget_refusal(send("ck-usage-small-01").await).await;
    // big: the default budget of 1000.
    for _ in 0..3 {
        let response = send("ck-usage-big-04").await;
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }
    // slow: one request a second, no burst.
    let response = send("ck-usage-slow-03").await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let refused = send("ck-usage-slow-03").await;
    assert_eq!(refused.status(), 429);
    let (code, _) = error_fields(&body_string(refused).await);
    assert_eq!(code, "proxy_rate_limit");
    // one: a stream open holds its only slot.
    let mut held = stream_request(&url, 10, 100);
    held.headers_mut()
        .insert("authorization", "Bearer ck-usage-one-02".parse().unwrap());
    let held = client().request(held).await.unwrap();
    assert_eq!(held.status(), 200);
    let refused = send("ck-usage-one-02").await;
    assert_eq!(refused.status(), 429);
    let (code, _) = error_fields(&body_string(refused).await);
    assert_eq!(code, "proxy_concurrency_limit");
    drop(held);
}

#[test]
fn a_bad_limit_in_a_key_entry_stops_the_start_without_showing_the_key() {
    for entry in [
        "web:ck-usage-bad-01 rte=5",
        "web:ck-usage-bad-01 token_budget=5/week",
        "web:ck-usage-bad-01 rate=0",
    ] {
        let error = memoctopus::Config::from_vars([
            ("OPENAI_API_KEY", "sk-test"),
            ("PROXY_CLIENT_KEYS", entry),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("PROXY_CLIENT_KEYS"), "{error}");
        assert!(!error.contains("ck-usage"), "{error}");
    }
    let error = memoctopus::Config::from_vars([
        ("OPENAI_API_KEY", "sk-test"),
        (
            "PROXY_CLIENT_KEYS",
            "web:ck-usage-bad-01 token_budget=5/day",
        ),
        ("PROXY_USAGE", "off"),
    ])
    .unwrap_err()
    .to_string();
    assert!(error.contains("token_budget"), "{error}");
    let error = memoctopus::Config::from_vars([
        ("OPENAI_API_KEY", "sk-test"),
        ("PROXY_CLIENT_TOKEN_BUDGET", "5/day"),
        ("PROXY_USAGE", "off"),
    ])
    .unwrap_err()
    .to_string();
    assert!(error.contains("PROXY_CLIENT_TOKEN_BUDGET"), "{error}");
}

#[tokio::test]
async fn a_reloaded_key_file_with_a_bad_limit_keeps_the_old_keys() {
    let dir = scratch_dir("usage-reload");
    let file = dir.join("clients");
    std::fs::write(&file, "app:ck-usage-reload-01 rate=600\n").unwrap();
    let mock = MockUpstream::start().await;
    let path = file.to_string_lossy().into_owned();
    let proxy = spawn_proxy(&mock, &[("PROXY_CLIENT_KEYS_FILE", &path)]).await;
    std::fs::write(
        &file,
        "app:ck-usage-reload-01 rate=lots\nnew:ck-usage-reload-02\n",
    )
    .unwrap();
    let errors =
        "memoctopus_key_reloads_total{setting=\"PROXY_CLIENT_KEYS_FILE\",result=\"error\"}";
    let refused = eventually(Duration::from_secs(10), || async {
        metric(&proxy, errors).await >= 1.0
    })
    .await;
    assert!(refused.is_some());
    let url = proxy.url("/v1/chat/completions");
    let old = client()
        .request(request(&url, "ck-usage-reload-01", "chat-json", "reload"))
        .await
        .unwrap();
    assert_eq!(old.status(), 200);
    let new = client()
        .request(request(&url, "ck-usage-reload-02", "chat-json", "reload"))
        .await
        .unwrap();
    assert_eq!(new.status(), 401);
}

#[tokio::test]
async fn three_hundred_models_give_at_most_a_hundred_and_one_label_values() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    for i in 0..300 {
        let mut request = chat_request(&url, "{}");
        request
            .headers_mut()
            .insert("x-mock-model", format!("model-{i}").parse().unwrap());
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }
    let text = metrics_text(&proxy).await;
    let mut models: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("memoctopus_tokens_total{"))
        .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
        .collect();
    models.sort_unstable();
    models.dedup();
    assert_eq!(models.len(), 101, "{models:?}");
    assert!(models.contains(&"other"));
    // The 200 past the first hundred count under `other`: 20 input tokens each.
    let other = "memoctopus_tokens_total{client=\"anonymous\",model=\"other\",upstream=\"default\",type=\"input\"}";
    assert_eq!(metric(&proxy, other).await, 200.0 * 20.0);
}

#[tokio::test]
async fn with_the_meter_off_nothing_is_read_and_accept_encoding_passes() {
    let logs = support::capture::logs();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_USAGE", "off")]).await;
    let url = proxy.url("/v1/chat/completions");
    let response = client()
        .request(request(&url, "unused", "chat-json", "meter-off"))
        .await
        .unwrap();
    let (body, _) = read_timed(response).await;
    assert_eq!(body, ANSWERS[0].body().as_bytes());
    assert_eq!(mock.last_request().headers["accept-encoding"], "gzip, br");
    assert!(!metrics_text(&proxy)
        .await
        .contains("memoctopus_tokens_total{"));
    assert_eq!(logs.access_line("meter-off")["usage"], "none");
}
