//! Every answer the proxy makes up itself when something goes wrong, in OpenAI's error shape.
//!
//! Each error records who is at fault, and the status follows from that: the client (4xx), the
//! upstream (502, or 504 for a timeout), or the proxy itself (500).

use std::time::Duration;

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::outcome::{FailureKind, Outcome};
use crate::policy::client_limits::{Limit, Limited};

#[derive(Debug)]
pub enum ProxyError {
    // The client's fault.
    NotFound {
        method: Method,
        path: String,
    },
    MethodNotAllowed {
        method: Method,
        allow: String,
    },
    InvalidClientKey,
    /// A per-client limit refused the request; nothing went upstream.
    ClientLimited(Limited),
    OriginNotAllowed,
    BodyTooLarge {
        limit: u64,
    },
    /// The client's upload stalled for longer than the idle timeout.
    RequestBodyTimeout(Duration),
    /// The client's upload broke off; usually the client is gone and reads nothing.
    ClientBodyFailed,
    BadRequest(&'static str),
    /// The request head is over the size or header-count limit.
    HeadTooLarge,
    /// The request has already passed through this proxy: the upstream leads back to it.
    LoopDetected,
    // The upstream's fault.
    UpstreamUnreachable(String),
    /// The upstream's TLS certificate was not trusted, or not valid for its name.
    UpstreamCertificate(String),
    /// The forward proxy (`HTTPS_PROXY`) could not be reached or refused the tunnel.
    ForwardProxyFailed(String),
    UpstreamConnectTimeout(Duration),
    FirstByteTimeout(Duration),
    TotalTimeout(Duration),
    UpstreamFailed(String),
    /// The request may have reached the upstream before its connection or stream failed, so
    /// it was not sent again; the client must decide whether to retry.
    UpstreamMayHaveProcessed(String),
    UpstreamRejectedKey,
    // Ours.
    Internal(&'static str),
}

/// Who is at fault for an error, read from its status class; the `type` field and the outcome
/// follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request: 4xx, `invalid_request_error` (or `requests` for a limit).
    Client,
    /// The upstream, or the way to it: 502 or 504, `server_error`.
    Upstream,
    /// The proxy itself, or its configuration: 500 or 508, `server_error`.
    Proxy,
}

impl ProxyError {
    /// The answer for an upstream call that failed with `kind`: `description` says how, and
    /// `connect_timeout` is `PROXY_CONNECT_TIMEOUT`, for the message.
    pub fn from_upstream(
        kind: FailureKind,
        description: String,
        connect_timeout: Duration,
    ) -> ProxyError {
        match kind {
            FailureKind::ConnectTimeout => ProxyError::UpstreamConnectTimeout(connect_timeout),
            FailureKind::Connect | FailureKind::Tls => ProxyError::UpstreamUnreachable(description),
            FailureKind::Certificate => ProxyError::UpstreamCertificate(description),
            FailureKind::ForwardProxy => ProxyError::ForwardProxyFailed(description),
            FailureKind::Reset => ProxyError::UpstreamFailed(description),
            FailureKind::AfterSend => ProxyError::UpstreamMayHaveProcessed(description),
        }
    }

    /// Whether, failing so before the answer's head, the request may have reached the
    /// upstream, which then had its prompt: a timeout waiting for the head, or a failure after
    /// the request left. Every other error comes before the request could get there.
    pub fn upstream_may_have_it(&self) -> bool {
        matches!(
            self,
            ProxyError::FirstByteTimeout(_)
                | ProxyError::TotalTimeout(_)
                | ProxyError::UpstreamMayHaveProcessed(_)
        )
    }

    pub fn fault(&self) -> Fault {
        match self.status().as_u16() {
            400..=499 => Fault::Client,
            500 | 508 => Fault::Proxy,
            _ => Fault::Upstream,
        }
    }

    /// How an exchange that ends in this error is counted and logged.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProxyError::BodyTooLarge { .. } => Outcome::BodyTooLarge,
            ProxyError::ClientBodyFailed => Outcome::ClientCancelled,
            ProxyError::RequestBodyTimeout(_) => Outcome::IdleTimeout,
            ProxyError::UpstreamConnectTimeout(_) => Outcome::ConnectTimeout,
            ProxyError::FirstByteTimeout(_) => Outcome::FirstByteTimeout,
            ProxyError::TotalTimeout(_) => Outcome::TotalTimeout,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamCertificate(_)
            | ProxyError::ForwardProxyFailed(_) => Outcome::UpstreamUnreachable,
            ProxyError::ClientLimited(_) => Outcome::Limited,
            ProxyError::LoopDetected => Outcome::Rejected,
            _ => match self.fault() {
                Fault::Client => Outcome::Rejected,
                Fault::Upstream | Fault::Proxy => Outcome::UpstreamFailed,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::InvalidClientKey => StatusCode::UNAUTHORIZED,
            ProxyError::ClientLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::ClientBodyFailed => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // RFC 5842's 508 Loop Detected.
            ProxyError::LoopDetected => StatusCode::LOOP_DETECTED,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamCertificate(_)
            | ProxyError::ForwardProxyFailed(_)
            | ProxyError::UpstreamFailed(_)
            | ProxyError::UpstreamMayHaveProcessed(_)
            | ProxyError::UpstreamRejectedKey => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout(_)
            | ProxyError::FirstByteTimeout(_)
            | ProxyError::TotalTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `code` field: a stable word that clients can match on.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            ProxyError::NotFound { .. } => return None,
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::InvalidClientKey => "invalid_api_key",
            // Not OpenAI's `rate_limit_exceeded`: a client can tell this proxy's refusal apart.
            ProxyError::ClientLimited(Limited {
                limit: Limit::Concurrency,
                ..
            }) => "proxy_concurrency_limit",
            ProxyError::ClientLimited(Limited {
                limit: Limit::Rate, ..
            }) => "proxy_rate_limit",
            ProxyError::ClientLimited(Limited {
                limit: Limit::TokenBudget,
                ..
            }) => "proxy_token_budget",
            ProxyError::ClientLimited(Limited {
                limit: Limit::Unavailable,
                ..
            }) => "proxy_limits_unavailable",
            ProxyError::OriginNotAllowed => "origin_not_allowed",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::RequestBodyTimeout(_) => "request_body_timeout",
            ProxyError::ClientBodyFailed => "request_body_incomplete",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadTooLarge => "request_header_fields_too_large",
            ProxyError::LoopDetected => "proxy_loop_detected",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamCertificate(_) => "upstream_certificate_error",
            ProxyError::ForwardProxyFailed(_) => "forward_proxy_error",
            ProxyError::UpstreamConnectTimeout(_) => "upstream_connect_timeout",
            ProxyError::FirstByteTimeout(_) => "upstream_first_byte_timeout",
            ProxyError::TotalTimeout(_) => "total_timeout",
            ProxyError::UpstreamFailed(_) => "upstream_error",
            ProxyError::UpstreamMayHaveProcessed(_) => "upstream_request_may_have_been_processed",
            ProxyError::UpstreamRejectedKey => "upstream_auth_failed",
            ProxyError::Internal(_) => "internal_error",
        })
    }

    fn message(&self) -> String {
        match self {
            // The same words OpenAI uses for a URL it does not serve.
            ProxyError::NotFound { method, path } => format!("Invalid URL ({method} {path})"),
            ProxyError::MethodNotAllowed { method, allow } => {
                format!("Method {method} is not allowed on this path; use {allow}")
            }
            ProxyError::InvalidClientKey => {
                "Incorrect or missing API key for this proxy. Send it as 'Authorization: Bearer <key>'.".to_owned()
            }
            ProxyError::ClientLimited(Limited { limit: Limit::Concurrency, retry_after }) => format!(
                "This proxy allows each client a limited number of requests at once (PROXY_CLIENT_MAX_IN_FLIGHT), and this client has that many open. Retry after {} s.",
                retry_after.as_secs()
            ),
            ProxyError::ClientLimited(Limited { limit: Limit::Rate, retry_after }) => format!(
                "This proxy allows each client a limited number of requests a minute (PROXY_CLIENT_RATE), and this client has used them. Retry after {} s.",
                retry_after.as_secs()
            ),
            ProxyError::ClientLimited(Limited { limit: Limit::TokenBudget, retry_after }) => format!(
                "This proxy gives each client a budget of tokens for each window of time (PROXY_CLIENT_TOKEN_BUDGET or the client's token_budget, such as 2000000/day), and this client has spent this window's. The window ends in {} s.",
                retry_after.as_secs()
            ),
            ProxyError::ClientLimited(Limited { limit: Limit::Unavailable, retry_after }) => format!(
                "This proxy checks each client's limits in a shared store, which does not answer now, and it is set to refuse until it does (PROXY_LIMITS_REDIS_FALLBACK=refuse). Retry after {} s.",
                retry_after.as_secs()
            ),
            ProxyError::OriginNotAllowed => "This origin is not allowed by PROXY_CORS_ORIGINS".to_owned(),
            ProxyError::RequestBodyTimeout(t) => {
                format!("The request body stalled for longer than {t:?} (PROXY_IDLE_TIMEOUT)")
            }
            ProxyError::ClientBodyFailed => "The request body ended before it was complete".to_owned(),
            ProxyError::BodyTooLarge { limit } => {
                format!("The request body is larger than this proxy's limit of {limit} bytes (PROXY_MAX_BODY_BYTES)")
            }
            ProxyError::BadRequest(why) => (*why).to_owned(),
            ProxyError::HeadTooLarge => format!(
                "The request head is larger than {} bytes or has more than {} header lines",
                crate::limits::MAX_REQUEST_HEAD_BYTES,
                crate::limits::MAX_HEADERS
            ),
            ProxyError::LoopDetected => "This request has already passed through this proxy: OPENAI_BASE_URL leads back to it. Set the proxy's OPENAI_BASE_URL to the real upstream (a shell that exports it for the app also changes the proxy's, since the environment wins over .env).".to_owned(),
            ProxyError::UpstreamUnreachable(why) => format!("Could not reach the upstream API: {why}"),
            ProxyError::UpstreamCertificate(why) => format!(
                "The upstream API's TLS certificate was not accepted (a certificate problem; see PROXY_UPSTREAM_CA): {why}"
            ),
            ProxyError::ForwardProxyFailed(why) => format!(
                "The forward proxy did not open a tunnel to the upstream API (HTTPS_PROXY): {why}"
            ),
            ProxyError::UpstreamConnectTimeout(t) => {
                format!("Timed out after {t:?} connecting to the upstream API (PROXY_CONNECT_TIMEOUT)")
            }
            ProxyError::FirstByteTimeout(t) => {
                format!("The upstream API sent no response within {t:?} (PROXY_FIRST_BYTE_TIMEOUT)")
            }
            ProxyError::TotalTimeout(t) => {
                format!("The exchange took longer than {t:?} (PROXY_TOTAL_TIMEOUT)")
            }
            ProxyError::UpstreamFailed(why) => format!("The upstream API failed: {why}"),
            ProxyError::UpstreamMayHaveProcessed(why) => format!(
                "The upstream API failed after the request was sent, before its answer began ({why}). It may have processed the request, so this proxy did not send it again: a retry may be billed twice."
            ),
            ProxyError::UpstreamRejectedKey => {
                "The upstream rejected the proxy's API key. This is a server configuration problem; contact the operator of this proxy.".to_owned()
            }
            ProxyError::Internal(why) => format!("Internal proxy error: {why}"),
        }
    }

    fn kind(&self) -> &'static str {
        match (self.fault(), self) {
            // OpenAI's types for a limit on the number of tokens, and of requests.
            (
                _,
                ProxyError::ClientLimited(Limited {
                    limit: Limit::TokenBudget,
                    ..
                }),
            ) => "tokens",
            (_, ProxyError::ClientLimited(_)) => "requests",
            (Fault::Client, _) => "invalid_request_error",
            (Fault::Upstream | Fault::Proxy, _) => "server_error",
        }
    }

    pub fn into_response<B: From<bytes::Bytes>>(self) -> Response<B> {
        let status = self.status();
        let body = serde_json::json!({
            "error": {
                "message": self.message(),
                "type": self.kind(),
                "param": null,
                "code": self.code(),
            }
        });
        let mut response = json_response(status, body.to_string());
        match &self {
            ProxyError::MethodNotAllowed { allow, .. } => {
                if let Ok(allow) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
            }
            ProxyError::ClientLimited(limited) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, limited.retry_after.as_secs().into());
            }
            _ => {}
        }
        response
    }
}

/// A small JSON answer made by the proxy itself.
pub fn json_response<B: From<bytes::Bytes>>(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
) -> Response<B> {
    let mut response = Response::new(B::from(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_who_is_at_fault() {
        assert_eq!(
            ProxyError::UpstreamUnreachable("refused".into()).status(),
            502
        );
        assert_eq!(
            ProxyError::FirstByteTimeout(Duration::from_secs(1)).status(),
            504
        );
        assert_eq!(
            ProxyError::UpstreamConnectTimeout(Duration::from_secs(1)).status(),
            504
        );
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(ProxyError::InvalidClientKey.status(), 401);
        assert_eq!(ProxyError::UpstreamRejectedKey.status(), 502);
        assert_eq!(ProxyError::Internal("x").status(), 500);
    }

    #[test]
    fn not_found_message_escapes_the_path() {
        let e = ProxyError::NotFound {
            method: Method::GET,
            path: "/a\"b".into(),
        };
        let response: Response<bytes::Bytes> = e.into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
