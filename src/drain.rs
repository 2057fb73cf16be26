//! What graceful shutdown needs to know about exchanges in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Shared by the accept loop, the service and every exchange.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    /// Set at the shutdown signal: `/ready` answers 503 from then on.
    draining: AtomicBool,
    /// Set when the grace period ran out: exchanges still running are being cut.
    cutting: AtomicBool,
    /// Exchanges that ended normally after the shutdown signal.
    finished: AtomicU64,
    /// Exchanges ended by the grace period running out.
    cut: AtomicU64,
    /// WebSocket sessions open now. They outlive the HTTP connection they were upgraded
    /// from, so the drain waits for them as well as for the connections.
    sessions: AtomicU64,
    /// Signalled when the last session ends.
    sessions_ended: Notify,
}

/// An open WebSocket session, counted until dropped.
pub(crate) struct CountedSession(Arc<DrainState>);

impl Drop for CountedSession {
    fn drop(&mut self) {
        if self.0.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.sessions_ended.notify_waiters();
        }
    }
}

/// How a drain ended, for the last log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Exchanges that were in flight or started after the signal and ended by themselves.
    pub finished: u64,
    /// Exchanges cut when `PROXY_SHUTDOWN_GRACE` ran out.
    pub cut: u64,
}

impl DrainState {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn start_cutting(&self) {
        self.cutting.store(true, Ordering::Relaxed);
    }

    /// Records an exchange's end; returns whether it was cut by the shutdown.
    pub(crate) fn exchange_ended(&self) -> bool {
        if !self.is_draining() {
            return false;
        }
        if self.cutting.load(Ordering::Relaxed) {
            self.cut.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.finished.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Counts a session open until the guard is dropped.
    pub(crate) fn session_started(self: &Arc<Self>) -> CountedSession {
        self.sessions.fetch_add(1, Ordering::AcqRel);
        CountedSession(self.clone())
    }

    /// Completes once no session is open.
    pub(crate) async fn sessions_closed(&self) {
        loop {
            let ended = self.sessions_ended.notified();
            if self.sessions.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }

    pub(crate) fn report(&self) -> DrainReport {
        DrainReport {
            finished: self.finished.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
        }
    }
}
