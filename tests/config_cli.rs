//! The binary's start-up: a bad configuration stops it before it binds, with exit 64 and one
//! line naming the setting. The child process gets its own environment; ours is untouched.

mod support;

use support::{check_config, check_config_in, run_once, scratch_dir};

#[test]
fn missing_key_exits_64_naming_the_setting() {
    let (code, _, stderr) = run_once(&[], &[]);
    assert_eq!(code, Some(64));
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
        let (code, _, stderr) = run_once(
            &[],
            &[
                ("OPENAI_API_KEY", "sk-cli-secret"),
                (name, value),
                ("HOST", "127.0.0.1"),
            ],
        );
        assert_eq!(code, Some(64), "{name}={value}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("sk-cli-secret"), "{stderr}");
    }
}

#[test]
fn version_and_help() {
    let (code, version, _) = run_once(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        version.trim(),
        format!("memoctopus {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, help, _) = run_once(&["--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(
        help.contains("PROXY_SHUTDOWN_GRACE") && help.contains("30s"),
        "{help}"
    );
    assert_eq!(run_once(&["--bogus"], &[]).0, Some(64));
}

#[test]
fn check_config_prints_the_settings_with_the_key_masked() {
    let dir = scratch_dir("check");
    std::fs::write(
        dir.join(".env"),
        "OPENAI_API_KEY=sk-from-dotenv-secret\nPORT=9100\n",
    )
    .unwrap();
    let (code, stdout, _) = check_config_in(
        &dir,
        &[("PROXY_CLIENT_KEYS", "ck-check-secret"), ("PORT", "9200")],
    );
    assert_eq!(code, Some(0), "{stdout}");
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

    assert_eq!(check_config(&[]).0, Some(64));
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
        let (code, _, stderr) = run_once(&[], &vars);
        assert_eq!(code, Some(64), "{vars:?}");
        assert!(stderr.contains(setting), "{stderr}");
        for secret in ["sk-cli-file-secret", "ck-cli-file", "sk-cli-secret"] {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_describes_each_upstream_of_the_file_with_its_key_masked() {
    let dir = scratch_dir("check-upstreams");
    std::fs::write(dir.join("key-openai"), "sk-fleet-check-openai\n").unwrap();
    std::fs::write(dir.join("key-azure"), "sk-fleet-check-azure\n").unwrap();
    std::fs::write(
        dir.join("upstreams.toml"),
        "[[upstream]]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key_file = \"key-openai\"\nweight = 3\n\n\
         [[upstream]]\nname = \"azure\"\nbase_url = \"https://x.openai.azure.com/openai\"\napi_key_file = \"key-azure\"\nauth = \"api-key\"\nquery = \"api-version=2024-10-21\"\npriority = 1\n",
    )
    .unwrap();
    let file = dir.join("upstreams.toml");
    let (code, stdout, stderr) =
        check_config_in(&dir, &[("PROXY_UPSTREAMS_FILE", file.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("openai https://api.openai.com/v1 auth=bearer query=(unset) priority=0 weight=3 (key set, 21 characters, masked)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("azure https://x.openai.azure.com/openai auth=api-key query=api-version=2024-10-21 priority=1 weight=1 (key set, 20 characters, masked)"),
        "{stdout}"
    );
    // The settings the file stands in for are not shown as if they applied.
    assert!(!stdout.contains("PROXY_UPSTREAM_AUTH="), "{stdout}");
    assert!(!stdout.contains("OPENAI_BASE_URL="), "{stdout}");
    assert!(!stdout.contains("sk-fleet-check"), "{stdout}");
}
