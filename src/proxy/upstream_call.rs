//! The steps of an upstream call that forwarding and a WebSocket upgrade share: the head made
//! fit to go up, the wait for the answer's head, the answer's head passed back, and every
//! failure made an answer in OpenAI's shape.

use std::future::Future;

use http::header;
use http::{HeaderValue, Response, StatusCode, Version};

use crate::error::ProxyError;
use crate::exchange::body::ProxyBody;
use crate::exchange::record::Exchange;
use crate::outcome::UpstreamErrorKind;
use crate::policy::headers::{self, CLIENT_REQUEST_ID};
use crate::upstream::{self, UpstreamError};

use super::context::Context;

impl Context {
    /// Makes a client's request head fit to go upstream: the headers rewritten, and no key of
    /// the client's left. The upstream chosen puts in its URL and its key.
    pub(super) fn upstream_head(&self, parts: &mut http::request::Parts, exchange: &mut Exchange) {
        // hyper-util picks HTTP/1.1 or HTTP/2 per upstream connection; a request that insists
        // on the client's version would be refused by a connection of the other kind.
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        headers::rewrite_request(&mut parts.headers, &self.identity, exchange.id());
        // Traced, the upstream's spans are the upstream call's children; the client's
        // `tracestate` goes on as it came.
        if let Some(traceparent) = exchange.calling_upstream() {
            parts
                .headers
                .insert(crate::traces::TRACEPARENT, traceparent);
        }
        if self.config.usage.enabled {
            // The meter reads the answer as it passes, which it cannot do compressed.
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
    }

    /// Waits for the upstream's response head within `PROXY_FIRST_BYTE_TIMEOUT` (and
    /// `PROXY_TOTAL_TIMEOUT`, if it is sooner).
    pub(super) async fn wait_for_head<T>(
        &self,
        sending: impl Future<Output = Result<T, UpstreamError>>,
        exchange: &Exchange,
    ) -> Result<T, ProxyError> {
        let config = &self.config;
        let started = exchange.started();
        let first_byte_deadline = started + config.timeouts.first_byte;
        let total_deadline = self.total_deadline(started);
        let wait_until =
            total_deadline.map_or(first_byte_deadline, |total| total.min(first_byte_deadline));
        match tokio::time::timeout_at(wait_until, sending).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(self.upstream_error(error, exchange)),
            Err(_) => {
                exchange.upstream_failed(UpstreamErrorKind::Timeout);
                Err(
                    if total_deadline.is_some_and(|total| total <= first_byte_deadline) {
                        ProxyError::TotalTimeout(config.timeouts.total.unwrap_or_default())
                    } else {
                        ProxyError::FirstByteTimeout(config.timeouts.first_byte)
                    },
                )
            }
        }
    }

    /// OpenAI's 401 means our key was refused, and its message echoes part of the key: the
    /// body is dropped unread and the client learns only that the proxy is broken. The
    /// exchange's record still says that the upstream answered 401, and when.
    pub(super) fn check_key_accepted(
        &self,
        status: StatusCode,
        exchange: &mut Exchange,
    ) -> Result<(), ProxyError> {
        if status != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        exchange.upstream_head(status);
        tracing::error!(
            request_id = exchange.log_id(),
            "the upstream rejected the proxy's API key (401); check OPENAI_API_KEY or OPENAI_API_KEY_FILE"
        );
        Err(ProxyError::UpstreamRejectedKey)
    }

    /// The request body's own failure, if it had one: too large, stalled, or broken off.
    pub(super) fn body_fault(&self, exchange: &Exchange) -> Option<ProxyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let config = &self.config;
        let stats = exchange.request_stats();
        if stats.too_large.load(Relaxed) {
            Some(ProxyError::BodyTooLarge {
                limit: config.max_body_bytes,
            })
        } else if stats.timed_out.load(Relaxed) {
            Some(ProxyError::RequestBodyTimeout(config.timeouts.idle))
        } else if stats.client_failed.load(Relaxed) {
            Some(ProxyError::ClientBodyFailed)
        } else {
            None
        }
    }

    /// Whose fault a failed upstream call was: the request body's (too large, broken, stalled)
    /// or the upstream's.
    pub(super) fn upstream_error(&self, error: UpstreamError, exchange: &Exchange) -> ProxyError {
        if let Some(fault) = self.body_fault(exchange) {
            return fault;
        }
        let config = &self.config;
        let description = upstream::describe(&*error.error);
        tracing::warn!(request_id = exchange.log_id(), error = %description, "upstream request failed");
        exchange.upstream_failed(error.kind.counted_as());
        ProxyError::from_upstream(error.kind, description, config.timeouts.connect)
    }
}

/// The upstream's response head, recorded in the exchange and made fit for the client.
pub(super) fn pass_head(parts: &mut http::response::Parts, exchange: &mut Exchange) {
    exchange.upstream_answered(parts.status, headers::upstream_request_id(&parts.headers));
    headers::rewrite_response(&mut parts.headers, exchange.id());
    parts.version = Version::HTTP_11;
}

/// An error answer for the client, recorded as the exchange's end.
pub(super) fn failed(error: ProxyError, mut exchange: Exchange) -> Response<ProxyBody> {
    let facts = error.facts();
    exchange.answered_error(facts.status, facts.outcome, facts.code);
    let mut response = facts.into_response();
    response
        .headers_mut()
        .insert(CLIENT_REQUEST_ID.clone(), exchange.id().clone());
    response
}
