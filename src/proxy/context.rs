//! What every flow of the service shares: the settings, the keys in force, the limits, the
//! upstream pools, the drain and the metrics; and admitting a client.

use std::sync::Arc;

use http::header;
use http::Request;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Config;
use crate::drain::DrainState;
use crate::error::ProxyError;
use crate::exchange::body::RequestBody;
use crate::exchange::record::{new_request_id, Exchange};
use crate::keys::Keys;
use crate::metrics::{self, Metrics};
use crate::policy::headers::{self, UpstreamIdentity};
use crate::store::Limiter;
use crate::traces::Tracing;
use crate::upstreams::Upstreams;

/// The service's state, one per proxy, shared by every connection.
pub(super) struct Context {
    pub(super) config: Config,
    pub(super) identity: UpstreamIdentity,
    /// The keys in force now; the file watcher replaces them.
    pub(super) keys: Arc<Keys>,
    pub(super) limits: Limiter,
    /// The upstreams in force now; the file watcher replaces them.
    pub(super) upstreams: Arc<Upstreams<RequestBody>>,
    pub(super) drain: Arc<DrainState>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tracing: Tracing,
}

impl Context {
    pub(super) fn new(
        config: Config,
        keys: Arc<Keys>,
        upstreams: Arc<Upstreams<RequestBody>>,
        drain: Arc<DrainState>,
        metrics: Arc<Metrics>,
        tracing: Tracing,
    ) -> Result<Context, String> {
        let limits = Limiter::new(
            config.client_limits,
            config.output_reserve,
            config.shared_limits.as_ref(),
            metrics.clone(),
        )?;
        let identity = UpstreamIdentity {
            organization: config.upstream.organization.clone(),
            project: config.upstream.project.clone(),
            via: headers::via_entry(),
        };
        Ok(Context {
            limits,
            config,
            identity,
            keys,
            upstreams,
            drain,
            metrics,
            tracing,
        })
    }

    /// The record of a request to a forwarded route, from its head.
    pub(super) fn start_exchange(
        &self,
        request: &Request<Incoming>,
        route: Arc<metrics::RouteMetrics>,
        started: Instant,
    ) -> Exchange {
        let id = headers::client_request_id(request.headers()).unwrap_or_else(new_request_id);
        let spans = self
            .tracing
            .exchange(request.headers(), request.method(), &route.name);
        let mut exchange = Exchange::start(
            id,
            request.method().clone(),
            route,
            started,
            self.drain.clone(),
            self.metrics.clone(),
        );
        if let Some(spans) = spans {
            exchange.traced(spans);
        }
        exchange
    }

    /// Who the client is, by its key, and whether its limits let this request through. The
    /// in-flight slot it takes goes with the exchange.
    pub(super) async fn admit(
        &self,
        headers: &http::HeaderMap,
        subprotocol_key: Option<&[u8]>,
        exchange: &mut Exchange,
    ) -> Result<(), ProxyError> {
        let client = self
            .keys
            .identify(headers, subprotocol_key)
            .ok_or(ProxyError::InvalidClientKey)?;
        exchange.identified(client.name.clone());
        // After the key check, so that a client without a key learns nothing but 401; before
        // the limits, so that a loop spends none of them.
        if headers::passed_through(headers, &self.identity.via) {
            return Err(ProxyError::LoopDetected);
        }
        // What the request may cost, reserved of a budget: its input's estimate by its
        // declared length (none without one), and the output reserve.
        let input = headers::declared_length(headers).map_or(0, |bytes| {
            crate::usage::input_estimate(bytes, headers::is_json(headers.get(header::CONTENT_TYPE)))
        });
        match self.limits.admit(&client.name, client.limits, input).await {
            Ok(permit) => {
                exchange.admitted(permit);
                Ok(())
            }
            Err(limited) => {
                self.metrics
                    .limits
                    .rejected(&client.name, limited.limit.label());
                Err(ProxyError::ClientLimited(limited))
            }
        }
    }

    pub(super) fn total_deadline(&self, started: Instant) -> Option<Instant> {
        self.config.timeouts.total.map(|total| started + total)
    }
}
