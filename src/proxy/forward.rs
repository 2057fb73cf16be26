//! A request forwarded upstream: its body sent on frame by frame, and the upstream's answer
//! passed back the same way, with the exchange's record.

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::ProxyError;
use crate::exchange::body::{FrameClock, ProxyBody, RequestBody, ResponseBody};
use crate::exchange::record::{Exchange, Unread};
use crate::policy::headers;
use crate::upstream::Lease;
use crate::upstreams::Tried;
use crate::usage::Meter;

use super::context::Context;
use super::upstream_call::{failed, pass_head};

impl Context {
    /// Admits the client, sends its request upstream and passes the answer back.
    pub(super) async fn forward(
        &self,
        request: Request<Incoming>,
        mut exchange: Exchange,
    ) -> Response<ProxyBody> {
        let answer = match self.admit(request.headers(), None, &mut exchange).await {
            Ok(()) => self.call_upstream(request, &mut exchange).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok((response, lease)) => self.respond(response, Some(lease), exchange),
            Err(error) => failed(error, exchange),
        }
    }

    /// The upstream's answer, passed on: its head rewritten, its body forwarded frame by frame
    /// with the exchange's record and the connection it came on.
    pub(super) fn respond(
        &self,
        upstream_response: Response<Incoming>,
        lease: Option<Lease<RequestBody>>,
        mut exchange: Exchange,
    ) -> Response<ProxyBody> {
        let started = exchange.started();
        let (mut parts, body) = upstream_response.into_parts();
        pass_head(&mut parts, &mut exchange);
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let is_sse = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if is_sse {
            exchange.streaming();
        }
        if exchange.is_metered() && parts.status.is_success() {
            match usage_meter(&parts.headers, is_sse) {
                Ok(meter) => exchange.metering(meter),
                Err(unread) => exchange.unreadable(unread),
            }
        }
        let clock = FrameClock::new(self.config.timeouts.idle, self.total_deadline(started));
        let body = ResponseBody::new(body, lease, clock, exchange, is_sse);
        Response::from_parts(parts, ProxyBody::Forwarded(Box::new(body)))
    }

    /// Sends the request upstream and waits for the response head.
    pub(super) async fn call_upstream(
        &self,
        request: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<(Response<Incoming>, Lease<RequestBody>), ProxyError> {
        let config = &self.config;
        let (mut parts, body) = request.into_parts();

        if headers::declared_length(&parts.headers).is_some_and(|len| len > config.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge {
                limit: config.max_body_bytes,
            });
        }

        exchange.request_is_json(headers::is_json(parts.headers.get(header::CONTENT_TYPE)));
        self.upstream_head(&mut parts, exchange);
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
        // above copies the whole of it when it starts (rust-lang/rust#62958): unboxed, the
        // upstream call's future would grow at every level and be copied on every request.
        let mut tried = Tried::default();
        let sending = Box::pin(self.upstreams.send(parts, body, &mut tried));
        exchange.sending();

        let response = self.wait_for_head(sending, exchange).await;
        exchange.tried(tried);
        let response =
            response.inspect_err(|error| exchange.send_failed(error.upstream_may_have_it()))?;
        self.check_key_accepted(response.0.status(), exchange)?;
        Ok(response)
    }
}

/// A meter for an answer it can read: JSON or SSE, not compressed; or else what the answer
/// is, for its estimate. Boxed: the exchange's record travels with every future that holds
/// it, and the meter would double its size.
fn usage_meter(head: &http::HeaderMap, is_sse: bool) -> Result<Box<Meter>, Unread> {
    let encoded = head
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Unread::Compressed);
    }
    if is_sse {
        Ok(Box::new(Meter::sse()))
    } else if headers::is_json(head.get(header::CONTENT_TYPE)) {
        Ok(Box::new(Meter::json()))
    } else {
        let text = head.get(header::CONTENT_TYPE).is_none_or(|v| {
            let v = v.as_bytes();
            v.starts_with(b"text/") || v.starts_with(b"application/x-subrip")
        });
        Err(if text { Unread::Text } else { Unread::Binary })
    }
}
