//! The binary's start-up: a bad configuration stops it before it binds, with exit 64 and one
//! line naming the setting. The child process gets its own environment; ours is untouched.

mod support;

use std::process::Command;

use support::scratch_dir;

fn memoctopus(vars: &[(&str, &str)]) -> std::process::Output {
    // A directory per call: the tests run at once, and each empties its own.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_dir(&format!("cli-{call}"));
    let output = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(&dir)
        .output()
        .unwrap();
    output
}

#[test]
fn missing_key_exits_64_naming_the_setting() {
    let out = memoctopus(&[]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
}

#[test]
fn malformed_settings_exit_64_naming_the_setting() {
    for (name, value) in [
        ("PORT", "http"),
        ("OPENAI_BASE_URL", "api.openai.com/v1"),
        ("PROXY_IDLE_TIMEOUT", "soon"),
        ("PROXY_EXTRA_ROUTES", "GET /v1/../admin"),
        ("PROXY_UPSTREAM_CA", "/nonexistent/ca.pem"),
        ("PROXY_UPSTREAM_CA", "Cargo.toml"),
        ("PROXY_UPSTREAM_PROTOCOL", "h3"),
        ("PROXY_UPSTREAM_MAX_STREAMS", "0"),
        ("PROXY_LISTEN_BACKLOG", "lots"),
        ("HTTPS_PROXY", "socks5://127.0.0.1:1080"),
    ] {
        let out = memoctopus(&[
            ("OPENAI_API_KEY", "sk-cli-secret"),
            (name, value),
            ("HOST", "127.0.0.1"),
        ]);
        assert_eq!(out.status.code(), Some(64), "{name}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("sk-cli-secret"), "{stderr}");
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("memoctopus {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("PROXY_SHUTDOWN_GRACE") && help.contains("30s"),
        "{help}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_config_prints_the_settings_with_the_key_masked() {
    let dir = scratch_dir("check");
    std::fs::write(
        dir.join(".env"),
        "OPENAI_API_KEY=sk-from-dotenv-secret\nPORT=9100\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .arg("--check-config")
        .env_clear()
        .env("PROXY_CLIENT_KEYS", "ck-check-secret")
        .env("PORT", "9200")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PORT=9200"), "{stdout}");
    assert!(
        stdout.contains("OPENAI_API_KEY=(set, 21 characters, masked)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PROXY_CLIENT_KEYS=(1 key, masked)"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-from-dotenv-secret") && !stdout.contains("ck-check-secret"));

    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .arg("--check-config")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn bad_key_files_exit_64_naming_the_setting_and_never_the_contents() {
    let dir = scratch_dir("cli-keys");
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let empty = write("empty", "\n  \n");
    let two_keys = write("two", "sk-cli-file-secret-1\nsk-cli-file-secret-2\n");
    let good_key = write("good", "sk-cli-file-secret-1\n");
    let repeated = write("clients", "web:ck-cli-file-secret\nweb:ck-cli-file-other\n");
    let missing = dir.join("missing").to_str().unwrap().to_owned();
    for (vars, setting) in [
        (
            vec![("OPENAI_API_KEY_FILE", empty.as_str())],
            "OPENAI_API_KEY_FILE",
        ),
        (
            vec![("OPENAI_API_KEY_FILE", two_keys.as_str())],
            "OPENAI_API_KEY_FILE",
        ),
        (
            vec![("OPENAI_API_KEY_FILE", missing.as_str())],
            "OPENAI_API_KEY_FILE",
        ),
        (
            vec![
                ("OPENAI_API_KEY_FILE", good_key.as_str()),
                ("PROXY_CLIENT_KEYS_FILE", repeated.as_str()),
            ],
            "PROXY_CLIENT_KEYS_FILE",
        ),
        (
            vec![
                ("OPENAI_API_KEY_FILE", good_key.as_str()),
                ("OPENAI_API_KEY", "sk-cli-secret"),
            ],
            "OPENAI_API_KEY",
        ),
    ] {
        let mut vars = vars;
        vars.push(("HOST", "127.0.0.1"));
        let out = memoctopus(&vars);
        assert_eq!(out.status.code(), Some(64), "{vars:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(setting), "{stderr}");
        for secret in ["sk-cli-file-secret", "ck-cli-file", "sk-cli-secret"] {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
