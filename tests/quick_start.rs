//! The README's first commands, as a new user runs them: `config/example.env` copied as `.env`
//! starts the proxy as it is, `--check-config` says every warning the running proxy would, a
//! setting that needs another is named with every line like it at once, and the toolchain the
//! image and `Cargo.toml` name can build the lockfile.
//!
//! `tests/quick_start.py` runs the README's lines literally, against the release binary.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

const EXAMPLE_ENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.env");

/// `config/example.env` with only the lines a test must change replaced, each of which must be
/// there: the upstream (the mock) and the port (any free one).
fn example_env(replacements: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(EXAMPLE_ENV).unwrap();
    let mut out = String::new();
    let mut replaced = 0;
    for line in text.lines() {
        match replacements
            .iter()
            .find(|(name, _)| line.starts_with(&format!("{name}=")))
        {
            Some((name, value)) => {
                out.push_str(&format!("{name}={value}\n"));
                replaced += 1;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert_eq!(
        replaced,
        replacements.len(),
        "config/example.env lacks one of {replacements:?}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_env_as_it_is_starts_the_proxy_and_serves_the_seed_examples() {
    let mock = MockUpstream::start().await;
    let dir = scratch_dir("quick-start-env");
    let base_url = format!("http://{}/v1", mock.addr);
    std::fs::write(
        dir.join(".env"),
        example_env(&[("OPENAI_BASE_URL", &base_url), ("PORT", "0")]),
    )
    .unwrap();

    // Nothing but the file: the environment is empty.
    let (code, stdout, stderr) = check_config_in(&dir, &[]);
    assert_eq!(
        code,
        Some(0),
        "--check-config refused example.env: {stderr}"
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");

    let binary = tokio::task::spawn_blocking(move || Binary::start(&dir, &[]))
        .await
        .unwrap();
    // example.env's HOST is 0.0.0.0: reach it on loopback.
    let proxy = TestProxy::external(([127, 0, 0, 1], binary.addr.port()).into());

    let health = client()
        .request(
            http::Request::get(proxy.url("/health"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(body_string(health).await, r#"{"status":"ok"}"#);

    let chat = client()
        .request(chat_request(
            &proxy.url("/v1/chat/completions"),
            r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(body_string(chat).await, mock::CHAT_JSON);
    // The example's placeholder key is what goes upstream: the file was read as it is.
    assert_eq!(
        mock.last_request().headers["authorization"],
        "Bearer sk-replace-me"
    );

    let stream = client()
        .request(stream_request(&proxy.url("/v1/chat/completions"), 3, 0))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(body_string(stream).await, mock::expected_chat_sse(3));

    let upload = multipart(10_000, "quickstart");
    let transcription = client()
        .request(transcription_request(
            &proxy.url("/v1/audio/transcriptions"),
            "quickstart",
            upload.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(transcription.status(), 200);
    assert_eq!(body_string(transcription).await, mock::TRANSCRIPTION_JSON);
    assert_eq!(mock.last_request().body.as_deref(), Some(&upload[..]));

    // Start-up said what the example leaves to do, and what its HOST means.
    let log = binary.log();
    assert!(
        log.contains("OPENAI_API_KEY is still sk-replace-me"),
        "{log}"
    );
    assert!(log.contains("anyone who can reach this port"), "{log}");
}

#[test]
fn check_config_prints_every_warning_the_running_proxy_logs_the_open_relay_included() {
    let dir = scratch_dir("quick-start-relay");
    let (code, stdout, stderr) =
        check_config_in(&dir, &[("OPENAI_API_KEY", "sk-test"), ("HOST", "0.0.0.0")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("warning: PROXY_CLIENT_KEYS is unset and HOST 0.0.0.0 is not loopback"),
        "{stdout}"
    );
    assert!(stdout.ends_with("configuration OK\n"), "{stdout}");
    // Loopback, or client keys, is no open relay.
    for vars in [
        &[("OPENAI_API_KEY", "sk-test"), ("HOST", "127.0.0.1")][..],
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("HOST", "0.0.0.0"),
            ("PROXY_CLIENT_KEYS", "web:ck-1"),
        ][..],
    ] {
        let (code, stdout, stderr) = check_config_in(&dir, vars);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stdout.contains("warning:"), "{vars:?}: {stdout}");
    }
}

#[test]
fn redis_settings_without_a_url_are_accepted_at_their_defaults_and_otherwise_all_named_at_once() {
    let dir = scratch_dir("quick-start-redis");
    let (code, _, stderr) = check_config_in(
        &dir,
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("PROXY_LIMITS_REDIS_PREFIX", "memoctopus:"),
            ("PROXY_LIMITS_REDIS_TIMEOUT", "50ms"),
            ("PROXY_LIMITS_REDIS_FALLBACK", "local"),
            ("PROXY_LIMITS_REDIS_LEASE", "30s"),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");

    let (code, _, stderr) = check_config_in(
        &dir,
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("PROXY_LIMITS_REDIS_PREFIX", "memoctopus:"),
            ("PROXY_LIMITS_REDIS_TIMEOUT", "200ms"),
            ("PROXY_LIMITS_REDIS_FALLBACK", "refuse"),
            ("PROXY_LIMITS_REDIS_CA", "/etc/ssl/redis-ca.pem"),
        ],
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("remove or comment out these lines")
            && stderr.contains(
                "PROXY_LIMITS_REDIS_TIMEOUT, PROXY_LIMITS_REDIS_FALLBACK, PROXY_LIMITS_REDIS_CA"
            ),
        "{stderr}"
    );
    // The one at its default is not among them.
    assert!(!stderr.contains("PROXY_LIMITS_REDIS_PREFIX"), "{stderr}");
}

/// No other toolchain can be fetched here, so the image's and the manifest's claims are held
/// to the lockfile: the highest `rust-version` of any locked crate built for Linux.
#[test]
fn the_image_and_cargo_toml_name_a_toolchain_that_builds_the_lockfile() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (needed, by) = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let version = version(p["rust_version"].as_str()?);
            Some((version, format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .unwrap();

    let manifest = std::fs::read_to_string(Path::new(root).join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| version(v.trim_matches('"')))
        .expect("Cargo.toml declares no rust-version");
    assert_eq!(
        declared, needed,
        "Cargo.toml's rust-version is {declared:?}, but {by} needs {needed:?}"
    );

    let dockerfile = std::fs::read_to_string(Path::new(root).join("config/Dockerfile")).unwrap();
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|tag| tag.split(['-', ' ']).next())
        .map(version)
        .expect("config/Dockerfile builds on no rust: image");
    assert!(
        image >= needed,
        "config/Dockerfile builds on rust {image:?}, but {by} needs {needed:?}"
    );
}

/// `1.88`, `1.88.0` as comparable numbers.
fn version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
