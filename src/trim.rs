//! Giving freed heap memory back to the operating system once the proxy is idle.
//!
//! glibc keeps memory that was freed for later reuse, so after a burst of load the resident
//! size would stay at its peak for good, which a sidecar's memory limit pays for. When nothing
//! has happened for a whole interval (no exchange started, no pooled connection closed), after
//! something had, `malloc_trim` returns the free pages. It never runs while traffic flows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts what allocates or frees a lot: exchanges started, pooled connections closed. The
/// trimmer waits for it to stand still.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// Records activity that may leave freed memory behind.
pub(crate) fn note_activity() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// How long the proxy must have started no exchange before memory is trimmed.
const QUIET: Duration = Duration::from_secs(1);

/// Runs for the life of the server.
pub(crate) async fn trim_when_idle() {
    let mut seen = ACTIVITY.load(Ordering::Relaxed);
    let mut trimmed_at = seen;
    let mut ticks = tokio::time::interval(QUIET);
    loop {
        ticks.tick().await;
        let now = ACTIVITY.load(Ordering::Relaxed);
        if now == seen && now != trimmed_at {
            release_free_memory();
            trimmed_at = now;
        }
        seen = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
