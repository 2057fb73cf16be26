//! A WebSocket upgrade to the upstream, on a connection of its own.
//!
//! The pooled connections cannot carry one: after a `101` the connection is no longer HTTP and
//! never goes back to a pool. So the upgrade opens a new connection with the same connector
//! (TCP or a `CONNECT` tunnel, then TLS), offering only `http/1.1` in ALPN, since a WebSocket
//! is upgraded from HTTP/1.1 (RFC 6455); WebSockets over HTTP/2 (RFC 8441) are not what the
//! SDKs or OpenAI speak. Nothing on it is retried: the upstream may have acted on the upgrade.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;

use super::connect::Offer;
use super::failure::UpstreamError;
use super::outgoing::SendBody;
use super::Upstream;
use crate::metrics::OpenConnection;
use crate::outcome::FailureKind;

/// The upstream's answer to an upgrade.
pub(crate) enum WebSocketAnswer {
    /// `101 Switching Protocols`: its head for the client, and the upgraded stream.
    Switched {
        head: Response<()>,
        stream: Upgraded,
        /// Counts the connection in `/metrics` until the session ends.
        connection: OpenConnection,
    },
    /// Anything else (401, 403, 429 ...), to pass back like any answer; its connection is
    /// driven by a task of its own until the body has been read.
    Refused(Response<Incoming>),
}

impl<B: SendBody> Upstream<B> {
    /// Sends the upgrade request (its URI origin-form, its headers already rewritten) and
    /// waits for the answer.
    pub(crate) async fn open_websocket(
        &self,
        mut request: Request<Empty<Bytes>>,
    ) -> Result<WebSocketAnswer, UpstreamError> {
        let connected = self.connector.connect(Offer::Http1).await?;
        let connection = self.metrics.upstream.connection_opened(false);
        let (mut sender, driver) = hyper::client::conn::http1::Builder::new()
            .handshake(connected.io)
            .await
            .map_err(|e| UpstreamError::new(FailureKind::Connect, e))?;
        tokio::spawn(driver.with_upgrades());
        // hyper's HTTP/1.1 connection sends the URI as given: make it origin-form.
        let target = request.uri().path_and_query().cloned();
        if let Some(target) = target {
            *request.uri_mut() = Uri::from(target);
        }
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        let mut response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::classify(FailureKind::Reset, e))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(WebSocketAnswer::Refused(response));
        }
        let stream = hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| UpstreamError::new(FailureKind::Reset, e))?;
        Ok(WebSocketAnswer::Switched {
            head: response.map(|_| ()),
            stream,
            connection,
        })
    }
}
