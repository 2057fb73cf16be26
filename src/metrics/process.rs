//! The process itself, read from `/proc/self` at each scrape: resident memory, CPU time, open
//! file descriptors and the start time, as the Prometheus client libraries' process collectors
//! name them (under the `memoctopus_` prefix). Elsewhere than Linux they are absent.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The kernel's clock ticks a second for the times in `/proc/<pid>/stat`: `USER_HZ`, 100 on
/// every Linux architecture's user-space ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// Encodes the process's figures on each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector {
    start_time: f64,
}

impl ProcessCollector {
    pub(super) fn new() -> ProcessCollector {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ProcessCollector { start_time }
    }
}

/// What one read of `/proc/self` found.
struct Figures {
    resident_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
}

fn read() -> Figures {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let resident_bytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis, from the third (state) on: utime and
    // stime are the 14th and 15th.
    let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some((ticks(14)? + ticks(15)?) as f64 / TICKS_PER_SECOND)
    });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64);
    Figures {
        resident_bytes,
        cpu_seconds,
        open_fds,
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = read();
        if let Some(bytes) = figures.resident_bytes {
            let gauge = ConstGauge::new(bytes as i64);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the process, in bytes",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(seconds) = figures.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the process has used, in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Some(fds) = figures.open_fds {
            let gauge = ConstGauge::new(fds as i64);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "File descriptors the process has open (sockets included)",
                None,
                gauge.metric_type(),
            )?)?;
        }
        let gauge = ConstGauge::new(self.start_time);
        gauge.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}
