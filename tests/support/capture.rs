//! Secret hygiene for the whole suite: every test binary that starts a proxy logs at `trace`
//! into memory and into `target/secret-scan/`, and the client helpers record the bytes they
//! receive there too. `.ci/run` then searches that folder for every key the tests use.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Log output, kept in memory for tests that read it and copied to a file for the scan.
#[derive(Clone)]
pub struct Captured {
    memory: Arc<Mutex<Vec<u8>>>,
    file: Arc<Mutex<File>>,
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.memory.lock().unwrap().extend_from_slice(buf);
        let _ = self.file.lock().unwrap().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.memory.lock().unwrap()).into_owned()
    }

    /// The fields of the access log line of the exchange with this request id.
    pub fn access_line(&self, id: &str) -> serde_json::Value {
        let found = self
            .text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| {
                line["target"] == "memoctopus::access" && line["fields"]["request_id"] == id
            });
        found.unwrap_or_else(|| panic!("no access line for {id}"))["fields"].clone()
    }
}

fn scan_file(kind: &str) -> File {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("secret-scan");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}-{}.{kind}", std::process::id())))
        .unwrap()
}

static LOGS: OnceLock<Captured> = OnceLock::new();

/// Installs the trace-level JSON subscriber once per test binary.
pub fn logs() -> Captured {
    LOGS.get_or_init(|| install(None)).clone()
}

/// For a load test's binary, called before its first proxy starts: the proxy still logs at
/// trace, but hyper, h2 and rustls only from info up. At trace they write so much for hundreds
/// of streams that the writing, not the proxy, would decide the timings the test checks.
pub fn logs_with_quiet_dependencies() -> Captured {
    use tracing_subscriber::filter::Targets;
    let targets = Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("memoctopus", tracing::Level::TRACE);
    LOGS.get_or_init(|| install(Some(targets))).clone()
}

fn install(targets: Option<tracing_subscriber::filter::Targets>) -> Captured {
    use tracing_subscriber::prelude::*;
    let logs = Captured {
        memory: Arc::default(),
        file: Arc::new(Mutex::new(scan_file("log"))),
    };
    let writer = logs.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .json()
        .with_writer(move || writer.clone());
    match targets {
        None => tracing_subscriber::registry()
            .with(layer.with_filter(tracing_subscriber::filter::LevelFilter::TRACE))
            .init(),
        Some(targets) => tracing_subscriber::registry()
            .with(layer.with_filter(targets))
            .init(),
    }
    logs
}

/// Records bytes a client received.
pub fn received(bytes: &[u8]) {
    static FILE: OnceLock<Mutex<File>> = OnceLock::new();
    let file = FILE.get_or_init(|| Mutex::new(scan_file("received")));
    let _ = file.lock().unwrap().write_all(bytes);
}
