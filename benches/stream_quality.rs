//! Stream quality as a user feels it: holds N concurrent SSE streams through a target for a
//! while, re-opening each one as it ends, and records the time to the first event and every
//! gap between consecutive events, as the client sees them.
//!
//! `stream-quality URL [STREAMS] [SECONDS] [EVENTS] [INTERVAL_MS]` prints one JSON object:
//! TTFT p50/p99, the added gap (observed minus the upstream's interval) p50/p99/p99.9, the
//! largest gap per stream (p50/p99/max), how many streams got their first event, and how many
//! completed or failed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Default)]
struct Tally {
    ttft: Vec<Duration>,
    gaps: Vec<Duration>,
    largest_gap: Vec<Duration>,
    completed: u64,
    failed: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .expect("usage: stream-quality URL [STREAMS] [SECONDS] [EVENTS] [INTERVAL_MS]");
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (streams, seconds, events, interval_ms) = (arg(2, 500), arg(3, 10), arg(4, 64), arg(5, 20));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tally = runtime.block_on(run(
        url,
        streams,
        Duration::from_secs(seconds),
        events,
        interval_ms,
    ));
    report(tally, Duration::from_millis(interval_ms));
}

async fn run(url: String, streams: u64, length: Duration, events: u64, interval_ms: u64) -> Tally {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(streams as usize)
        .build_http();
    let deadline = Instant::now() + length;
    // `STREAM_AUTHORIZATION` replaces the bench's placeholder, for a proxy with client keys.
    let authorization = std::sync::Arc::new(
        std::env::var("STREAM_AUTHORIZATION").unwrap_or_else(|_| "Bearer bench-client".into()),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let client = client.clone();
        let url = url.clone();
        let authorization = authorization.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let request = Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", authorization.as_str())
                    .header("x-mock-events", events.to_string())
                    .header("x-mock-interval-ms", interval_ms.to_string())
                    .body(Full::from(
                        r#"{"model":"gpt-4","stream":true,"messages":[]}"#,
                    ))
                    .unwrap();
                let sent = Instant::now();
                let Ok(response) = client.request(request).await else {
                    tally.failed += 1;
                    continue;
                };
                let mut body = response.into_body();
                let mut last: Option<Instant> = None;
                let mut largest = Duration::ZERO;
                let mut seen = 0u64;
                let ok = loop {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(remaining, body.frame()).await {
                        Err(_) => break None, // the run ended mid-stream: neither completed nor failed
                        Ok(None) => break Some(true),
                        Ok(Some(Err(_))) => break Some(false),
                        Ok(Some(Ok(frame))) => {
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            let now = Instant::now();
                            let in_frame = data.windows(2).filter(|w| w == b"\n\n").count();
                            for k in 0..in_frame {
                                match last {
                                    None => tally.ttft.push(now - sent),
                                    Some(previous) => {
                                        // Events that arrived together: the later ones waited.
                                        let gap = if k == 0 {
                                            now - previous
                                        } else {
                                            Duration::ZERO
                                        };
                                        largest = largest.max(gap);
                                        tally.gaps.push(gap);
                                    }
                                }
                                last = Some(now);
                            }
                            seen += in_frame as u64;
                        }
                    }
                };
                match ok {
                    Some(true) if seen > 0 => {
                        tally.completed += 1;
                        tally.largest_gap.push(largest);
                    }
                    Some(_) => tally.failed += 1,
                    None => break,
                }
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(Ok(t)) = tasks.join_next().await {
        all.ttft.extend(t.ttft);
        all.gaps.extend(t.gaps);
        all.largest_gap.extend(t.largest_gap);
        all.completed += t.completed;
        all.failed += t.failed;
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn report(mut t: Tally, interval: Duration) {
    t.ttft.sort();
    t.gaps.sort();
    t.largest_gap.sort();
    let added = |p: f64| percentile(&t.gaps, p) - interval.as_secs_f64() * 1e3;
    println!(
        "{{\"ttft_p50_ms\":{:.3},\"ttft_p99_ms\":{:.3},\"added_gap_p50_ms\":{:.3},\"added_gap_p99_ms\":{:.3},\"added_gap_p999_ms\":{:.3},\"largest_gap_p50_ms\":{:.3},\"largest_gap_p99_ms\":{:.3},\"largest_gap_max_ms\":{:.3},\"events\":{},\"streams_started\":{},\"completed\":{},\"failed\":{}}}",
        percentile(&t.ttft, 0.5),
        percentile(&t.ttft, 0.99),
        added(0.5),
        added(0.99),
        added(0.999),
        percentile(&t.largest_gap, 0.5),
        percentile(&t.largest_gap, 0.99),
        percentile(&t.largest_gap, 1.0),
        t.gaps.len() + t.ttft.len(),
        t.ttft.len(),
        t.completed,
        t.failed
    );
}
