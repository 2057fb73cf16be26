//! Several upstreams (`PROXY_UPSTREAMS_FILE`): a request goes to the available ones of the
//! lowest priority, spread by weight, and moves on to another only while the one it leaves
//! cannot have charged for it. Each mock upstream counts what it processed; no request id is
//! ever processed twice across them.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use support::fleet::{write_file, Behaviour, FleetUpstream};
use support::*;
use tokio::time::Instant;

const CHAT: &str = r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#;

/// No request id processed (answered with a success) by two upstreams, or twice by one.
fn processed_once(fleet: &[&FleetUpstream]) {
    let mut by_id: HashMap<String, Vec<&str>> = HashMap::new();
    for upstream in fleet {
        for seen in upstream.processed() {
            by_id.entry(seen.id).or_default().push(&upstream.name);
        }
    }
    for (id, by) in by_id {
        assert_eq!(by.len(), 1, "request {id} processed by {by:?}");
    }
}

async fn chat(proxy: &TestProxy) -> (u16, http::HeaderMap, String) {
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), CHAT))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, body_string(response).await)
}

/// `a`, behaving so, tried first (priority 0), and `b` serving behind it (priority 1).
async fn a_then_b(test: &str, behaviour: Behaviour) -> (FleetUpstream, FleetUpstream, TestProxy) {
    let dir = scratch_dir(test);
    let a = FleetUpstream::start("a", behaviour).await;
    let b = FleetUpstream::start("b", Behaviour::Serve).await;
    let file = write_file(&dir, &[(&a, 0, 1), (&b, 1, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    (a, b, proxy)
}

fn refuse_429(retry_after: &str) -> Behaviour {
    Behaviour::Refuse(429, vec![("retry-after", retry_after.to_owned())])
}

#[tokio::test]
async fn a_down_upstream_loses_no_request_and_each_goes_with_its_own_key() {
    let dir = scratch_dir("failover-down");
    let down = FleetUpstream::down("down");
    let b = FleetUpstream::start("b", Behaviour::Serve).await;
    let c = FleetUpstream::start("c", Behaviour::Serve).await;
    let file = write_file(&dir, &[(&down, 0, 1), (&b, 0, 1), (&c, 0, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    for _ in 0..30 {
        let (status, _, body) = chat(&proxy).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("chatcmpl-123"));
    }
    assert_eq!(b.processed().len() + c.processed().len(), 30);
    assert!(!b.seen().is_empty() && !c.seen().is_empty());
    // Each upstream got its own key, and no client key.
    assert!(b
        .seen()
        .iter()
        .all(|s| s.authorization == format!("Bearer {}", b.key())));
    assert!(c
        .seen()
        .iter()
        .all(|s| s.authorization == format!("Bearer {}", c.key())));
    // The down one was tried once, then rested: one failover, not one a request.
    let text = metrics_text(&proxy).await;
    let failovers: f64 = text
        .lines()
        .filter(|l| l.starts_with("memoctopus_upstream_failovers_total{from=\"down\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failovers, 1.0, "{text}");
    assert_eq!(
        series(&text, "memoctopus_upstream_available{upstream=\"down\"}"),
        Some(0.0)
    );
    processed_once(&[&b, &c]);
}

#[tokio::test]
async fn a_429_with_retry_after_rests_its_upstream_that_long_then_it_serves_again() {
    let (a, b, proxy) = a_then_b("failover-429", refuse_429("2")).await;
    let (status, _, body) = chat(&proxy).await;
    assert_eq!(status, 200, "{body}");
    let refused_at = a.seen()[0].at;
    a.set(Behaviour::Serve);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3200) {
        let (status, _, _) = chat(&proxy).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = a.seen();
    let back = seen.get(1).expect("a never served again").at;
    let rested = back - refused_at;
    assert!(
        rested >= Duration::from_millis(1950) && rested < Duration::from_millis(2600),
        "a rested {rested:?}"
    );
    assert!(seen.len() > 3, "a got no traffic after its rest");
    processed_once(&[&a, &b]);
}

#[tokio::test]
async fn a_rejected_key_rests_its_upstream_is_logged_once_and_the_others_serve() {
    let logs = support::capture::logs();
    let (a, b, proxy) = a_then_b("failover-401", Behaviour::Refuse(401, vec![])).await;
    let mut first = chat_request(&proxy.url("/v1/chat/completions"), CHAT);
    first
        .headers_mut()
        .insert("x-client-request-id", "failover-401-first".parse().unwrap());
    let response = client().request(first).await.unwrap();
    assert_eq!(response.status(), 200);
    body_string(response).await;
    for _ in 0..9 {
        let (status, _, body) = chat(&proxy).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(a.seen().len(), 1, "a kept being asked");
    // The access log names the upstream that answered and the attempts it took; the tokens
    // are counted once, for that upstream.
    let logged = eventually(Duration::from_secs(2), || async {
        logs.text().contains("failover-401-first")
    })
    .await;
    assert!(logged.is_some());
    let line = logs.access_line("failover-401-first");
    assert_eq!(line["upstream"], "b", "{line}");
    assert_eq!(line["attempts"], 2, "{line}");
    let text = metrics_text(&proxy).await;
    let tokens: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("memoctopus_tokens_total{") && l.contains("type=\"output\""))
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(tokens[0].contains("upstream=\"b\""), "{tokens:?}");
    let output: f64 = tokens[0].rsplit(' ').next().unwrap().parse().unwrap();
    let one: f64 = serde_json::from_str::<serde_json::Value>(support::mock::CHAT_JSON).unwrap()
        ["usage"]["completion_tokens"]
        .as_f64()
        .unwrap();
    assert_eq!(output, 10.0 * one, "{tokens:?}");
    assert_eq!(b.processed().len(), 10);
    let told = logs
        .text()
        .lines()
        .filter(|l| l.contains("the upstream rejected its key") && l.contains("\"a\""))
        .count();
    assert_eq!(told, 1, "{}", logs.text());
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_upstream_attempts_total{upstream=\"a\",result=\"key_rejected\"}"
        )
        .await,
        1.0
    );
    processed_once(&[&a, &b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_over_4000_requests_hold_within_5_percent() {
    let dir = scratch_dir("failover-weights");
    let a = FleetUpstream::start("a", Behaviour::Serve).await;
    let b = FleetUpstream::start("b", Behaviour::Serve).await;
    let file = write_file(&dir, &[(&a, 0, 3), (&b, 0, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    let url = proxy.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..250 {
                let response = client.request(chat_request(&url, CHAT)).await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.into_body().collect().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (na, nb) = (a.processed().len() as f64, b.processed().len() as f64);
    assert_eq!(na + nb, 4000.0);
    let ratio = na / nb;
    assert!((ratio / 3.0 - 1.0).abs() <= 0.05, "a {na}, b {nb}: {ratio}");
    processed_once(&[&a, &b]);
}

#[tokio::test]
async fn a_stream_cut_after_its_first_event_is_never_failed_over() {
    let (a, b, proxy) = a_then_b("failover-cut", Behaviour::CutAfterFirstEvent).await;
    let request = chat_request(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"gpt-4","stream":true}"#,
    );
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    let ended = loop {
        match body.frame().await {
            Some(Ok(frame)) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
            Some(Err(_)) => break "error",
            None => break "clean",
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("t0"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(ended, "error", "a cut stream must not end cleanly: {text}");
    assert!(b.seen().is_empty(), "the stream went to b too");
    processed_once(&[&a, &b]);
}

#[tokio::test]
async fn an_upload_beyond_the_retry_buffer_gets_the_first_upstreams_answer() {
    let (a, b, proxy) = a_then_b("failover-upload", refuse_429("1")).await;
    let boundary = "b0undary";
    let body = multipart(5 << 20, boundary);
    let response = client()
        .request(transcription_request(
            &proxy.url("/v1/audio/transcriptions"),
            boundary,
            body,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let text = body_string(response).await;
    assert!(text.contains("refused by a"), "{text}");
    assert!(b.seen().is_empty(), "a 5 MiB upload was sent twice");
    assert!(a.seen()[0].body_bytes > 5 << 20);
    // A small one right after goes on to b.
    let (status, _, _) = chat(&proxy).await;
    assert_eq!(status, 200);
    assert_eq!(b.processed().len(), 1);
    processed_once(&[&a, &b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_stays_within_the_retry_budget_and_keeps_the_last_answer() {
    let dir = scratch_dir("failover-storm");
    // A rest of 1 ms: every upstream is available again at once, so only the budget holds
    // the failovers back.
    let refuse = || Behaviour::Refuse(429, vec![("retry-after-ms", "1".to_owned())]);
    let a = FleetUpstream::start("a", refuse()).await;
    let b = FleetUpstream::start("b", refuse()).await;
    let c = FleetUpstream::start("c", refuse()).await;
    let file = write_file(&dir, &[(&a, 0, 1), (&b, 0, 1), (&c, 0, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    const REQUESTS: usize = 300;
    let started = Instant::now();
    let url = proxy.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..REQUESTS / 10 {
                let response = client.request(chat_request(&url, CHAT)).await.unwrap();
                assert_eq!(response.status(), 429);
                let body = body_string(response).await;
                // OpenAI's 429 stays OpenAI's: the upstream's own body.
                assert!(body.contains("refused by"), "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let attempts = a.seen().len() + b.seen().len() + c.seen().len();
    let failovers = attempts - REQUESTS;
    let allowed = (0.2 * REQUESTS as f64 + 3.0 * seconds) as usize;
    assert!(
        failovers <= allowed,
        "{failovers} failovers for {REQUESTS} requests in {seconds} s; the budget allows {allowed}"
    );
    assert!(failovers >= 20, "the budget was never used: {failovers}");
    for upstream in [&a, &b, &c] {
        assert!(
            upstream.seen().len() <= REQUESTS / 3 + allowed,
            "{} asked {} times",
            upstream.name,
            upstream.seen().len()
        );
    }
    processed_once(&[&a, &b, &c]);
}

#[tokio::test]
async fn when_every_upstream_rests_the_last_answer_says_when_the_first_is_back() {
    let dir = scratch_dir("failover-all-resting");
    let a = FleetUpstream::start("a", refuse_429("30")).await;
    let b = FleetUpstream::start("b", refuse_429("7")).await;
    let file = write_file(&dir, &[(&a, 0, 1), (&b, 1, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    let (status, headers, body) = chat(&proxy).await;
    assert_eq!(status, 429);
    assert!(body.contains("refused by b"), "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((6..=7).contains(&retry_after), "{retry_after}");
    // Both rest: the next request goes to the one back soonest, once.
    let (status, _, body) = chat(&proxy).await;
    assert_eq!(status, 429);
    assert!(body.contains("refused by b"), "{body}");
    assert_eq!((a.seen().len(), b.seen().len()), (1, 2));
    processed_once(&[&a, &b]);
}

#[tokio::test]
async fn a_reloaded_file_sends_nothing_new_to_a_removed_upstream_and_its_stream_finishes() {
    let dir = scratch_dir("failover-reload");
    let a = FleetUpstream::start("a", Behaviour::Serve).await;
    let b = FleetUpstream::start("b", Behaviour::SlowStream(8, Duration::from_millis(250))).await;
    let file = write_file(&dir, &[(&b, 0, 1)], "");
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    let request = chat_request(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"gpt-4","stream":true}"#,
    );
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let streaming = tokio::spawn(body_string(response));
    write_file(&dir, &[(&a, 0, 1)], "");
    let reloaded = eventually(Duration::from_secs(5), || async {
        metric(
            &proxy,
            "memoctopus_key_reloads_total{setting=\"PROXY_UPSTREAMS_FILE\",result=\"success\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert!(reloaded.is_some(), "{}", metrics_text(&proxy).await);
    for _ in 0..10 {
        let (status, headers, _) = chat(&proxy).await;
        assert_eq!(status, 200);
        let _ = headers;
    }
    assert_eq!(a.processed().len(), 10);
    assert_eq!(b.seen().len(), 1, "the removed upstream got new requests");
    let text = streaming.await.unwrap();
    assert!(text.contains("t7") && text.contains("[DONE]"), "{text}");
    // A file that breaks keeps the set in force.
    std::fs::write(&file, "[[upstream]]\nname = \n").unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        metric(
            &proxy,
            "memoctopus_key_reloads_total{setting=\"PROXY_UPSTREAMS_FILE\",result=\"error\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert!(refused.is_some(), "{}", metrics_text(&proxy).await);
    let (status, _, _) = chat(&proxy).await;
    assert_eq!(status, 200);
    assert_eq!(a.processed().len(), 11);
    processed_once(&[&a, &b]);
}

#[tokio::test]
async fn an_azure_entry_takes_its_key_in_api_key_and_its_query() {
    let dir = scratch_dir("failover-azure");
    let azure = FleetUpstream::start("azure", Behaviour::Serve).await;
    std::fs::write(dir.join("key-azure"), "sk-fleet-azure-key\n").unwrap();
    let file = dir.join("upstreams.toml");
    std::fs::write(
        &file,
        format!(
            "[[upstream]]\nname = \"azure\"\nbase_url = \"http://{}/openai/v1\"\napi_key_file = \"key-azure\"\nauth = \"api-key\"\nquery = \"api-version=preview\"\n",
            azure.addr
        ),
    )
    .unwrap();
    let proxy = ProxyStart::upstreams_file(&file).start().await;
    let (status, _, _) = chat(&proxy).await;
    assert_eq!(status, 200);
    let seen = &azure.seen()[0];
    assert_eq!(seen.api_key, "sk-fleet-azure-key");
    assert_eq!(seen.authorization, "");
    assert!(
        seen.uri
            .ends_with("/openai/v1/chat/completions?api-version=preview"),
        "{}",
        seen.uri
    );
    processed_once(&[&azure]);
}

#[test]
fn a_bad_file_or_a_second_upstream_setting_stops_the_start() {
    let dir = scratch_dir("failover-config");
    std::fs::write(dir.join("bad.toml"), "[[upstream]]\nname = \"a\"\n").unwrap();
    let bad = memoctopus::Config::from_vars([(
        "PROXY_UPSTREAMS_FILE",
        dir.join("bad.toml").to_str().unwrap(),
    )])
    .unwrap_err();
    assert_eq!(bad.setting, "PROXY_UPSTREAMS_FILE");
    std::fs::write(dir.join("key"), "sk-fleet-k").unwrap();
    std::fs::write(
        dir.join("good.toml"),
        "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_file = \"key\"\n",
    )
    .unwrap();
    let good = dir.join("good.toml");
    for (name, value) in [
        ("OPENAI_API_KEY", "sk-x"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:10/v1"),
        ("PROXY_UPSTREAM_AUTH", "api-key"),
    ] {
        let both = memoctopus::Config::from_vars([
            ("PROXY_UPSTREAMS_FILE", good.to_str().unwrap()),
            (name, value),
        ])
        .unwrap_err();
        assert_eq!(both.setting, name, "{both}");
    }
}

/// The ConfigMap's file, laid out as its projected volume lays it out (the keys from their
/// Secrets, relative to it), is a set the proxy starts with.
#[test]
fn the_kubernetes_configmaps_file_starts_with_its_keys_beside_it() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/upstreams.yaml"),
    )
    .unwrap();
    let (_, block) = manifest.split_once("upstreams.toml: |\n").unwrap();
    let toml: String = block
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = scratch_dir("failover-configmap");
    for key in ["openai", "azure-eastus"] {
        std::fs::create_dir_all(dir.join(key)).unwrap();
        std::fs::write(dir.join(key).join("api-key"), format!("sk-fleet-{key}")).unwrap();
    }
    std::fs::write(dir.join("upstreams.toml"), toml).unwrap();
    let config = memoctopus::Config::from_vars([(
        "PROXY_UPSTREAMS_FILE",
        dir.join("upstreams.toml").to_str().unwrap(),
    )])
    .unwrap_or_else(|e| panic!("{e}"));
    let described = format!("{config:?}");
    assert!(described.contains("azure-eastus"), "{described}");
    // Its debug form holds no key, as bytes or text.
    assert!(!described.contains("sk-fleet-openai"), "{described}");
    let key_bytes = format!("{:?}", b"sk-fleet-openai".to_vec());
    assert!(
        !described.contains(&key_bytes[1..key_bytes.len() - 1]),
        "{described}"
    );
    // Without one of its keys, it does not start.
    std::fs::remove_file(dir.join("azure-eastus/api-key")).unwrap();
    let missing = memoctopus::Config::from_vars([(
        "PROXY_UPSTREAMS_FILE",
        dir.join("upstreams.toml").to_str().unwrap(),
    )])
    .unwrap_err();
    assert_eq!(missing.setting, "PROXY_UPSTREAMS_FILE");
    assert!(missing.to_string().contains("azure-eastus"), "{missing}");
}

/// Without `PROXY_UPSTREAMS_FILE` nothing changes: the one upstream's 429 passes as it came,
/// and it never rests, since there is nowhere else to go.
#[tokio::test]
async fn alone_an_upstream_never_rests_and_its_429_passes_unchanged() {
    let a = FleetUpstream::start("a", refuse_429("30")).await;
    let proxy = ProxyStart::at(&a.base_url()).start().await;
    for _ in 0..3 {
        let (status, headers, body) = chat(&proxy).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "30");
        assert!(body.contains("refused by a"), "{body}");
    }
    assert_eq!(a.seen().len(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = metrics_text(&proxy).await;
    assert_eq!(
        series(&text, "memoctopus_upstream_available{upstream=\"default\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "memoctopus_upstream_attempts_total{upstream=\"default\",result=\"rate_limited\"}"
        ),
        Some(3.0)
    );
}

/// The same failovers over HTTP/2 (h2c), where the pools also keep the body for their own
/// retries: a chat of several frames passes a down upstream (never sent) and a 429 (sent
/// whole, and whole again); a large upload stops at the first 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_chat_passes_a_down_upstream_and_a_429_and_a_large_upload_stops_at_one() {
    let dir = scratch_dir("failover-h2");
    let down = FleetUpstream::down("down");
    let a = FleetUpstream::start("a", refuse_429("30")).await;
    let b = FleetUpstream::start("b", Behaviour::Serve).await;
    let c = FleetUpstream::start("c", Behaviour::Serve).await;
    let file = write_file(
        &dir,
        &[(&down, 0, 1), (&a, 1, 1), (&b, 2, 1), (&c, 3, 1)],
        "",
    );
    let proxy = ProxyStart::upstreams_file(&file)
        .settings(&[("PROXY_UPSTREAM_PROTOCOL", "http2")])
        .start()
        .await;
    let body = format!(
        r#"{{"model":"gpt-4","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(40_000)
    );
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), &body))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "b");
    body_string(response).await;
    assert_eq!(a.seen()[0].body_bytes, body.len());
    assert_eq!(b.processed()[0].body_bytes, body.len());
    // down and a rest; b refuses a 5 MiB upload, which is not sent to c.
    b.set(refuse_429("30"));
    let boundary = "h2boundary";
    let upload = multipart(5 << 20, boundary);
    let response = client()
        .request(transcription_request(
            &proxy.url("/v1/audio/transcriptions"),
            boundary,
            upload.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(body_string(response).await.contains("refused by b"));
    assert_eq!(b.seen()[1].body_bytes, upload.len());
    assert!(c.seen().is_empty(), "a 5 MiB upload was sent twice");
    assert_eq!(a.seen().len(), 1);
    processed_once(&[&a, &b, &c]);
}

/// `failover_on = ["timeout"]`: an upstream that holds its head past `attempt_timeout` is left
/// for the next; without it, the slow one's answer is waited for.
#[tokio::test]
async fn with_timeout_in_failover_on_a_slow_head_is_left_for_the_next_upstream() {
    for (extra, served_by, at_most) in [
        (
            "failover_on = [\"timeout\"]\nattempt_timeout = \"200ms\"",
            "b",
            Duration::from_millis(900),
        ),
        ("", "a", Duration::from_millis(2500)),
    ] {
        let dir = scratch_dir("failover-timeout");
        let a = FleetUpstream::start("a", Behaviour::SlowHead(Duration::from_millis(1200))).await;
        let b = FleetUpstream::start("b", Behaviour::Serve).await;
        let file = write_file(&dir, &[(&a, 0, 1), (&b, 1, 1)], extra);
        let proxy = ProxyStart::upstreams_file(&file).start().await;
        let started = Instant::now();
        let (status, headers, _) = chat(&proxy).await;
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert_eq!(headers["x-served-by"], served_by, "{extra:?}");
        assert!(took < at_most, "{extra:?}: {took:?}");
        if served_by == "b" {
            assert!(took >= Duration::from_millis(200), "{took:?}");
            assert_eq!(
                metric(
                    &proxy,
                    "memoctopus_upstream_failovers_total{from=\"a\",to=\"b\",reason=\"timeout\"}"
                )
                .await,
                1.0
            );
        } else {
            assert!(took >= Duration::from_millis(1200), "{took:?}");
            assert!(b.seen().is_empty());
        }
    }
}
