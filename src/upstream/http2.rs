//! HTTP/2 connections, as many as the streams in flight need.
//!
//! hyper-util's legacy client puts every request on one HTTP/2 connection, and requests past
//! the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` wait in a queue: a few hundred minute-long
//! completions stall behind it. Here each connection takes at most the peer's limit or
//! `PROXY_UPSTREAM_MAX_STREAMS`, whichever is lower, and another one opens beyond that. hyper
//! does not count streams in use, so the pool counts them itself (as Pingora does with
//! `more_streams_allowed`); the task driving a connection publishes the peer's current limit
//! (`Connection::current_max_send_streams`, hyper 1.9 and later).
//!
//! A connection that received GOAWAY, or failed, takes no new streams and closes once its
//! streams end. Idle connections are pinged, so that a silently dropped one is noticed, and
//! closed after [`UPSTREAM_IDLE_TIMEOUT`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::coalesce::Coalesce;
use super::connect::{Connected, Connector, Offer};
use super::failure::{describe, UpstreamError};
use super::outgoing::SendBody;
use super::retry::{self, Unanswered};
use crate::bounds::UPSTREAM_IDLE_TIMEOUT;
use crate::metrics::Metrics;
use crate::outcome::{FailureKind, RetryReason};

/// A PING this often on every connection, idle or not, so that one the upstream or a
/// middlebox dropped without a word is found and closed before a request is sent on it.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows large enough that a 25 MiB upload or a long answer never waits for
/// WINDOW_UPDATE on a fast link; hyper's defaults are 2 MiB and 5 MiB.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

pub(crate) struct Http2Pool<B> {
    connector: Arc<Connector>,
    builder: http2::Builder<TokioExecutor>,
    /// `PROXY_UPSTREAM_MAX_STREAMS`.
    max_streams: usize,
    /// Connections that take new streams (or are being opened), oldest first, so that streams
    /// pack onto few connections.
    conns: Mutex<Vec<Arc<Conn<B>>>>,
    metrics: Arc<Metrics>,
}

/// One connection, as the pool sees it.
struct Conn<B> {
    shared: Arc<Shared>,
    state: watch::Receiver<State<B>>,
}

enum State<B> {
    Connecting,
    Ready(SendRequest<B>),
    Failed(FailureKind, String),
}

/// What the pool, the streams and the connection's driver share.
struct Shared {
    /// Streams checked out: incremented under the pool's lock, decremented when a stream ends.
    in_use: AtomicUsize,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, as its driver last saw it.
    peer_limit: AtomicUsize,
    /// GOAWAY was received, the connection failed, or it closed: no new streams.
    closing: AtomicBool,
    /// When the last stream ended.
    idle_since: Mutex<Instant>,
}

/// One stream's claim on its connection; the claim ends when this is dropped.
pub(crate) struct Stream(Arc<Shared>);

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.in_use.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = Instant::now();
            }
        }
    }
}

impl<B> Conn<B> {
    fn new(state: watch::Receiver<State<B>>) -> Conn<B> {
        Conn {
            shared: Arc::new(Shared {
                in_use: AtomicUsize::new(0),
                peer_limit: AtomicUsize::new(usize::MAX),
                closing: AtomicBool::new(false),
                idle_since: Mutex::new(Instant::now()),
            }),
            state,
        }
    }

    /// Whether the connection may take no more streams, ever.
    fn is_done(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
            || match &*self.state.borrow() {
                State::Connecting => false,
                State::Ready(sender) => sender.is_closed(),
                State::Failed(..) => true,
            }
    }

    fn idle_expired(&self, now: Instant) -> bool {
        self.shared.in_use.load(Ordering::Acquire) == 0
            && self
                .shared
                .idle_since
                .lock()
                .is_ok_and(|since| now.duration_since(*since) >= UPSTREAM_IDLE_TIMEOUT)
    }
}

impl<B> Http2Pool<B>
where
    B: SendBody,
{
    /// A pool whose idle connections are closed by a task that ends with the pool. Must be
    /// called within the runtime.
    pub(crate) fn spawn(
        connector: Arc<Connector>,
        max_streams: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Http2Pool<B>> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_max_send_streams(max_streams)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true);
        let pool = Arc::new(Http2Pool {
            connector,
            builder,
            max_streams,
            conns: Mutex::new(Vec::new()),
            metrics,
        });
        super::sweep::every_second(&pool, Http2Pool::close_idle);
        pool
    }

    /// Drops connections that are done, or idle too long; dropping the last handle to a
    /// connection closes it once its streams end.
    fn close_idle(&self) {
        let now = Instant::now();
        if let Ok(mut conns) = self.conns.lock() {
            let before = conns.len();
            conns.retain(|conn| !conn.is_done() && !conn.idle_expired(now));
            if conns.len() < before {
                crate::trim::note_activity();
            }
        }
    }

    /// Claims a stream on the oldest connection with room, or on a new one; on a new one
    /// always when `fresh`.
    fn checkout(&self, fresh: bool) -> (Arc<Conn<B>>, Stream) {
        let mut conns = match self.conns.lock() {
            Ok(conns) => conns,
            Err(poisoned) => poisoned.into_inner(),
        };
        conns.retain(|conn| !conn.is_done());
        for conn in conns.iter().filter(|_| !fresh) {
            let limit = conn
                .shared
                .peer_limit
                .load(Ordering::Acquire)
                .min(self.max_streams);
            if conn.shared.in_use.load(Ordering::Acquire) < limit {
                conn.shared.in_use.fetch_add(1, Ordering::AcqRel);
                return (conn.clone(), Stream(conn.shared.clone()));
            }
        }
        let (tx, rx) = watch::channel(State::Connecting);
        let conn = Arc::new(Conn::new(rx));
        conn.shared.in_use.fetch_add(1, Ordering::AcqRel);
        conns.push(conn.clone());
        drop(conns);
        self.open(conn.shared.clone(), tx);
        let stream = Stream(conn.shared.clone());
        (conn, stream)
    }

    /// Opens a connection in a task of its own, so that a caller that gives up does not
    /// strand the others waiting for it.
    fn open(&self, shared: Arc<Shared>, state: watch::Sender<State<B>>) {
        let connector = self.connector.clone();
        let builder = self.builder.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let result = match connector.connect(Offer::Http2).await {
                Ok(connected) if connected.http2 => {
                    start(&builder, connected, shared.clone(), &metrics).await
                }
                Ok(_) => Err(UpstreamError::new(
                    FailureKind::Connect,
                    "the upstream did not choose HTTP/2 in ALPN",
                )),
                Err(error) => Err(error),
            };
            let _ = state.send(match result {
                Ok(sender) => State::Ready(sender),
                Err(error) => {
                    shared.closing.store(true, Ordering::Release);
                    State::Failed(error.kind, describe(&*error.error))
                }
            });
        });
    }

    /// Takes a connection that was opened elsewhere (the protocol probe) into the pool.
    pub(crate) async fn adopt(&self, connected: Connected) -> Result<(), UpstreamError> {
        let (tx, rx) = watch::channel(State::Connecting);
        let conn = Conn::new(rx);
        let sender = start(&self.builder, connected, conn.shared.clone(), &self.metrics).await?;
        let _ = tx.send(State::Ready(sender));
        if let Ok(mut conns) = self.conns.lock() {
            conns.push(Arc::new(conn));
        }
        Ok(())
    }

    /// Sends `request` on a stream of a connection with room, and waits for the response head.
    /// The stream's claim comes back with the response and ends when it is dropped. A retry
    /// goes on a `fresh` connection: the others may be going away as the one that refused it
    /// was, and only a new one is sure to take a stream.
    pub(crate) async fn send(
        &self,
        request: Request<B>,
        fresh: bool,
    ) -> Result<(Response<Incoming>, Stream), Unanswered<Request<B>>> {
        let (conn, stream) = self.checkout(fresh);
        let mut state = conn.state.clone();
        drop(conn);
        let ready = state
            .wait_for(|s| !matches!(s, State::Connecting))
            .await
            .map(|s| match &*s {
                State::Ready(sender) => Ok(sender.clone()),
                State::Failed(kind, message) => Err(UpstreamError::new(*kind, message.clone())),
                State::Connecting => Err(UpstreamError::new(FailureKind::Connect, "connecting")),
            });
        let mut sender = match ready {
            Ok(Ok(sender)) => sender,
            Ok(Err(error)) => {
                return Err(Unanswered::Unsent {
                    request,
                    reason: RetryReason::Connect,
                    error,
                })
            }
            Err(_) => {
                return Err(Unanswered::Unsent {
                    request,
                    reason: RetryReason::Connect,
                    error: UpstreamError::new(FailureKind::Connect, "the connection attempt ended"),
                })
            }
        };
        drop(state);
        let responding = sender.try_send_request(request);
        // hyper answers a request it never took only by dropping it, and a request that was
        // queued while the connection's dispatch ended is dropped only with the queue, when the
        // last handle to the connection goes: a handle held here while waiting would wait on
        // itself for ever. The pool lets go of its own once the connection is done.
        drop(sender);
        match responding.await {
            Ok(response) => Ok((response, stream)),
            Err(mut error) => {
                if let Some(request) = error.take_message() {
                    // The connection closed before the request was handed to it.
                    stream.0.closing.store(true, Ordering::Release);
                    return Err(Unanswered::Unsent {
                        request,
                        reason: RetryReason::StaleConnection,
                        error: UpstreamError::new(FailureKind::Reset, error.into_error()),
                    });
                }
                let error = error.into_error();
                let unprocessed = retry::unprocessed(&error);
                if unprocessed == Some(RetryReason::GoAway) || error.is_closed() {
                    stream.0.closing.store(true, Ordering::Release);
                }
                // A stream the upstream did not provably refuse may have been processed.
                let kind = match unprocessed {
                    Some(_) => FailureKind::Reset,
                    None => FailureKind::AfterSend,
                };
                let error = UpstreamError::new(kind, error);
                Err(match unprocessed {
                    Some(reason) => Unanswered::Unprocessed { reason, error },
                    None => Unanswered::Failed(error),
                })
            }
        }
    }
}

/// The HTTP/2 handshake, and the task that drives the connection: it publishes the peer's
/// stream limit after every poll, and marks the connection closing when it ends.
async fn start<B>(
    builder: &http2::Builder<TokioExecutor>,
    connected: Connected,
    shared: Arc<Shared>,
    metrics: &Metrics,
) -> Result<SendRequest<B>, UpstreamError>
where
    B: SendBody,
{
    let (sender, mut connection) = builder
        .handshake(TokioIo::new(Coalesce::new(connected.io.into_inner())))
        .await
        .map_err(|e| UpstreamError::new(FailureKind::Connect, e))?;
    let open = metrics.upstream.connection_opened(true);
    tokio::spawn(async move {
        let _open = open;
        let result = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut connection).poll(cx);
            shared
                .peer_limit
                .store(connection.current_max_send_streams(), Ordering::Release);
            polled
        })
        .await;
        shared.closing.store(true, Ordering::Release);
        if let Err(error) = result {
            tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
