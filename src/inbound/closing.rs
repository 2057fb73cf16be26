//! Graceful close of client connections: when the drain begins, every open connection is told
//! to finish the exchanges it is serving and then close, and the drain learns when all have.
//!
//! hyper-util's `server::graceful` does the same for the connection types it knows, but not for
//! hyper's own upgradeable HTTP/1 connection, which the proxy serves directly: hyper-util's
//! upgradeable `auto` connection reads the first bytes through a 24-byte buffer to guess the
//! protocol, and that split leaves every idle client connection holding a read buffer in hyper
//! and another in the framing guard. This is the same design as hyper-util's: a `watch`
//! channel whose receivers are the open connections.

use std::future::Future;
use std::pin::Pin;

use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use tokio::sync::watch;

use crate::outcome::BoxError;

/// A hyper connection that can finish its exchanges in flight and then close.
pub(crate) trait Graceful: Future {
    /// Starts the graceful close; the connection must still be polled to its end.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, B, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, B, S, E> Graceful for http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Held by the accept loop: hands each connection a [`Watcher`], and closes them all.
#[derive(Debug)]
pub(crate) struct Closing(watch::Sender<bool>);

impl Default for Closing {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Closing {
    /// What a new connection is served under.
    pub(crate) fn watcher(&self) -> Watcher {
        Watcher(self.0.subscribe())
    }

    /// Tells every watched connection to close gracefully, and completes once all have ended.
    pub(crate) async fn close_all(self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

/// One connection's end of [`Closing`].
#[derive(Debug)]
pub(crate) struct Watcher(watch::Receiver<bool>);

impl Watcher {
    /// Serves `connection` to its end, closing it gracefully once [`Closing::close_all`] is
    /// called, or once `done` completes (the connection's own reason to close, such as an
    /// idle HTTP/2 connection). Once the close has begun, `abandon` completing drops the
    /// connection instead of waiting on (a client that never acknowledges the close). The
    /// connection counts as open until this returns.
    pub(crate) async fn serve<C: Graceful>(
        mut self,
        mut connection: Pin<&mut C>,
        done: impl Future<Output = ()>,
        abandon: impl Future<Output = ()>,
    ) -> Option<C::Output> {
        tokio::select! {
            ended = connection.as_mut() => return Some(ended),
            // An error means the accept loop is gone: close as well.
            _ = self.0.wait_for(|closing| *closing) => {}
            () = done => {}
        }
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            ended = connection => Some(ended),
            () = abandon => None,
        }
    }
}
