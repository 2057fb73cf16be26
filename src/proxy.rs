//! The service: route, check, rewrite, forward, and stream the answer back.

use std::sync::Arc;

use std::future::Future;

use http::header;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Config;
use crate::drain::DrainState;
use crate::error::{json_response, ProxyError};
use crate::exchange::body::{FrameClock, ProxyBody, RequestBody, ResponseBody};
use crate::exchange::record::{new_request_id, Exchange};
use crate::exchange::session::{Handoff, Pipe};
use crate::keys::Keys;
use crate::metrics::{self, Metrics, UpstreamErrorKind};
use crate::outcome::Refused;
use crate::policy::client_limits::ClientLimits;
use crate::policy::cors;
use crate::policy::headers::{self, UpstreamIdentity, CLIENT_REQUEST_ID};
use crate::policy::routes::{upstream_target, Route, RouteError, Routes};
use crate::policy::websocket;
use crate::upstream::websocket::WebSocketAnswer;
use crate::upstream::{self, Lease, Upstream, UpstreamError};

/// The proxy's request handler. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

struct Inner {
    config: Config,
    identity: UpstreamIdentity,
    /// The keys in force now; the file watcher replaces them.
    keys: Arc<Keys>,
    limits: ClientLimits,
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
    ) -> Result<Proxy, rustls::Error> {
        let upstream = Upstream::new(&config.upstream, config.timeouts.connect, metrics.clone())?;
        let identity = UpstreamIdentity {
            auth: config.upstream.auth,
            organization: config.upstream.organization.clone(),
            project: config.upstream.project.clone(),
            via: headers::via_entry(),
        };
        Ok(Proxy(Arc::new(Inner {
            limits: ClientLimits::new(config.client_limits),
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
            Ok(Route::Forward { index, .. }) => match self.0.metrics.route(index) {
                Some(route) => self.forward(request, route, origin_allowed, started).await,
                None => ProxyError::Internal("route without metrics").into_response(),
            },
            Err(RouteError::NotFound) => not_found(&request),
            Err(RouteError::MethodNotAllowed { allow }) => ProxyError::MethodNotAllowed {
                method: request.method().clone(),
                allow,
            }
            .into_response(),
        }
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        route: Arc<metrics::RouteMetrics>,
        origin_allowed: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        let id = headers::client_request_id(request.headers()).unwrap_or_else(new_request_id);
        let mut exchange = Exchange::start(
            id.clone(),
            request.method().clone(),
            route,
            started,
            self.0.drain.clone(),
            self.0.metrics.clone(),
        );

        if headers::passed_through(request.headers(), &self.0.identity.via) {
            return failed(ProxyError::LoopDetected, exchange, id);
        }
        // A key in a subprotocol never goes upstream, upgrade or not.
        let key = websocket::take_key_subprotocol(request.headers_mut());
        if request.method() == Method::GET && websocket::is_upgrade(request.headers()) {
            // A session is rare next to requests: its larger future is boxed.
            let opened = match websocket::check_upgrade(request.version(), request.headers())
                .map_err(ProxyError::BadRequest)
                .and_then(|()| self.check_origin(request.headers(), origin_allowed))
                .and_then(|()| self.admit(request.headers(), key.as_deref(), &mut exchange))
            {
                Ok(()) => Box::pin(self.open_session(request, &exchange)).await,
                Err(error) => Err(error),
            };
            return match opened {
                Ok(Opened::Switched(session)) => self.switched(session, exchange, &id),
                Ok(Opened::Refused(response)) => self.respond(response, None, exchange, &id),
                Err(error) => failed(error, exchange, id),
            };
        }

        let answer = match self.admit(request.headers(), None, &mut exchange) {
            Ok(()) => self.call_upstream(request, &exchange).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok((response, lease)) => self.respond(response, Some(lease), exchange, &id),
            Err(error) => failed(error, exchange, id),
        }
    }

    /// The upstream's answer, passed on: its head rewritten, its body forwarded frame by frame
    /// with the exchange's record and the connection it came on.
    fn respond(
        &self,
        upstream_response: Response<Incoming>,
        lease: Option<Lease<RequestBody>>,
        mut exchange: Exchange,
        id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let started = exchange.started();
        let (mut parts, body) = upstream_response.into_parts();
        pass_head(&mut parts, &mut exchange, id);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let clock = FrameClock::new(self.0.config.timeouts.idle, self.total_deadline(started));
        let body = ResponseBody::new(body, lease, clock, exchange, is_sse);
        Response::from_parts(parts, ProxyBody::Forwarded(Box::new(body)))
    }

    /// The upstream switched to a WebSocket: the client gets the `101` with the upstream's
    /// `Sec-WebSocket-*` headers, and the session is left for the client's connection task to
    /// run once hyper has written it.
    fn switched(
        &self,
        session: SwitchedSession,
        mut exchange: Exchange,
        id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let SwitchedSession {
            head,
            stream,
            connection,
            client,
            handoff,
        } = session;
        let (mut parts, ()) = head.into_parts();
        pass_head(&mut parts, &mut exchange, id);
        websocket::mark_upgrade(&mut parts.headers);
        let pipe = Pipe {
            client,
            upstream: stream,
            upstream_connection: connection,
            exchange,
            session: self.0.drain.session_started(),
            idle: self.0.config.timeouts.idle,
        };
        handoff.put(Box::pin(pipe.run()));
        Response::from_parts(parts, ProxyBody::default())
    }

    /// Who the client is, by its key, and whether its limits let this request through. The
    /// in-flight slot it takes goes with the exchange.
    fn admit(
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
        exchange.client = client.clone();
        match self.0.limits.admit(&client, Instant::now()) {
            Ok(permit) => {
                exchange.permit = permit;
                Ok(())
            }
            Err(limited) => {
                self.0
                    .metrics
                    .client_limited(&client, limited.limit.label());
                Err(ProxyError::ClientLimited(limited))
            }
        }
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

    fn total_deadline(&self, started: Instant) -> Option<Instant> {
        self.0.config.timeouts.total.map(|total| started + total)
    }

    /// Sends the request upstream and waits for the response head.
    async fn call_upstream(
        &self,
        request: Request<Incoming>,
        exchange: &Exchange,
    ) -> Result<(Response<Incoming>, Lease<RequestBody>), ProxyError> {
        let config = &self.0.config;
        let (mut parts, body) = request.into_parts();

        let declared_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > config.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge {
                limit: config.max_body_bytes,
            });
        }

        self.upstream_head(&mut parts, exchange)?;
        let started = exchange.started();
        let clock = FrameClock::new(config.timeouts.idle, self.total_deadline(started));
        let mut body =
            RequestBody::new(body, clock, config.max_body_bytes, exchange.request.clone());
        if body.first_frame().await.is_err() {
            return Err(self
                .body_fault(exchange)
                .unwrap_or(ProxyError::ClientBodyFailed));
        }
        // Boxed once here: an async fn's future holds each future it awaits, and every level
        // above copies the whole of it when it starts (rust-lang/rust#62958). Unboxed, the
        // upstream call's ~6 KB became ~27 KB by `forward`, copied on every request.
        let sending = Box::pin(self.0.upstream.send(Request::from_parts(parts, body)));

        let response = self.wait_for_head(sending, exchange).await?;
        self.check_key_accepted(response.0.status(), exchange)?;
        Ok(response)
    }

    /// Makes a client's request head fit to go upstream: the target under the base URL, with
    /// `PROXY_UPSTREAM_QUERY`; the server's key in place of the client's; the headers rewritten.
    fn upstream_head(
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
            &exchange.id,
        );
        Ok(())
    }

    /// Waits for the upstream's response head within `PROXY_FIRST_BYTE_TIMEOUT` (and
    /// `PROXY_TOTAL_TIMEOUT`, if it is sooner).
    async fn wait_for_head<T>(
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
    /// body is dropped unread and the client learns only that the proxy is broken.
    fn check_key_accepted(
        &self,
        status: StatusCode,
        exchange: &Exchange,
    ) -> Result<(), ProxyError> {
        if status != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        tracing::error!(
            request_id = exchange.id.to_str().unwrap_or("-"),
            "the upstream rejected the proxy's API key (401); check OPENAI_API_KEY or OPENAI_API_KEY_FILE"
        );
        Err(ProxyError::UpstreamRejectedKey)
    }

    /// Sends a WebSocket upgrade upstream, on a connection of its own, and waits for its
    /// answer. Only an HTTP/1.1 client connection can be upgraded: it alone has a [`Handoff`].
    async fn open_session(
        &self,
        mut request: Request<Incoming>,
        exchange: &Exchange,
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
        self.upstream_head(&mut parts, exchange)?;
        websocket::mark_upgrade(&mut parts.headers);
        let opening = self
            .0
            .upstream
            .open_websocket(Request::from_parts(parts, Empty::new()));
        match self.wait_for_head(opening, exchange).await? {
            WebSocketAnswer::Refused(response) => {
                self.check_key_accepted(response.status(), exchange)?;
                Ok(Opened::Refused(response))
            }
            WebSocketAnswer::Switched {
                head,
                stream,
                connection,
            } => Ok(Opened::Switched(SwitchedSession {
                head,
                stream,
                connection,
                client,
                handoff,
            })),
        }
    }

    /// The request body's own failure, if it had one: too large, stalled, or broken off.
    fn body_fault(&self, exchange: &Exchange) -> Option<ProxyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let config = &self.0.config;
        let stats = &exchange.request;
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
    fn upstream_error(&self, error: UpstreamError, exchange: &Exchange) -> ProxyError {
        if let Some(fault) = self.body_fault(exchange) {
            return fault;
        }
        let config = &self.0.config;
        let description = upstream::describe(&*error.error);
        tracing::warn!(request_id = exchange.id.to_str().unwrap_or("-"), error = %description, "upstream request failed");
        exchange.upstream_failed(error.kind.counted_as());
        ProxyError::from_upstream(error.kind, description, config.timeouts.connect)
    }
}

/// What a WebSocket upgrade came to.
enum Opened {
    Switched(SwitchedSession),
    /// The upstream answered something else, passed on like any answer.
    Refused(Response<Incoming>),
}

struct SwitchedSession {
    head: Response<()>,
    stream: hyper::upgrade::Upgraded,
    connection: crate::metrics::OpenConnection,
    client: hyper::upgrade::OnUpgrade,
    handoff: Handoff,
}

/// The upstream's response head, recorded in the exchange and made fit for the client.
fn pass_head(parts: &mut http::response::Parts, exchange: &mut Exchange, id: &HeaderValue) {
    exchange.upstream_status = Some(parts.status);
    exchange.status = Some(parts.status);
    exchange.head_after = Some(exchange.started().elapsed());
    exchange.upstream_id = headers::upstream_request_id(&parts.headers);
    headers::rewrite_response(&mut parts.headers, id);
    parts.version = Version::HTTP_11;
}

/// An error answer for the client, recorded as the exchange's end.
fn failed(error: ProxyError, mut exchange: Exchange, id: HeaderValue) -> Response<ProxyBody> {
    if let ProxyError::UpstreamRejectedKey = error {
        // The upstream answered, with 401: the log says so, though the client gets a 502.
        exchange.upstream_status = Some(StatusCode::UNAUTHORIZED);
        exchange.head_after = Some(exchange.started().elapsed());
    }
    exchange.finish(error.outcome());
    let mut response = error.into_response();
    exchange.status = Some(response.status());
    response.headers_mut().insert(CLIENT_REQUEST_ID.clone(), id);
    response
}

/// The proxy's own endpoints on the admin listener (`PROXY_METRICS_ADDR`): `/health`,
/// `/ready` and `/metrics`, without a client key, for the kubelet's probes and a scraper on a
/// private port. Nothing is forwarded from there.
#[derive(Clone)]
pub struct Admin {
    drain: Arc<DrainState>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(drain: Arc<DrainState>, metrics: Arc<Metrics>) -> Admin {
        Admin { drain, metrics }
    }

    pub fn handle<B>(&self, request: &Request<B>) -> Response<ProxyBody> {
        let own = matches!(*request.method(), Method::GET | Method::HEAD);
        match request.uri().path() {
            "/health" if own => health(),
            "/ready" if own => ready(&self.drain),
            "/metrics" if own => metrics_response(&self.metrics),
            path if Routes::is_own(path) => ProxyError::MethodNotAllowed {
                method: request.method().clone(),
                allow: "GET, HEAD".to_owned(),
            }
            .into_response(),
            _ => not_found(request),
        }
    }
}

/// `GET /health`: 200 while the process lives.
fn health() -> Response<ProxyBody> {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// `GET /ready`: 200 while serving, 503 once the drain has begun.
fn ready(drain: &DrainState) -> Response<ProxyBody> {
    if drain.is_draining() {
        json_response(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#)
    }
}

/// The Prometheus exposition, for `GET /metrics` on either listener.
pub fn metrics_response(metrics: &Metrics) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(metrics.encode().into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// The answer to a request head the framing guard refused; the connection closes after it.
pub fn refused(why: Refused) -> Response<ProxyBody> {
    let error = match why {
        Refused::BadRequest(message) => ProxyError::BadRequest(message),
        Refused::HeadTooLarge => ProxyError::HeadTooLarge,
    };
    tracing::info!(status = error.status().as_u16(), reason = ?why, "refused a request head");
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// OpenAI's answer for a URL it does not serve, on either listener.
pub fn not_found<B>(request: &Request<B>) -> Response<ProxyBody> {
    ProxyError::NotFound {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    }
    .into_response()
}
