//! What the usage meter costs per answer: a fresh meter fed the mock upstream's answers frame
//! by frame, exactly as the proxy forwards them in `run.py`'s `chat-json`, `sse-20` and
//! `sse-20-usage` scenarios and a streamed transcription, timed in a loop on one core with nothing else in the way.
//!
//!     cargo run --release --example meter-cost
//!
//! Prints the median over 7 rounds of the nanoseconds per answer. Set beside the proxy's CPU
//! per request in the same scenario with `PROXY_USAGE=off` (`benches/ab.py`), it is the share
//! of a request's CPU the meter adds; benches/README.md gives both.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use memoctopus::usage::Meter;

// The mock's audio is not metered, so its bytes go unused here.
#[allow(dead_code)]
#[path = "events.rs"]
mod events;
use events::{event, Kind, CHAT_JSON};

const ROUNDS: usize = 7;
const ANSWERS: u32 = 100_000;

/// The ns per answer of metering `frames`, median of [`ROUNDS`].
fn time(frames: &[Bytes], meter: fn() -> Meter) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ANSWERS {
                let mut m = Box::new(meter());
                for frame in frames {
                    m.feed(black_box(frame));
                }
                black_box(m.reported());
            }
            start.elapsed().as_nanos() as f64 / f64::from(ANSWERS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// The 20 events of a stream as the mock sends them, one frame each.
fn stream(kind: Kind) -> Vec<Bytes> {
    (0..20).map(|i| event(kind, i, i == 19)).collect()
}

fn main() {
    let cases = [
        (
            "chat-json",
            vec![Bytes::from_static(CHAT_JSON.as_bytes())],
            Meter::json as fn() -> Meter,
        ),
        ("sse-20", stream(Kind::Chat), Meter::sse),
        ("sse-20-usage", stream(Kind::ChatWithUsage), Meter::sse),
        ("transcription-sse-20", stream(Kind::Transcript), Meter::sse),
    ];
    for (name, frames, meter) in cases {
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let mut m = meter();
        frames.iter().for_each(|f| m.feed(f));
        let reported = m.reported().is_some();
        println!(
            "{name}: {:.0} ns per answer ({bytes} bytes, usage {})",
            time(&frames, meter),
            if reported { "reported" } else { "estimated" }
        );
    }
}
