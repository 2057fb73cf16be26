//! Cost guards that a noisy machine cannot blur: heap allocations the proxy makes per chat JSON
//! exchange and per forwarded SSE event. The proxy runs on a runtime of its own, on one thread,
//! and a counting global allocator counts only that thread's allocations, so the test's client
//! and mock upstream do not count. A change that raises a count fails here; a change that earns
//! a lower one lowers the bound.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use support::*;

/// Allocations per chat JSON exchange (HTTP/1.1 client, HTTP/1.1 upstream), today's count. One
/// of them is the usage meter's buffer for the answer's `usage` object.
const PER_EXCHANGE: f64 = 25.0;
/// Allocations per forwarded SSE event: none on a quiet machine (0.02 or less). With two CPU
/// burners beside it, the same build read up to 0.52 (some events then cost an allocation, by
/// when the threads run); the bound is above that and below the one an event that a change
/// allocating per event adds.
const PER_EVENT: f64 = 0.75;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The proxy in front of `mock`, on a current-thread runtime of its own whose allocations count.
fn proxy_on_its_own_thread(mock_addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let config = memoctopus::Config::from_vars([
                ("OPENAI_API_KEY", SERVER_KEY),
                ("OPENAI_BASE_URL", &format!("http://{mock_addr}/v1")),
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("PROXY_LOG_FORMAT", "json"),
            ])
            .unwrap();
            let listener =
                memoctopus::inbound::listener::bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            COUNTED.with(|c| c.set(true));
            let _ = memoctopus::run(listener, config, std::future::pending::<()>()).await;
        });
    });
    rx.recv().unwrap()
}

/// Allocations the proxy makes while `work` runs.
async fn counted<F: std::future::Future<Output = ()>>(work: F) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    work.await;
    // Let the proxy finish the exchange's bookkeeping (its access line, the pool's return).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

async fn chat(client: &TestClient, url: &str, events: Option<u32>) {
    let request = match events {
        Some(events) => stream_request(url, events, 0),
        None => chat_request(url, "{}"),
    };
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
}

#[tokio::test]
async fn allocations_per_exchange_and_per_event_stay_within_todays_count() {
    // The access log at `info`, as the binary writes it by default: its line counts too.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .try_init();
    let mock = MockUpstream::start().await;
    let addr = proxy_on_its_own_thread(mock.addr);
    let url = format!("http://{addr}/v1/chat/completions");
    let client = client();
    for _ in 0..20 {
        chat(&client, &url, None).await;
        chat(&client, &url, Some(10)).await;
    }

    // The allocations between the starts of two exchanges in a row, for 300 exchanges: the
    // median is what every exchange costs. A one-off allocation (a table that grows, a timer
    // wheel's level, a scheduler's queue under load) moves one interval and not the median; an
    // allocation added to every exchange moves them all.
    const EXCHANGES: usize = 300;
    let mut intervals = Vec::with_capacity(EXCHANGES);
    let mut last = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..EXCHANGES {
        chat(&client, &url, None).await;
        let now = ALLOCATIONS.load(Ordering::Relaxed);
        intervals.push(now - last);
        last = now;
    }
    intervals.sort_unstable();
    let json = intervals[EXCHANGES / 2] as f64;
    let mean = intervals.iter().sum::<u64>() as f64 / EXCHANGES as f64;

    const STREAMS: u64 = 10;
    let mut per_event = f64::MAX;
    for _ in 0..3 {
        let short = counted(async {
            for _ in 0..STREAMS {
                chat(&client, &url, Some(10)).await;
            }
        })
        .await as f64;
        let long = counted(async {
            for _ in 0..STREAMS {
                chat(&client, &url, Some(110)).await;
            }
        })
        .await as f64;
        per_event = per_event.min((long - short) / (STREAMS as f64 * 100.0));
    }
    println!(
        "allocations: {json} per chat JSON exchange (median; mean {mean:.2}), {per_event:.3} per SSE event"
    );
    assert!(
        json <= PER_EXCHANGE,
        "{json:.2} allocations per chat JSON exchange, over today's {PER_EXCHANGE}"
    );
    assert!(
        per_event <= PER_EVENT,
        "{per_event:.3} allocations per SSE event, over today's {PER_EVENT}"
    );
}
