//! An exchange sent upstream: its head rewritten, its body forwarded, the upstream's answer
//! passed back frame by frame, and every failure made an answer in OpenAI's shape.

use std::sync::Arc;

use std::future::Future;

use http::header;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::exchange::body::{FrameClock, ProxyBody, RequestBody, ResponseBody};
use crate::exchange::record::{new_request_id, Exchange, Unread};
use crate::metrics::{self, UpstreamErrorKind};
use crate::policy::headers::{self, CLIENT_REQUEST_ID};
use crate::policy::routes::{carries_usage, upstream_target};
use crate::policy::websocket;
use crate::upstream::{self, Lease, UpstreamError};
use crate::usage::Meter;

use super::session::Opened;
use super::Proxy;

impl Proxy {
    pub(super) async fn forward(
        &self,
        mut request: Request<Incoming>,
        route: Arc<metrics::RouteMetrics>,
        origin_allowed: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        let id = headers::client_request_id(request.headers()).unwrap_or_else(new_request_id);
        let metered = self.0.config.usage.enabled && carries_usage(request.method(), &route.name);
        let mut exchange = Exchange::start(
            id.clone(),
            request.method().clone(),
            route,
            started,
            self.0.drain.clone(),
            self.0.metrics.clone(),
        );
        exchange.set_metered(metered);

        // A key in a subprotocol never goes upstream, upgrade or not.
        let key = websocket::take_key_subprotocol(request.headers_mut());
        if request.method() == Method::GET && websocket::is_upgrade(request.headers()) {
            // A session can cost tokens on any route: Realtime reports them as it goes.
            exchange.set_metered(self.0.config.usage.enabled);
            // A session is rare next to requests: its larger future is boxed.
            let checked = websocket::check_upgrade(request.version(), request.headers())
                .map_err(ProxyError::BadRequest)
                .and_then(|()| self.check_origin(request.headers(), origin_allowed));
            let opened = match checked {
                Ok(()) => match self
                    .admit(request.headers(), key.as_deref(), &mut exchange)
                    .await
                {
                    Ok(()) => Box::pin(self.open_session(request, &mut exchange)).await,
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            return match opened {
                Ok(Opened::Switched(session)) => self.switched(session, exchange, &id),
                Ok(Opened::Refused(response)) => self.respond(response, None, exchange, &id),
                Err(error) => failed(error, exchange, id),
            };
        }

        let answer = match self.admit(request.headers(), None, &mut exchange).await {
            Ok(()) => self.call_upstream(request, &mut exchange).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok((response, lease)) => self.respond(response, Some(lease), exchange, &id),
            Err(error) => failed(error, exchange, id),
        }
    }

    /// The upstream's answer, passed on: its head rewritten, its body forwarded frame by frame
    /// with the exchange's record and the connection it came on.
    pub(super) fn respond(
        &self,
        upstream_response: Response<Incoming>,
        lease: Option<Lease<RequestBody>>,
        mut exchange: Exchange,
        id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let started = exchange.started();
        let (mut parts, body) = upstream_response.into_parts();
        pass_head(&mut parts, &mut exchange, id);
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let is_sse = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if exchange.is_metered() && parts.status.is_success() {
            match usage_meter(&parts.headers, is_sse) {
                Ok(meter) => exchange.metering(meter),
                Err(unread) => exchange.unreadable(unread),
            }
        }
        let clock = FrameClock::new(self.0.config.timeouts.idle, self.total_deadline(started));
        let body = ResponseBody::new(body, lease, clock, exchange, is_sse);
        Response::from_parts(parts, ProxyBody::Forwarded(Box::new(body)))
    }

    /// Sends the request upstream and waits for the response head.
    pub(super) async fn call_upstream(
        &self,
        request: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<(Response<Incoming>, Lease<RequestBody>), ProxyError> {
        let config = &self.0.config;
        let (mut parts, body) = request.into_parts();

        if declared_length(&parts.headers).is_some_and(|len| len > config.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge {
                limit: config.max_body_bytes,
            });
        }

        exchange.request_is_json(is_json(parts.headers.get(header::CONTENT_TYPE)));
        self.upstream_head(&mut parts, exchange)?;
        let started = exchange.started();
        let clock = FrameClock::new(config.timeouts.idle, self.total_deadline(started));
        let mut body = RequestBody::new(
            body,
            clock,
            config.max_body_bytes,
            exchange.request_stats().clone(),
        );
        if body.first_frame().await.is_err() {
            return Err(self
                .body_fault(exchange)
                .unwrap_or(ProxyError::ClientBodyFailed));
        }
        // Boxed once here: an async fn's future holds each future it awaits, and every level
        // above copies the whole of it when it starts (rust-lang/rust#62958). Unboxed, the
        // upstream call's ~6 KB became ~27 KB by `forward`, copied on every request.
        let sending = Box::pin(self.0.upstream.send(Request::from_parts(parts, body)));
        exchange.sending();

        let response = self
            .wait_for_head(sending, exchange)
            .await
            .inspect_err(|error| exchange.send_failed(error.upstream_may_have_it()))?;
        self.check_key_accepted(response.0.status(), exchange)?;
        Ok(response)
    }

    /// Makes a client's request head fit to go upstream: the target under the base URL, with
    /// `PROXY_UPSTREAM_QUERY`; the server's key in place of the client's; the headers rewritten.
    pub(super) fn upstream_head(
        &self,
        parts: &mut http::request::Parts,
        exchange: &Exchange,
    ) -> Result<(), ProxyError> {
        let upstream = &self.0.config.upstream;
        let target = upstream_target(
            &upstream.base_path,
            parts.uri.path(),
            parts.uri.query(),
            &upstream.query,
        );
        parts.uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|_| ProxyError::BadRequest("The request target cannot be forwarded"))?;
        // hyper-util picks HTTP/1.1 or HTTP/2 per upstream connection; a request that insists
        // on the client's version would be refused by a connection of the other kind.
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        let credential = self.0.keys.credential();
        headers::rewrite_request(
            &mut parts.headers,
            &self.0.identity,
            &credential,
            exchange.id(),
        );
        if self.0.config.usage.enabled {
            // The meter reads the answer as it passes, which it cannot do compressed.
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        Ok(())
    }

    /// Waits for the upstream's response head within `PROXY_FIRST_BYTE_TIMEOUT` (and
    /// `PROXY_TOTAL_TIMEOUT`, if it is sooner).
    pub(super) async fn wait_for_head<T>(
        &self,
        sending: impl Future<Output = Result<T, UpstreamError>>,
        exchange: &Exchange,
    ) -> Result<T, ProxyError> {
        let config = &self.0.config;
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
        let config = &self.0.config;
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
        let config = &self.0.config;
        let description = upstream::describe(&*error.error);
        tracing::warn!(request_id = exchange.log_id(), error = %description, "upstream request failed");
        exchange.upstream_failed(error.kind.counted_as());
        ProxyError::from_upstream(error.kind, description, config.timeouts.connect)
    }
}

/// The request body's length as its `Content-Length` declares it, if it does.
pub(super) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

pub(super) fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json")
    })
}

/// A meter for an answer it can read: JSON or SSE, not compressed; or else what the answer
/// is, for its estimate. Boxed: the exchange's record travels with every future that holds
/// it, and the meter would double its size.
fn usage_meter(headers: &http::HeaderMap, is_sse: bool) -> Result<Box<Meter>, Unread> {
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Unread::Compressed);
    }
    if is_sse {
        Ok(Box::new(Meter::sse()))
    } else if is_json(headers.get(header::CONTENT_TYPE)) {
        Ok(Box::new(Meter::json()))
    } else {
        let text = headers.get(header::CONTENT_TYPE).is_none_or(|v| {
            let v = v.as_bytes();
            v.starts_with(b"text/") || v.starts_with(b"application/x-subrip")
        });
        Err(if text { Unread::Text } else { Unread::Binary })
    }
}

/// The upstream's response head, recorded in the exchange and made fit for the client.
pub(super) fn pass_head(
    parts: &mut http::response::Parts,
    exchange: &mut Exchange,
    id: &HeaderValue,
) {
    exchange.upstream_answered(parts.status, headers::upstream_request_id(&parts.headers));
    headers::rewrite_response(&mut parts.headers, id);
    parts.version = Version::HTTP_11;
}

/// An error answer for the client, recorded as the exchange's end.
pub(super) fn failed(
    error: ProxyError,
    mut exchange: Exchange,
    id: HeaderValue,
) -> Response<ProxyBody> {
    let facts = error.facts();
    exchange.answered_error(facts.status, facts.outcome, facts.code);
    let mut response = facts.into_response();
    response.headers_mut().insert(CLIENT_REQUEST_ID.clone(), id);
    response
}
