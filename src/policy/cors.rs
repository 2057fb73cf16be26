//! CORS for browser clients, when `PROXY_CORS_ORIGINS` is set. Unset, no CORS header is ever
//! added and preflights get the same 405 as any other unlisted method.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

#[derive(Clone, Debug)]
pub(crate) enum CorsOrigins {
    Any,
    List(Vec<HeaderValue>),
}

/// Request headers a browser may send when the preflight does not list its own.
static DEFAULT_ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "authorization, content-type, x-request-id, x-client-request-id, openai-organization, openai-project, openai-beta",
);
/// Response headers a browser script may read: our ids and OpenAI's.
static EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static(
    "x-request-id, x-client-request-id, openai-processing-ms, openai-version, openai-organization, \
     x-ratelimit-limit-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-requests, \
     x-ratelimit-remaining-tokens, x-ratelimit-reset-requests, x-ratelimit-reset-tokens",
);
static MAX_AGE: HeaderValue = HeaderValue::from_static("3600");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");

impl CorsOrigins {
    /// The request's `Origin`, if it is allowed.
    pub(crate) fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let allowed = match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
        };
        allowed.then(|| origin.clone())
    }
}

/// A browser's preflight: `OPTIONS` with `Access-Control-Request-Method`.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The proxy's own 204 answer to a preflight on a forwarded route from an allowed origin.
pub(crate) fn preflight_response<B: Default>(
    request: &HeaderMap,
    methods: &[&Method],
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    let methods = methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(methods) = HeaderValue::from_str(&methods) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    // Mirror what the browser asks for (the OpenAI SDKs send several x-stainless-* headers),
    // but only if it is a plain list of header names.
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(b))
        });
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked
            .cloned()
            .unwrap_or_else(|| DEFAULT_ALLOW_HEADERS.clone()),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE.clone());
    response
}

/// Adds the headers that let a browser read an answer, whoever made it.
pub(crate) fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        EXPOSE_HEADERS.clone(),
    );
    headers.append(header::VARY, VARY_ORIGIN.clone());
}
