//! A WebSocket upgrade (the Realtime API): the browser's origin checked, the upgrade sent
//! upstream on a connection of its own, and a switched session left for the client
//! connection's task.

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::ProxyError;
use crate::exchange::body::ProxyBody;
use crate::exchange::record::Exchange;
use crate::exchange::session::{Handoff, Pipe};
use crate::policy::websocket;
use crate::upstream::websocket::WebSocketAnswer;
use crate::upstreams::Tried;
use crate::usage::Meter;

use super::context::Context;
use super::upstream_call::pass_head;

impl Context {
    /// A WebSocket upgrade: checked, its client admitted, and sent upstream. A session can
    /// cost tokens on any route: Realtime reports them as it goes.
    pub(super) async fn upgrade(
        &self,
        request: Request<Incoming>,
        key: Option<Vec<u8>>,
        exchange: &mut Exchange,
        origin_allowed: bool,
    ) -> Result<Opened, ProxyError> {
        exchange.set_metered(self.config.usage.enabled);
        websocket::check_upgrade(request.version(), request.headers())
            .map_err(ProxyError::BadRequest)?;
        self.check_origin(request.headers(), origin_allowed)?;
        self.admit(request.headers(), key.as_deref(), exchange)
            .await?;
        self.open_session(request, exchange).await
    }

    /// The upstream switched to a WebSocket: the client gets the `101` with the upstream's
    /// `Sec-WebSocket-*` headers, and the session is left for the client's connection task to
    /// run once hyper has written it.
    pub(super) fn switched(
        &self,
        session: SwitchedSession,
        mut exchange: Exchange,
    ) -> Response<ProxyBody> {
        let SwitchedSession {
            head,
            stream,
            connection,
            client,
            handoff,
        } = session;
        let (mut parts, ()) = head.into_parts();
        pass_head(&mut parts, &mut exchange);
        websocket::mark_upgrade(&mut parts.headers);
        let pipe = Pipe {
            client,
            upstream: stream,
            upstream_connection: connection,
            exchange,
            counted: self.drain.session_started(),
            idle: self.config.timeouts.idle,
        };
        handoff.put(Box::pin(pipe.run()));
        Response::from_parts(parts, ProxyBody::default())
    }

    /// A browser's WebSocket is not held back by CORS, so the server checks its `Origin`
    /// (RFC 6455, section 10.2): an upgrade that names one is switched only for an origin in
    /// `PROXY_CORS_ORIGINS`. Without that setting no browser origin is allowed.
    fn check_origin(
        &self,
        headers: &http::HeaderMap,
        origin_allowed: bool,
    ) -> Result<(), ProxyError> {
        if headers.contains_key(header::ORIGIN) && !origin_allowed {
            return Err(ProxyError::OriginNotAllowed);
        }
        Ok(())
    }

    /// Sends a WebSocket upgrade upstream, on a connection of its own, and waits for its
    /// answer. Only an HTTP/1.1 client connection can be upgraded: it alone has a [`Handoff`].
    async fn open_session(
        &self,
        mut request: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Opened, ProxyError> {
        let handoff =
            request
                .extensions_mut()
                .remove::<Handoff>()
                .ok_or(ProxyError::BadRequest(
                    "A WebSocket needs an HTTP/1.1 connection (Upgrade: websocket)",
                ))?;
        let client = hyper::upgrade::on(&mut request);
        let (mut parts, _) = request.into_parts();
        let meter = exchange
            .is_metered()
            .then(|| Box::new(Meter::websocket(url_model(&parts.uri))));
        self.upstream_head(&mut parts, exchange);
        websocket::mark_upgrade(&mut parts.headers);
        if meter.is_some() {
            // A compressed message cannot be metered: no compression is offered upstream, so
            // none is agreed (RFC 7692, section 5), and the session's frames stay readable.
            parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        }
        let mut tried = Tried::default();
        let opening = self.upstreams.open_websocket(parts, &mut tried);
        let answer = self.wait_for_head(opening, exchange).await;
        exchange.tried(tried);
        match answer? {
            WebSocketAnswer::Refused(response) => {
                self.check_key_accepted(response.status(), exchange)?;
                Ok(Opened::Refused(response))
            }
            WebSocketAnswer::Switched {
                head,
                stream,
                connection,
            } => {
                // The client's messages are JSON, for the estimate of a session that reports
                // nothing.
                exchange.request_is_json(true);
                if let Some(meter) = meter {
                    exchange.metering(meter);
                }
                Ok(Opened::Switched(SwitchedSession {
                    head,
                    stream,
                    connection,
                    client,
                    handoff,
                }))
            }
        }
    }
}

/// The model a session's URL names (`?model=gpt-realtime`), for the usage metrics: Realtime's
/// events do not name it.
fn url_model(uri: &http::Uri) -> Option<&[u8]> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("model="))
        .filter(|model| !model.is_empty())
        .map(str::as_bytes)
}

/// What a WebSocket upgrade came to.
pub(super) enum Opened {
    Switched(SwitchedSession),
    /// The upstream answered something else, passed on like any answer.
    Refused(Response<Incoming>),
}

pub(super) struct SwitchedSession {
    head: Response<()>,
    stream: hyper::upgrade::Upgraded,
    connection: crate::metrics::OpenConnection,
    client: hyper::upgrade::OnUpgrade,
    handoff: Handoff,
}
