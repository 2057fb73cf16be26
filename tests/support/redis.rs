//! A real `redis-server` (Debian's package) on a free port, for the shared limits. Nothing
//! passes without it: if it is missing and this runs as root on Debian, it is installed once
//! with apt-get; otherwise the test fails and says how to install it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tls::TestCa;

static INSTALL: Mutex<bool> = Mutex::new(false);

/// Makes sure `redis-server` is on PATH.
fn ensure_installed() {
    let mut checked = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *checked {
        return;
    }
    let found = || {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !found() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if root {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "redis-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
        assert!(
            found(),
            "the shared-limits tests need redis-server: apt-get install redis-server"
        );
    }
    *checked = true;
}

pub struct RedisServer {
    pub port: u16,
    /// The password, when it has one.
    pub password: Option<String>,
    tls: bool,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// A plain server without a password.
    pub fn start() -> RedisServer {
        RedisServer::launch(None, None)
    }

    /// A `rediss://` server with the `localhost` certificate of `ca`, and a password.
    pub fn start_tls(ca: &TestCa, password: &str) -> RedisServer {
        RedisServer::launch(Some(ca), Some(password))
    }

    fn launch(ca: Option<&TestCa>, password: Option<&str>) -> RedisServer {
        ensure_installed();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = super::scratch_dir(&format!("redis-{port}"));
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            // DEBUG SLEEP, for the tests of a Redis that answers late.
            "--enable-debug-command".into(),
            "local".into(),
        ];
        match ca {
            Some(ca) => {
                let (cert, key) = ca.server_files(&dir);
                args.extend(
                    [
                        "--port",
                        "0",
                        "--tls-port",
                        &port.to_string(),
                        "--tls-cert-file",
                        &cert.display().to_string(),
                        "--tls-key-file",
                        &key.display().to_string(),
                        "--tls-ca-cert-file",
                        &ca.ca_pem_path(),
                        "--tls-auth-clients",
                        "no",
                    ]
                    .map(String::from),
                );
            }
            None => args.extend(["--port".to_owned(), port.to_string()]),
        }
        if let Some(password) = password {
            args.extend(["--requirepass".to_owned(), password.to_owned()]);
        }
        let mut server = RedisServer {
            port,
            password: password.map(str::to_owned),
            tls: ca.is_some(),
            args,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// The URL a proxy is given.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.tls { "localhost" } else { "127.0.0.1" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@{host}:{}", self.port),
            None => format!("{scheme}://{host}:{}", self.port),
        }
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one `redis-cli` command against the server and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(password) = &self.password {
            command.args(["-a", password]);
        }
        if self.tls {
            command.args(["--tls", "--insecure"]);
        }
        let out = command.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in the server and its value, as text, for a test to search.
    pub fn dump(&self) -> Vec<(String, String)> {
        let cli = |args: &[&str]| self.cli(args);
        let keys = cli(&["--scan"]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|key| {
                let kind = cli(&["TYPE", key]);
                let value = match kind.trim() {
                    "zset" => cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
                    "string" => cli(&["GET", key]),
                    other => other.to_owned(),
                };
                (key.to_owned(), value)
            })
            .collect()
    }

    /// One key's value as text, or an empty string.
    pub fn get(&self, key: &str) -> String {
        self.dump()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
