//! The service: route, check, rewrite, forward, and stream the answer back. A file per flow:
//! this one routes a request and admits its client; [`forward`] sends an exchange upstream and
//! passes its answer back; [`session`] opens a WebSocket session; [`answers`] holds the proxy's
//! own answers (health, readiness, metrics, refusals) and the admin listener's service.

mod answers;
mod forward;
mod session;

use answers::{health, ready, unrouted};
pub use answers::{metrics_response, not_found, refused, Admin};

use std::sync::Arc;

use http::header;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Config;
use crate::drain::DrainState;
use crate::error::ProxyError;
use crate::exchange::body::{ProxyBody, RequestBody};
use crate::exchange::record::Exchange;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::policy::cors;
use crate::policy::headers::{self, UpstreamIdentity};
use crate::policy::routes::{Route, Routes};
use crate::policy::websocket;
use crate::store::Limiter;
use crate::upstream::Upstream;

/// The proxy's request handler. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

struct Inner {
    config: Config,
    identity: UpstreamIdentity,
    /// The keys in force now; the file watcher replaces them.
    keys: Arc<Keys>,
    limits: Limiter,
    upstream: Upstream<RequestBody>,
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        config: Config,
        keys: Arc<Keys>,
        drain: Arc<DrainState>,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, String> {
        let upstream = Upstream::new(&config.upstream, config.timeouts.connect, metrics.clone())
            .map_err(|e| format!("the upstream's TLS settings: {e}"))?;
        let limits = Limiter::new(
            config.client_limits,
            config.output_reserve,
            config.shared_limits.as_ref(),
            metrics.clone(),
        )?;
        let identity = UpstreamIdentity {
            auth: config.upstream.auth,
            organization: config.upstream.organization.clone(),
            project: config.upstream.project.clone(),
            via: headers::via_entry(),
        };
        Ok(Proxy(Arc::new(Inner {
            limits,
            config,
            identity,
            keys,
            upstream,
            drain,
            metrics,
        })))
    }

    /// Answers one request. Never fails: every problem becomes an OpenAI-style error answer.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
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
            Ok(Route::Metrics) => match self.0.keys.admit_with(request.headers(), None) {
                Some(_) => metrics_response(&self.0.metrics),
                None => ProxyError::InvalidClientKey.into_response(),
            },
            Ok(Route::Forward { index, .. }) => match self.0.metrics.exchanges.route(index) {
                Some(route) => self.forward(request, route, origin_allowed, started).await,
                None => ProxyError::Internal("route without metrics").into_response(),
            },
            Err(error) => unrouted(&request, error),
        }
    }

    /// Who the client is, by its key, and whether its limits let this request through. The
    /// in-flight slot it takes goes with the exchange.
    async fn admit(
        &self,
        headers: &http::HeaderMap,
        subprotocol_key: Option<&[u8]>,
        exchange: &mut Exchange,
    ) -> Result<(), ProxyError> {
        let client = self
            .0
            .keys
            .admit_with(headers, subprotocol_key)
            .ok_or(ProxyError::InvalidClientKey)?;
        exchange.identified(client.name.clone());
        // After the key check, so that a client without a key learns nothing but 401; before
        // the limits, so that a loop spends none of them.
        if headers::passed_through(headers, &self.0.identity.via) {
            return Err(ProxyError::LoopDetected);
        }
        // What the request may cost, reserved of a budget: its input's estimate by its
        // declared length (none without one), and the output reserve.
        let input = forward::declared_length(headers).map_or(0, |bytes| {
            crate::usage::input_estimate(bytes, forward::is_json(headers.get(header::CONTENT_TYPE)))
        });
        match self
            .0
            .limits
            .admit(&client.name, client.limits, input)
            .await
        {
            Ok(permit) => {
                exchange.admitted(permit);
                Ok(())
            }
            Err(limited) => {
                self.0
                    .metrics
                    .limits
                    .rejected(&client.name, limited.limit.label());
                Err(ProxyError::ClientLimited(limited))
            }
        }
    }

    /// Writes every finished exchange's slot and tokens to the shared limits' store before the
    /// process ends, trying until `deadline`.
    pub async fn settle_limits(&self, deadline: Instant) {
        self.0.limits.settle_all(deadline).await;
    }

    /// Whether finished exchanges leave work for a shared store at the end of a drain.
    pub fn shares_limits(&self) -> bool {
        self.0.config.shared_limits.is_some()
    }

    fn total_deadline(&self, started: Instant) -> Option<Instant> {
        self.0.config.timeouts.total.map(|total| started + total)
    }
}
