//! A WebSocket session after the `101`: two upgraded streams joined as a byte pipe. Bytes go
//! on as they arrive, through one fixed buffer each way, so a session's memory does not grow
//! with what it carries. With the meter on, the upstream's bytes are followed as frames once
//! they have been written to the client, for the usage its messages report.
//!
//! Either side closing or failing ends the session and closes the other at once: that is what
//! stops the upstream, and its billing, when a client walks away from an audio session. A
//! session with no byte in either direction for `PROXY_IDLE_TIMEOUT` is closed too.
//!
//! The session runs in the task of the client connection it was upgraded from, handed over
//! through [`Handoff`], so it keeps that connection's slot under `PROXY_MAX_CONNECTIONS` and is
//! cut with it when the drain's grace runs out.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::record::Exchange;
use crate::drain::CountedSession;
use crate::metrics::OpenConnection;
use crate::outcome::Outcome;

/// Bytes read and written at a time, each way.
const BUFFER_BYTES: usize = 16 * 1024;
/// How long closing the two streams politely may take before they are simply dropped.
const CLOSE_WAIT: Duration = Duration::from_millis(100);

/// A session to run once the connection it came from has been upgraded.
pub(crate) type Session = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the service leaves a session for its connection's task to run. The connection task
/// puts one in an upgrade request's extensions; the service fills it when it answers `101`.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<Option<Session>>>);

impl Handoff {
    pub(crate) fn put(&self, session: Session) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(session);
    }

    pub(crate) fn take(&self) -> Option<Session> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// What a session holds while it runs.
pub(crate) struct Pipe {
    /// The client's side: its upgrade completes once hyper has written the `101`.
    pub client: OnUpgrade,
    pub upstream: Upgraded,
    pub upstream_connection: OpenConnection,
    /// The record of the upgrade request: the session's access log line and metrics.
    pub exchange: Exchange,
    /// Counts the session for the drain, which waits for it as for a connection.
    pub counted: CountedSession,
    pub idle: Duration,
}

impl Pipe {
    /// Runs the session to its end.
    pub(crate) async fn run(self) {
        let Pipe {
            client,
            upstream,
            upstream_connection,
            mut exchange,
            counted,
            idle,
        } = self;
        let _counted = counted;
        let _gauge = exchange.metrics().upstream.realtime_session_opened();
        let _open = upstream_connection;
        let client = match client.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "the client's side of the upgrade failed");
                exchange.session_over(Outcome::ClientCancelled, None, 0);
                return;
            }
        };
        let started = Instant::now();
        let last_active = AtomicU64::new(0);
        // Upstream bytes count where a request body's do; the answer's are set at the end.
        let request = exchange.request_stats().clone();
        let down_bytes = AtomicU64::new(0);
        let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
        let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
        let touch = || last_active.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut meter = exchange.take_meter();
        let metered = |bytes: &[u8]| {
            if let Some(meter) = meter.as_deref_mut() {
                meter.feed(bytes);
            }
        };
        let outcome = tokio::select! {
            ended = copy(&mut client_read, &mut upstream_write, &request.bytes, touch, |_| {}) => match ended {
                Stopped::ReadClosed | Stopped::ReadFailed => Outcome::ClientClosed,
                Stopped::WriteFailed => Outcome::UpstreamClosed,
            },
            ended = copy(&mut upstream_read, &mut client_write, &down_bytes, touch, metered) => match ended {
                Stopped::ReadClosed | Stopped::ReadFailed => Outcome::UpstreamClosed,
                Stopped::WriteFailed => Outcome::ClientClosed,
            },
            () = idle_for(idle, started, &last_active) => Outcome::IdleTimeout,
        };
        exchange.session_over(outcome, meter, down_bytes.load(Ordering::Relaxed));
        // Close both at once; a side that does not take its FIN (or close_notify) quickly is
        // dropped, which closes it too.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = tokio::join!(client_write.shutdown(), upstream_write.shutdown());
        })
        .await;
    }
}

/// How one direction of the pipe ended.
enum Stopped {
    ReadClosed,
    ReadFailed,
    WriteFailed,
}

/// Copies one direction; `written` sees each piece once the other side has it.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    bytes: &AtomicU64,
    touch: impl Fn(),
    mut written: impl FnMut(&[u8]),
) -> Stopped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) => return Stopped::ReadClosed,
            Ok(n) => n,
            Err(_) => return Stopped::ReadFailed,
        };
        touch();
        if write(to, &buffer[..n]).await.is_err() {
            return Stopped::WriteFailed;
        }
        written(&buffer[..n]);
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn write<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// Completes once neither side has sent a byte for `idle`.
async fn idle_for(idle: Duration, started: Instant, last_active: &AtomicU64) {
    loop {
        let last = started + Duration::from_millis(last_active.load(Ordering::Relaxed));
        let deadline = last + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}
