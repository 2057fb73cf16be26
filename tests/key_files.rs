//! `OPENAI_API_KEY_FILE` and `PROXY_CLIENT_KEYS_FILE`: files re-read while serving. A change
//! applies to the next request, never to one in flight; a bad change keeps the old keys.

mod support;

use std::path::Path;
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::*;

const OLD_KEY: &str = "sk-file-old-key-5550001";
const NEW_KEY: &str = "sk-file-new-key-5550002";
/// How long a change may take to apply: the watcher reads every second.
const RELOAD_LIMIT: Duration = Duration::from_secs(4);

/// Replaces `path` whole, as a deploy tool does: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The status a chat request with client key `key` gets at `url`.
async fn status_with_key(url: &str, key: &str) -> u16 {
    let request = Request::post(url)
        .header("authorization", format!("Bearer {key}"))
        .body(Full::from("{}"))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    body_bytes(response).await;
    status
}

/// Starts the proxy with `OPENAI_API_KEY_FILE` at `key_file` (and no `OPENAI_API_KEY`).
async fn spawn_with_key_file(
    mock: &MockUpstream,
    key_file: &Path,
    extra: &[(&str, &str)],
) -> TestProxy {
    let mut vars: Vec<(String, String)> = vec![
        (
            "OPENAI_API_KEY_FILE".into(),
            key_file.to_str().unwrap().into(),
        ),
        ("OPENAI_BASE_URL".into(), format!("http://{}/v1", mock.addr)),
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProxyStart::config(memoctopus::Config::from_vars(vars).unwrap())
        .start()
        .await
}

/// The key the upstream saw on a fresh chat request.
async fn key_seen_upstream(proxy: &TestProxy, mock: &MockUpstream) -> String {
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    mock.last_request().headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn wait_for_key(proxy: &TestProxy, mock: &MockUpstream, key: &str) -> Duration {
    let expected = format!("Bearer {key}");
    eventually(RELOAD_LIMIT, || async {
        key_seen_upstream(proxy, mock).await == expected
    })
    .await
    .unwrap_or_else(|| panic!("the new key was not in use within {RELOAD_LIMIT:?}"))
}

#[tokio::test]
async fn a_rotated_key_applies_to_the_next_request_and_a_running_stream_keeps_the_old_one() {
    let dir = scratch_dir("rotate");
    let key_file = dir.join("openai-key");
    std::fs::write(&key_file, format!("{OLD_KEY}\n")).unwrap();
    let mock = MockUpstream::start().await;
    let proxy = spawn_with_key_file(&mock, &key_file, &[]).await;
    assert_eq!(
        key_seen_upstream(&proxy, &mock).await,
        format!("Bearer {OLD_KEY}")
    );

    // A 3 s stream, started with the old key.
    let stream = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 30, 100))
        .await
        .unwrap();
    let streamed = tokio::spawn(read_all(stream));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Written in place, with surrounding whitespace, as an editor or `echo >` would.
    std::fs::write(&key_file, format!("\n  {NEW_KEY}  \n")).unwrap();
    let took = wait_for_key(&proxy, &mock, NEW_KEY).await;
    assert!(
        !streamed.is_finished(),
        "the stream ended before the rotation was seen ({took:?})"
    );

    let (body, clean) = streamed.await.unwrap();
    assert!(clean, "the running stream was cut by the rotation");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        mock::expected_chat_sse(30)
    );
    let stream_request_seen = mock
        .requests()
        .into_iter()
        .find(|r| r.headers.contains_key("x-mock-events"))
        .unwrap();
    assert_eq!(
        stream_request_seen.headers["authorization"],
        format!("Bearer {OLD_KEY}")
    );
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_key_reloads_total{setting=\"OPENAI_API_KEY_FILE\",result=\"success\"}"
        )
        .await,
        1.0
    );
    let loaded = metric(
        &proxy,
        "memoctopus_key_last_load_timestamp_seconds{setting=\"OPENAI_API_KEY_FILE\"}",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - loaded).abs() < 10.0,
        "last load at {loaded}, now {now}"
    );
}

/// The layout the kubelet makes for a mounted Secret: `key -> ..data/key`, and
/// `..data -> ..<timestamp>/`. An update writes a new timestamped directory and renames a new
/// `..data` link over the old one, so the file named `key` is never written.
fn kubernetes_secret_update(dir: &Path, generation: u32, key: &str) {
    let version = format!("..2026_11_26_{generation}");
    std::fs::create_dir(dir.join(&version)).unwrap();
    std::fs::write(dir.join(&version).join("key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("key").exists() {
        std::os::unix::fs::symlink("..data/key", dir.join("key")).unwrap();
    }
}

#[tokio::test]
async fn a_kubernetes_secret_update_through_a_symlink_swap_is_picked_up() {
    let dir = scratch_dir("k8s-secret");
    kubernetes_secret_update(&dir, 1, OLD_KEY);
    let mock = MockUpstream::start().await;
    let proxy = spawn_with_key_file(&mock, &dir.join("key"), &[]).await;
    assert_eq!(
        key_seen_upstream(&proxy, &mock).await,
        format!("Bearer {OLD_KEY}")
    );

    kubernetes_secret_update(&dir, 2, NEW_KEY);
    wait_for_key(&proxy, &mock, NEW_KEY).await;
}

#[tokio::test]
async fn a_broken_key_file_keeps_the_old_key_reports_once_and_recovers() {
    let dir = scratch_dir("broken-key");
    let key_file = dir.join("openai-key");
    std::fs::write(&key_file, OLD_KEY).unwrap();
    let mock = MockUpstream::start().await;
    let proxy = spawn_with_key_file(&mock, &key_file, &[]).await;
    let errors = "memoctopus_key_reloads_total{setting=\"OPENAI_API_KEY_FILE\",result=\"error\"}";
    assert_eq!(metric(&proxy, errors).await, 0.0);

    for (broken, expected_errors) in [
        // Emptied: a rotation script truncated it, or the Secret lost its key.
        ("\n".to_owned(), 1.0),
        // Two keys, or a key with a space in it.
        (format!("{NEW_KEY}\n{OLD_KEY}\n"), 2.0),
    ] {
        replace(&key_file, &broken);
        let seen = eventually(RELOAD_LIMIT, || async {
            metric(&proxy, errors).await >= expected_errors
        })
        .await;
        assert!(seen.is_some(), "the bad file was not reported");
        assert_eq!(
            key_seen_upstream(&proxy, &mock).await,
            format!("Bearer {OLD_KEY}")
        );
    }
    // Unreadable: gone altogether.
    std::fs::remove_file(&key_file).unwrap();
    eventually(RELOAD_LIMIT, || async {
        metric(&proxy, errors).await >= 3.0
    })
    .await
    .expect("the missing file was not reported");
    // Reported once, not every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metric(&proxy, errors).await, 3.0);
    assert_eq!(
        key_seen_upstream(&proxy, &mock).await,
        format!("Bearer {OLD_KEY}")
    );

    let logs = capture::logs().text();
    assert!(
        logs.contains("OPENAI_API_KEY_FILE")
            && logs.contains("the keys loaded before stay in force"),
        "no error naming the setting"
    );

    replace(&key_file, NEW_KEY);
    wait_for_key(&proxy, &mock, NEW_KEY).await;
}

#[tokio::test]
async fn client_keys_file_changes_admit_new_clients_and_refuse_removed_ones() {
    let dir = scratch_dir("client-keys");
    let clients = dir.join("client-keys");
    std::fs::write(
        &clients,
        "# the apps allowed to call\nweb:ck-file-web-7001\n\nbatch:ck-file-batch-7002\n",
    )
    .unwrap();
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(
        &mock,
        &[("PROXY_CLIENT_KEYS_FILE", clients.to_str().unwrap())],
    )
    .await;
    let url = proxy.url("/v1/chat/completions");
    let status_with = |key: &'static str| status_with_key(&url, key);
    assert_eq!(status_with("ck-file-web-7001").await, 200);
    assert_eq!(status_with("ck-file-batch-7002").await, 200);
    assert_eq!(status_with("ck-file-mobile-7003").await, 401);

    replace(
        &clients,
        "web:ck-file-web-7001\nmobile:ck-file-mobile-7003\n",
    );
    eventually(RELOAD_LIMIT, || async {
        status_with("ck-file-mobile-7003").await == 200
    })
    .await
    .expect("the new client key was not admitted");
    assert_eq!(status_with("ck-file-batch-7002").await, 401);
    assert_eq!(status_with("ck-file-web-7001").await, 200);

    // A malformed change (a name used twice) keeps the keys in force.
    replace(&clients, "web:ck-file-web-7001\nweb:ck-file-batch-7002\n");
    let errors =
        "memoctopus_key_reloads_total{setting=\"PROXY_CLIENT_KEYS_FILE\",result=\"error\"}";
    eventually(RELOAD_LIMIT, || async {
        metric(&proxy, errors).await == 1.0
    })
    .await
    .expect("the malformed file was not reported");
    assert_eq!(status_with("ck-file-mobile-7003").await, 200);
    assert_eq!(status_with("ck-file-batch-7002").await, 401);
    // The server's own key never changed, and no client key went upstream.
    for seen in mock.requests() {
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {SERVER_KEY}")
        );
    }
}

/// The path users take: TLS and HTTP/2 by ALPN, where one upstream connection carries every
/// request. The rotated key goes out on that same connection, with the stream that started
/// before the rotation still running on it.
#[tokio::test]
async fn over_tls_and_http2_the_new_key_goes_out_on_the_open_connection() {
    let dir = scratch_dir("rotate-tls");
    let key_file = dir.join("openai-key");
    std::fs::write(&key_file, OLD_KEY).unwrap();
    let (mock, ca) = tls_mock(tls::Alpn::Both, mock::MockOptions::default()).await;
    let base_url = format!("https://localhost:{}/v1", mock.addr.port());
    let ca_path = ca.ca_pem_path();
    let proxy = spawn_with_key_file(
        &mock,
        &key_file,
        &[
            ("OPENAI_BASE_URL", &base_url),
            ("PROXY_UPSTREAM_CA", &ca_path),
        ],
    )
    .await;
    assert_eq!(
        key_seen_upstream(&proxy, &mock).await,
        format!("Bearer {OLD_KEY}")
    );
    let stream = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 20, 100))
        .await
        .unwrap();
    let streamed = tokio::spawn(read_all(stream));

    replace(&key_file, NEW_KEY);
    wait_for_key(&proxy, &mock, NEW_KEY).await;
    let (body, clean) = streamed.await.unwrap();
    assert!(clean);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        mock::expected_chat_sse(20)
    );
    let seen = mock.last_request();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        mock.connections_opened(),
        1,
        "the rotation opened a connection"
    );
}

/// A FIFO put where a key file was (`mkfifo` after removing it) would block whoever opens it
/// until a writer comes. It is refused like a malformed file: at start with exit 64 (and
/// `--check-config` too), and while serving with the keys in force kept, the later reloads
/// still applied, and SIGTERM still ending the process.
#[test]
fn a_fifo_where_a_key_file_was_is_refused_and_blocks_nothing() {
    use std::process::Command;
    use std::time::Instant;
    let dir = scratch_dir("fifo-keys");
    let clients = dir.join("client-keys");
    let mkfifo = |path: &Path| {
        let _ = std::fs::remove_file(path);
        let status = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success(), "mkfifo");
    };
    let mock = std::thread::spawn(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mock = runtime.block_on(MockUpstream::start());
        let addr = mock.addr;
        (runtime, mock, addr)
    })
    .join()
    .unwrap();
    let base_url = format!("http://{}/v1", mock.2);
    let clients_path = clients.to_str().unwrap().to_owned();
    let vars = [
        ("OPENAI_API_KEY", SERVER_KEY),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PROXY_CLIENT_KEYS_FILE", clients_path.as_str()),
    ];

    // At start, for both the proxy and --check-config: exit 64 at once, naming the file.
    mkfifo(&clients);
    for args in [&[][..], &["--check-config"][..]] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
            .args(args)
            .env_clear()
            .envs(vars)
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("{args:?}: start-up hung on the FIFO");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("PROXY_CLIENT_KEYS_FILE") && stderr.contains("not a regular file"),
            "{stderr}"
        );
    }

    // While serving: the FIFO is refused, the keys in force stay, and a later file applies.
    let _ = std::fs::remove_file(&clients);
    std::fs::write(&clients, "web:ck-fifo-web-1\nold:ck-fifo-old-2\n").unwrap();
    let mut binary = Binary::start(&dir, &vars);
    let url = format!("http://{}/v1/chat/completions", binary.addr);
    let status_with = |key: &str| mock.0.block_on(status_with_key(&url, key));
    assert_eq!(status_with("ck-fifo-old-2"), 200);
    mkfifo(&clients);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        status_with("ck-fifo-old-2"),
        200,
        "the FIFO dropped the keys"
    );
    assert!(
        binary.log().contains("not a regular file"),
        "{}",
        binary.log()
    );
    let _ = std::fs::remove_file(&clients);
    std::fs::write(&clients, "web:ck-fifo-web-1\n").unwrap();
    let started = Instant::now();
    while status_with("ck-fifo-old-2") != 401 {
        assert!(
            started.elapsed() < RELOAD_LIMIT,
            "a removed key stayed valid after the FIFO: reloads stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_with("ck-fifo-web-1"), 200);

    // SIGTERM still ends it, with a FIFO in place again.
    mkfifo(&clients);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        binary.terminate(Duration::from_secs(10)),
        "SIGTERM did not end the process"
    );
}
