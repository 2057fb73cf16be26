//! The service: a request routed, and sent down the flow for it.

use std::sync::Arc;

use http::header;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Config;
use crate::drain::DrainState;
use crate::error::ProxyError;
use crate::exchange::body::{ProxyBody, RequestBody};
use crate::keys::Keys;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::cors;
use crate::policy::routes::{carries_usage, Route, Routes};
use crate::policy::websocket;
use crate::traces::Tracing;
use crate::upstreams::Upstreams;

use super::answers::{health, metrics_response, not_found, ready, unrouted};
use super::context::Context;
use super::session::Opened;
use super::upstream_call::failed;

/// The proxy's request handler. Cheap to clone: one per connection.
#[derive(Clone)]
pub(crate) struct Proxy(Arc<Context>);

impl Proxy {
    pub(crate) fn new(
        config: Config,
        keys: Arc<Keys>,
        upstreams: Arc<Upstreams<RequestBody>>,
        drain: Arc<DrainState>,
        metrics: Arc<Metrics>,
        tracing: Tracing,
    ) -> Result<Proxy, String> {
        Context::new(config, keys, upstreams, drain, metrics, tracing)
            .map(|context| Proxy(Arc::new(context)))
    }

    /// Answers one request. Never fails: every problem becomes an OpenAI-style error answer.
    pub(crate) async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        // The proxy's own endpoints carry no CORS headers: no web page may read them.
        let origin = self
            .0
            .config
            .cors_origins
            .as_ref()
            .filter(|_| !Routes::is_own(request.uri().path()))
            .and_then(|cors| cors.allowed_origin(request.headers()));
        let upgrade = websocket::is_upgrade(request.headers());
        let mut response = self.dispatch(request, origin.is_some()).await;
        if let Some(origin) = origin {
            cors::allow_origin(response.headers_mut(), origin);
        }
        // The framing guard stops reading an HTTP/1 connection's heads after an upgrade
        // request; if there was no upgrade after all, the connection must not carry another.
        if upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    async fn dispatch(
        &self,
        request: Request<Incoming>,
        origin_allowed: bool,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let config = &self.0.config;
        let path = request.uri().path();

        if config.cors_origins.is_some() && cors::is_preflight(request.method(), request.headers())
        {
            let methods = config.routes.methods_for(path);
            return if methods.is_empty() {
                not_found(&request)
            } else if origin_allowed {
                cors::preflight_response(request.headers(), &methods)
            } else {
                ProxyError::OriginNotAllowed.into_response()
            };
        }

        match config.routes.route(request.method(), path) {
            Ok(Route::Health) => health(),
            Ok(Route::Ready) => ready(&self.0.drain),
            // With client keys set, the proxy's port shows its metrics (client names, their
            // traffic) only to a client; `PROXY_METRICS_ADDR` serves them without a key.
            Ok(Route::Metrics) => match self.0.keys.identify(request.headers(), None) {
                Some(_) => metrics_response(&self.0.metrics),
                None => ProxyError::InvalidClientKey.into_response(),
            },
            Ok(Route::Forward { index, .. }) => match self.0.metrics.exchanges.route(index) {
                Some(route) => self.exchange(request, route, origin_allowed, started).await,
                None => ProxyError::Internal("route without metrics").into_response(),
            },
            Err(error) => unrouted(&request, error),
        }
    }

    /// A request to a forwarded route: a WebSocket upgrade opens a session, anything else is
    /// forwarded.
    async fn exchange(
        &self,
        mut request: Request<Incoming>,
        route: Arc<RouteMetrics>,
        origin_allowed: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        let context = &*self.0;
        let metered = context.config.usage.enabled && carries_usage(request.method(), &route.name);
        let mut exchange = context.start_exchange(&request, route, started);
        exchange.set_metered(metered);
        // A key in a subprotocol never goes upstream, upgrade or not.
        let key = websocket::take_key_subprotocol(request.headers_mut());
        if request.method() != Method::GET || !websocket::is_upgrade(request.headers()) {
            return context.forward(request, exchange).await;
        }
        // A session is rare next to requests: its larger future is boxed.
        let upgrading = context.upgrade(request, key, &mut exchange, origin_allowed);
        match Box::pin(upgrading).await {
            Ok(Opened::Switched(session)) => context.switched(session, exchange),
            Ok(Opened::Refused(response)) => context.respond(response, None, exchange),
            Err(error) => failed(error, exchange),
        }
    }

    /// Writes every finished exchange's slot and tokens to the shared limits' store before the
    /// process ends, trying until `deadline`.
    pub(crate) async fn settle_limits(&self, deadline: Instant) {
        self.0.limits.settle_all(deadline).await;
    }

    /// Exports the spans of every finished exchange, waiting at most `within`.
    pub(crate) async fn flush_traces(&self, within: std::time::Duration) {
        self.0.tracing.flush(within).await;
    }

    /// Whether finished exchanges leave work for a shared store at the end of a drain.
    pub(crate) fn shares_limits(&self) -> bool {
        self.0.config.shared_limits.is_some()
    }
}
