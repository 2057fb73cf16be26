//! A listener's accept loop: each connection under a slot of the listener's cap, on a task of
//! its own, answered by the listener's handler (the proxy, or the admin listener's).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::exchange::body::ProxyBody;
use crate::inbound::closing::Closing;
use crate::inbound::connection::{serve_plain, serve_tls, Builders, CountedConnection, Serving};
use crate::metrics::Metrics;
use crate::proxy::{Admin, Proxy};

/// What answers the requests of one listener's connections: the [`Proxy`] on the proxy's
/// port, [`Admin`] on the admin listener.
pub(super) trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

impl Handler for Proxy {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        Proxy::handle(self, request)
    }
}

impl Handler for Admin {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        std::future::ready(Admin::handle(self, &request))
    }
}

pub(super) struct Acceptor<H> {
    pub(super) listener: TcpListener,
    handler: H,
    metrics: Arc<Metrics>,
    builders: Arc<Builders>,
    pub(super) closing: Closing,
    /// One permit per open connection: at the limit, new clients wait in the listen backlog
    /// and the connections already open are untouched.
    slots: Arc<Semaphore>,
    pub(super) connections: JoinSet<()>,
    /// `PROXY_HEADER_READ_TIMEOUT`, for the bytes before hyper takes over.
    header_read: Duration,
    /// Set with `PROXY_TLS_CERT` and `PROXY_TLS_KEY`: clients speak HTTPS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl<H: Handler> Acceptor<H> {
    /// A listener whose connections `handler` answers, at most `max_connections` at once.
    pub(super) fn new(
        listener: TcpListener,
        handler: H,
        max_connections: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
        metrics: &Arc<Metrics>,
        builders: &Arc<Builders>,
        header_read: Duration,
    ) -> Self {
        Acceptor {
            listener,
            handler,
            metrics: metrics.clone(),
            builders: builders.clone(),
            closing: Closing::default(),
            slots: Arc::new(Semaphore::new(max_connections)),
            connections: JoinSet::new(),
            header_read,
            tls,
        }
    }

    /// Accepts connections, each under a slot, until `stop` completes.
    pub(super) async fn accept_until(&mut self, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        loop {
            let slot = tokio::select! {
                biased;
                _ = &mut stop => return,
                slot = self.slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => self.spawn_connection(stream, slot),
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.reap_ended();
        }
    }

    /// Serves one accepted connection on a task of its own, holding `slot` to its end.
    fn spawn_connection(&mut self, stream: TcpStream, slot: OwnedSemaphorePermit) {
        // Each SSE event must leave at once, not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        self.metrics.connections.open.inc();
        let serving = Serving {
            builders: self.builders.clone(),
            watcher: self.closing.watcher(),
            metrics: self.metrics.clone(),
            header_read: self.header_read,
        };
        let handler = self.handler.clone();
        let tls = self.tls.clone();
        self.connections.spawn(async move {
            let _open = CountedConnection(serving.metrics.clone());
            let _slot = slot;
            // Boxed per request: hyper keeps a slot the size of the service's future for the
            // connection's life, idle or not, and the exchange's future is large.
            let handle = move |request| Box::pin(async move { handler.handle(request).await });
            match tls {
                None => serve_plain(stream, serving, handle).await,
                Some(tls) => serve_tls(stream, &tls, serving, handle).await,
            }
        });
    }

    /// Collects the connection tasks that have ended; a panicked one is logged.
    fn reap_ended(&mut self) {
        while let Some(ended) = self.connections.try_join_next() {
            if let Err(error) = ended {
                if error.is_panic() {
                    tracing::error!("a connection task panicked; the proxy goes on serving");
                }
            }
        }
    }
}
