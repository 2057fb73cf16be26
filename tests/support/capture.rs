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

/// Installs the trace-level JSON subscriber once per test binary.
pub fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured {
            memory: Arc::default(),
            file: Arc::new(Mutex::new(scan_file("log"))),
        };
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .json()
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

/// Records bytes a client received.
pub fn received(bytes: &[u8]) {
    static FILE: OnceLock<Mutex<File>> = OnceLock::new();
    let file = FILE.get_or_init(|| Mutex::new(scan_file("received")));
    let _ = file.lock().unwrap().write_all(bytes);
}
