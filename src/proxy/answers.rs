//! The proxy's own answers: health, readiness and metrics, the admin listener's service, and
//! the refusals that come before any routing.

use std::sync::Arc;

use http::header;
use http::{Request, Response, StatusCode};

use crate::drain::DrainState;
use crate::error::{json_response, ProxyError};
use crate::exchange::body::ProxyBody;
use crate::metrics::{self, Metrics};
use crate::outcome::Refused;
use crate::policy::routes::{Route, RouteError, Routes};

/// The proxy's own endpoints on the admin listener (`PROXY_METRICS_ADDR`): `/health`,
/// `/ready` and `/metrics`, without a client key, for the kubelet's probes and a scraper on a
/// private port. Nothing is forwarded from there.
#[derive(Clone)]
pub(crate) struct Admin {
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub(crate) fn new(drain: Arc<DrainState>, metrics: Arc<Metrics>) -> Admin {
        Admin { drain, metrics }
    }

    pub(crate) fn handle<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        match Routes::own_route(request.method(), request.uri().path()) {
            Ok(Route::Health) => health(),
            Ok(Route::Ready) => ready(&self.drain),
            Ok(Route::Metrics) => metrics_response(&self.metrics),
            Ok(Route::Forward { .. }) => not_found(request),
            Err(error) => unrouted(request, error),
        }
    }
}

/// The answer to a request that matches no route, or a route with another method.
pub(super) fn unrouted<B>(request: &Request<B>, error: RouteError) -> Response<ProxyBody> {
    match error {
        RouteError::NotFound => not_found(request),
        RouteError::MethodNotAllowed { allow } => ProxyError::MethodNotAllowed {
            method: request.method().clone(),
            allow,
        }
        .into_response(),
    }
}

/// `GET /health`: 200 while the process lives.
pub(super) fn health() -> Response<ProxyBody> {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// `GET /ready`: 200 while serving, 503 once the drain has begun.
pub(super) fn ready(drain: &DrainState) -> Response<ProxyBody> {
    if drain.is_draining() {
        json_response(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#)
    }
}

/// The Prometheus exposition, for `GET /metrics` on either listener.
pub(super) fn metrics_response(metrics: &Metrics) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(metrics.encode().into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// The answer to a request head the framing guard refused; the connection closes after it.
pub(crate) fn refused(why: Refused) -> Response<ProxyBody> {
    let error = match why {
        Refused::BadRequest(message) => ProxyError::BadRequest(message),
        Refused::HeadTooLarge => ProxyError::HeadTooLarge,
    };
    let facts = error.facts();
    tracing::info!(status = facts.status.as_u16(), reason = ?why, "refused a request head");
    let mut response = facts.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// OpenAI's answer for a URL it does not serve, on either listener.
pub(super) fn not_found<B>(request: &Request<B>) -> Response<ProxyBody> {
    ProxyError::NotFound {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    }
    .into_response()
}
