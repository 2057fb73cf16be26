//! Client limits shared by three proxies through one real `redis-server`: a rate, an in-flight
//! cap and a token budget hold for the three together, not three times over; Redis going away
//! degrades them to each process's own, never the service; a replica that dies gives its slots
//! back within the lease; nothing in Redis holds a key.

mod support;

use std::process::Command;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Full};
use support::redis::RedisServer;
use support::*;

const KEYS: &str = "app:ck-shared-app-0001 rate=30 burst=5,\
    streamer:ck-shared-stream-0002 in_flight=2,\
    spender:ck-shared-spend-0003 token_budget=50/day,\
    holder:ck-shared-hold-0004 in_flight=1";

fn request(url: &str, key: &str) -> Request<Full<bytes::Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("x-mock-answer", "chat-json")
        .header("x-mock-interval-ms", "0")
        .body(Full::from("{}"))
        .unwrap()
}

fn stream(url: &str, key: &str, events: u32, interval_ms: u32) -> Request<Full<bytes::Bytes>> {
    let mut request = stream_request(url, events, interval_ms);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// How long a backend switch may take to show in `/metrics`.
const WAIT: Duration = Duration::from_secs(10);
const SHARED: &str = "memoctopus_limits_backend{state=\"shared\"}";
const LOCAL: &str = "memoctopus_limits_backend{state=\"local\"}";

async fn proxies(mock: &MockUpstream, redis: Option<&RedisServer>, n: usize) -> Vec<TestProxy> {
    let url = redis.map(RedisServer::url).unwrap_or_default();
    let mut vars = vec![("PROXY_CLIENT_KEYS", KEYS)];
    if redis.is_some() {
        vars.push(("PROXY_LIMITS_REDIS_URL", &url));
    }
    let mut all = Vec::new();
    for _ in 0..n {
        let proxy = spawn_proxy(mock, &vars).await;
        if redis.is_some() {
            wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
        }
        all.push(proxy);
    }
    all
}

/// Sends `per_proxy` requests of `key` to each proxy at once; returns the statuses.
async fn burst(proxies: &[TestProxy], key: &'static str, per_proxy: usize) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for proxy in proxies {
        for _ in 0..per_proxy {
            let url = proxy.url("/v1/chat/completions");
            tasks.spawn(async move {
                let response = client().request(request(&url, key)).await.unwrap();
                let status = response.status().as_u16();
                body_bytes(response).await;
                status
            });
        }
    }
    tasks.join_all().await
}

#[tokio::test]
async fn a_rate_holds_across_three_proxies_as_in_one() {
    let mock = MockUpstream::start().await;
    // Per process, three proxies let three bursts through.
    let alone = proxies(&mock, None, 3).await;
    assert_eq!(metric(&alone[0], LOCAL).await, 1.0);
    assert_eq!(metric(&alone[0], SHARED).await, 0.0);
    let statuses = burst(&alone, "ck-shared-app-0001", 5).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 15);

    let redis = RedisServer::start();
    let shared = proxies(&mock, Some(&redis), 3).await;
    let statuses = burst(&shared, "ck-shared-app-0001", 5).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "the burst of 5, across all three: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let seconds = "memoctopus_limits_redis_seconds_count";
    assert!(metric(&shared[0], seconds).await >= 1.0);
}

#[tokio::test]
async fn an_in_flight_cap_counts_streams_on_every_proxy() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let p = proxies(&mock, Some(&redis), 3).await;
    let key = "ck-shared-stream-0002";
    let first = client()
        .request(stream(&p[0].url("/v1/chat/completions"), key, 10, 100))
        .await
        .unwrap();
    let second = client()
        .request(stream(&p[1].url("/v1/chat/completions"), key, 10, 100))
        .await
        .unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = client()
        .request(request(&p[2].url("/v1/chat/completions"), key))
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let (code, _) = error_fields(&body_string(third).await);
    assert_eq!(code, "proxy_concurrency_limit");
    // Both streams end; their slots come back.
    read_all(first).await;
    read_all(second).await;
    let freed = eventually(Duration::from_secs(5), || async {
        let response = client()
            .request(request(&p[2].url("/v1/chat/completions"), key))
            .await
            .unwrap();
        response.status() == 200
    })
    .await;
    assert!(freed.is_some());
}

#[tokio::test]
async fn a_token_budget_is_one_count_for_all_three() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let p = proxies(&mock, Some(&redis), 3).await;
    let key = "ck-shared-spend-0003";
    let day = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let count = format!("memoctopus:{{spender}}:tokens:day:{day}");
    // 48 tokens on the first proxy, 48 more on the second: the count crosses 50.
    for (proxy, total) in [(&p[0], "48"), (&p[1], "96")] {
        let response = client()
            .request(request(&proxy.url("/v1/chat/completions"), key))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
        let charged = eventually(Duration::from_secs(5), || async {
            redis.get(&count) == total
        })
        .await;
        assert!(charged.is_some(), "{:?}", redis.dump());
    }
    let response = client()
        .request(request(&p[2].url("/v1/chat/completions"), key))
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let (code, _) = error_fields(&body_string(response).await);
    assert_eq!(code, "proxy_token_budget");
}

#[tokio::test]
async fn redis_going_away_degrades_the_limits_never_the_service() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let p = proxies(&mock, Some(&redis), 2).await;
    redis.kill();
    // Every answer is a 200 or the limit's own 429: never a 5xx.
    let statuses = burst(&p, "ck-shared-app-0001", 8).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Each process's own limits: a burst of 5 on each.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    for proxy in &p {
        wait_for_metric(proxy, LOCAL, 1.0, WAIT).await;
        assert_eq!(metric(proxy, SHARED).await, 0.0);
        let ready = client()
            .request(
                Request::get(proxy.url("/ready"))
                    .body(Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "a Redis outage never fails /ready");
    }
    let text = metrics_text(&p[0]).await;
    let errors: f64 = ["timeout", "connection", "response"]
        .iter()
        .filter_map(|kind| {
            series(
                &text,
                &format!("memoctopus_limits_redis_errors_total{{kind=\"{kind}\"}}"),
            )
        })
        .sum();
    assert!(errors >= 1.0, "{text}");
    // Back, and empty: shared again, without a restart.
    redis.restart();
    for proxy in &p {
        wait_for_metric(proxy, SHARED, 1.0, WAIT).await;
    }
    let statuses = burst(&p, "ck-shared-app-0001", 5).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
}

/// The release binary is not needed: the test build's own, as a process that can be killed.
fn replica(mock: &MockUpstream, redis: &RedisServer) -> Binary {
    let base_url = format!("http://{}/v1", mock.addr);
    let redis_url = redis.url();
    Binary::start(
        &scratch_dir("shared-replica"),
        &[
            ("OPENAI_API_KEY", "sk-server-secret-0123456789"),
            ("OPENAI_BASE_URL", &base_url),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("PROXY_LOG_FORMAT", "json"),
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_LIMITS_REDIS_URL", &redis_url),
            ("PROXY_LIMITS_REDIS_LEASE", "3s"),
        ],
    )
}

#[tokio::test]
async fn a_killed_replica_gives_its_slots_back_within_the_lease() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let mut replica = replica(&mock, &redis);
    let addr = replica.addr;
    let other = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_LIMITS_REDIS_URL", &redis.url()),
            ("PROXY_LIMITS_REDIS_LEASE", "3s"),
        ],
    )
    .await;
    wait_for_metric(&other, SHARED, 1.0, WAIT).await;
    let key = "ck-shared-hold-0004";
    let url = format!("http://{addr}/v1/chat/completions");
    // The replica admits through Redis once it reaches it.
    let mut held = None;
    for _ in 0..100 {
        let response = client().request(stream(&url, key, 200, 100)).await.unwrap();
        if response.status() == 200 {
            held = Some(response.into_body());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = held.expect("the replica admitted the stream");
    held.frame().await.unwrap().unwrap();
    // A stream that outlives the lease keeps its slot: its replica renews it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = client()
        .request(request(&other.url("/v1/chat/completions"), key))
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        429,
        "the slot is still held after a lease"
    );
    // The replica dies without giving anything back.
    replica.kill();
    drop(held);
    let freed = eventually(Duration::from_secs(8), || async {
        let response = client()
            .request(request(&other.url("/v1/chat/completions"), key))
            .await
            .unwrap();
        response.status() == 200
    })
    .await;
    let took = freed.expect("the dead replica's slot came back");
    assert!(took <= Duration::from_millis(4500), "{took:?}");
}

#[tokio::test]
async fn nothing_in_redis_holds_a_client_key_and_everything_expires() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let p = proxies(&mock, Some(&redis), 1).await;
    for key in [
        "ck-shared-app-0001",
        "ck-shared-stream-0002",
        "ck-shared-spend-0003",
        "ck-shared-hold-0004",
    ] {
        let response = client()
            .request(request(&p[0].url("/v1/chat/completions"), key))
            .await
            .unwrap();
        body_bytes(response).await;
    }
    // A stream held open keeps its slot in Redis while the dump is read.
    let held = client()
        .request(stream(
            &p[0].url("/v1/chat/completions"),
            "ck-shared-hold-0004",
            20,
            100,
        ))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dump = redis.dump();
    // The rate, the budget's count, the held slot, and for each of the three clients whose
    // exchanges were settled the number of the last batch this replica applied.
    assert_eq!(dump.len(), 6, "{dump:?}");
    assert_eq!(
        dump.iter()
            .filter(|(k, _)| k.contains("}:applied:"))
            .count(),
        3,
        "{dump:?}"
    );
    assert!(
        dump.iter()
            .any(|(k, _)| k == "memoctopus:{holder}:in_flight"),
        "{dump:?}"
    );
    for (key, value) in &dump {
        assert!(key.starts_with("memoctopus:{"), "{key}");
        assert!(
            !key.contains("ck-") && !value.contains("ck-"),
            "{key} = {value}"
        );
    }
    let port = redis.port.to_string();
    for (key, _) in &dump {
        let ttl = Command::new("redis-cli")
            .args(["-p", &port, "PTTL", key])
            .output()
            .unwrap();
        let ttl: i64 = String::from_utf8_lossy(&ttl.stdout).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
    drop(held);
}

#[tokio::test]
async fn rediss_with_a_test_ca_and_a_password_from_a_file() {
    let ca = tls::TestCa::new("redis");
    let redis = RedisServer::start_tls(&ca, "pw-shared-redis-secret-5150");
    let dir = scratch_dir("shared-limits-url");
    let file = dir.join("redis-url");
    std::fs::write(&file, format!("{}\n", redis.url())).unwrap();
    let mock = MockUpstream::start().await;
    let path = file.display().to_string();
    let ca_path = ca.ca_pem_path();
    let proxy = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_LIMITS_REDIS_URL_FILE", &path),
            ("PROXY_LIMITS_REDIS_CA", &ca_path),
        ],
    )
    .await;
    wait_for_metric(&proxy, SHARED, 1.0, WAIT).await;
    let statuses = burst(std::slice::from_ref(&proxy), "ck-shared-app-0001", 7).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert!(redis
        .dump()
        .iter()
        .any(|(key, _)| key == "memoctopus:{app}:rate"));
    // A wrong password is not shared limits: the proxy serves on its own.
    std::fs::write(&file, redis.url().replace("5150", "0000")).unwrap();
    let wrong = spawn_proxy(
        &mock,
        &[
            ("PROXY_CLIENT_KEYS", KEYS),
            ("PROXY_LIMITS_REDIS_URL_FILE", &path),
            ("PROXY_LIMITS_REDIS_CA", &ca_path),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&wrong, SHARED).await, 0.0);
    let response = client()
        .request(request(
            &wrong.url("/v1/chat/completions"),
            "ck-shared-app-0001",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn the_settings_refuse_what_they_cannot_use_without_showing_a_password() {
    let base = [("OPENAI_API_KEY", "sk-test")];
    for (extra, named) in [
        (
            vec![
                (
                    "PROXY_LIMITS_REDIS_URL",
                    "redis://:pw-shared-redis-secret-5150@h:1",
                ),
                ("PROXY_LIMITS_REDIS_URL_FILE", "/nonexistent"),
            ],
            "PROXY_LIMITS_REDIS_URL",
        ),
        (
            vec![(
                "PROXY_LIMITS_REDIS_URL",
                "http://:pw-shared-redis-secret-5150@h:1",
            )],
            "PROXY_LIMITS_REDIS_URL",
        ),
        (
            // Without a URL, a value other than the default would mean nothing: refused.
            vec![("PROXY_LIMITS_REDIS_TIMEOUT", "200ms")],
            "PROXY_LIMITS_REDIS_TIMEOUT",
        ),
        (
            vec![
                ("PROXY_LIMITS_REDIS_URL", "redis://h:1"),
                ("PROXY_LIMITS_REDIS_FALLBACK", "open"),
            ],
            "PROXY_LIMITS_REDIS_FALLBACK",
        ),
        (
            vec![
                ("PROXY_LIMITS_REDIS_URL", "redis://h:1"),
                ("PROXY_LIMITS_REDIS_LEASE", "1s"),
            ],
            "PROXY_LIMITS_REDIS_LEASE",
        ),
        (
            vec![("PROXY_LIMITS_REDIS_URL_FILE", "/nonexistent/redis-url")],
            "PROXY_LIMITS_REDIS_URL_FILE",
        ),
    ] {
        let mut vars = base.to_vec();
        vars.extend(extra);
        let error = memoctopus::Config::from_vars(vars).unwrap_err();
        assert_eq!(error.setting, named, "{error}");
        assert!(!error.to_string().contains("pw-shared"), "{error}");
    }
}
