//! The real `memoctopus` binary as a user starts it: a working directory of its own (where a
//! `.env` may lie), exactly the given environment, and its address read from the
//! "memoctopus listening" line it logs, in either log format.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running binary; killed when dropped.
pub struct Binary {
    child: Child,
    /// Where it accepts, from its own start-up line.
    pub addr: SocketAddr,
    /// Everything it wrote to standard output so far.
    log: Arc<Mutex<String>>,
}

impl Binary {
    /// Starts the binary in `dir` with only `vars` in its environment and waits (at most 20 s)
    /// for its start-up line; panics with what it printed if it exits or never says it listens.
    pub fn start(dir: &Path, vars: &[(&str, &str)]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
            .env_clear()
            .envs(vars.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = listening_address(&line) {
                    let _ = found.send(addr);
                }
                let mut log = shared.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let errors = Arc::new(Mutex::new(String::new()));
        let shared = errors.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut errors = shared.lock().unwrap();
                errors.push_str(&line);
                errors.push('\n');
            }
        });
        match address.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Binary { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the binary did not start ({status:?}):\n{}{}",
                    log.lock().unwrap(),
                    errors.lock().unwrap()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits at most `limit` for it to exit; whether it did.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a run of the binary left: its exit status, standard output and standard error.
pub type Ran = (Option<i32>, String, String);

/// `memoctopus ARGS` in `dir` with only `vars` in its environment, to its end.
pub fn run_in(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Ran {
    let out = Command::new(env!("CARGO_BIN_EXE_memoctopus"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_in`] a fresh scratch directory of its own (no `.env`): the tests run at once, and
/// each empties its own.
pub fn run_once(args: &[&str], vars: &[(&str, &str)]) -> Ran {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let exe = std::env::current_exe().unwrap();
    let binary = exe.file_stem().unwrap().to_string_lossy().into_owned();
    run_in(&scratch_dir(&format!("{binary}-run-{call}")), args, vars)
}

/// `memoctopus --check-config` with only `vars`, in a directory of its own.
pub fn check_config(vars: &[(&str, &str)]) -> Ran {
    run_once(&["--check-config"], vars)
}

/// `memoctopus --check-config` in `dir` (and its `.env`) with only `vars`.
pub fn check_config_in(dir: &Path, vars: &[(&str, &str)]) -> Ran {
    run_in(dir, &["--check-config"], vars)
}

/// The address in a start-up line: `... memoctopus listening address=127.0.0.1:8000 ...` as
/// text, or `{"message":"memoctopus listening","address":"..."}` as JSON.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("memoctopus listening") {
        return None;
    }
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return event["address"].as_str()?.parse().ok();
    }
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))?;
    value.parse().ok()
}

/// A fresh directory of its own for one test's files, under the system's temp directory.
pub fn scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("memoctopus-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
