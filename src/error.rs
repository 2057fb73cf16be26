//! Every answer the proxy makes up itself when something goes wrong, in OpenAI's error shape.
//!
//! Each error records who is at fault, and the status follows from that: the client (4xx), the
//! upstream (502, or 504 for a timeout), or the proxy itself (500, or 508 for a loop). What an
//! error is, is one row of [`ProxyError::facts`].

use std::time::Duration;

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::outcome::{FailureKind, Outcome};
use crate::policy::client_limits::{Limit, Limited};

#[derive(Debug)]
pub(crate) enum ProxyError {
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

/// Who is at fault for an error. The `type` field and, unless a row says otherwise, the
/// outcome follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The request: 4xx, `invalid_request_error` (or `requests`/`tokens` for a limit);
    /// counted as `rejected`.
    Client,
    /// The upstream, or the way to it: 502 or 504, `server_error`; counted as
    /// `upstream_failed`.
    Upstream,
    /// The proxy itself, or its configuration: 500 or 508, `server_error`.
    Proxy,
}

/// Everything the answer, the record and the logs say of one error: its row in
/// [`ProxyError::facts`].
#[derive(Debug)]
pub(crate) struct Facts {
    pub status: StatusCode,
    /// OpenAI's `code` field: a stable word that clients can match on.
    pub code: Option<&'static str>,
    /// How an exchange that ends in this error is counted and logged.
    pub outcome: Outcome,
    /// OpenAI's `type` field.
    kind: &'static str,
    message: String,
    /// A header the answer carries, such as `Allow` or `Retry-After`.
    header: Option<(header::HeaderName, HeaderValue)>,
    /// Whether, failing so before the answer's head, the request may have reached the
    /// upstream, which then had its prompt.
    may_have_reached_upstream: bool,
}

impl Facts {
    fn new(fault: Fault, status: StatusCode, code: Option<&'static str>, message: String) -> Facts {
        let (kind, outcome) = match fault {
            Fault::Client => ("invalid_request_error", Outcome::Rejected),
            Fault::Upstream | Fault::Proxy => ("server_error", Outcome::UpstreamFailed),
        };
        Facts {
            status,
            code,
            outcome,
            kind,
            message,
            header: None,
            may_have_reached_upstream: false,
        }
    }

    fn client(
        status: StatusCode,
        code: impl Into<Option<&'static str>>,
        message: impl Into<String>,
    ) -> Facts {
        Facts::new(Fault::Client, status, code.into(), message.into())
    }

    fn upstream(status: StatusCode, code: &'static str, message: String) -> Facts {
        Facts::new(Fault::Upstream, status, Some(code), message)
    }

    fn proxy(status: StatusCode, code: &'static str, message: String) -> Facts {
        Facts::new(Fault::Proxy, status, Some(code), message)
    }

    fn outcome(mut self, outcome: Outcome) -> Facts {
        self.outcome = outcome;
        self
    }

    fn limited(self, kind: &'static str, retry_after: Duration) -> Facts {
        Facts {
            kind,
            header: Some((header::RETRY_AFTER, retry_after.as_secs().into())),
            ..self.outcome(Outcome::Limited)
        }
    }

    fn reached_upstream(mut self) -> Facts {
        self.may_have_reached_upstream = true;
        self
    }

    /// The answer in OpenAI's error shape.
    pub(crate) fn into_response<B: From<bytes::Bytes>>(self) -> Response<B> {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        });
        let mut response = json_response(self.status, body.to_string());
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl ProxyError {
    /// The answer for an upstream call that failed with `kind`: `description` says how, and
    /// `connect_timeout` is `PROXY_CONNECT_TIMEOUT`, for the message.
    pub(crate) fn from_upstream(
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
    /// upstream: a timeout waiting for the head, or a failure after the request left. Every
    /// other error comes before the request could get there.
    pub(crate) fn upstream_may_have_it(&self) -> bool {
        self.facts().may_have_reached_upstream
    }

    /// The one table of what each error is: whose fault, its status, `code`, outcome and
    /// message. A new error is a new row here and nowhere else.
    pub(crate) fn facts(&self) -> Facts {
        use StatusCode as S;
        match self {
            // The same words OpenAI uses for a URL it does not serve, and no `code`.
            ProxyError::NotFound { method, path } => {
                Facts::client(S::NOT_FOUND, None, format!("Invalid URL ({method} {path})"))
            }
            ProxyError::MethodNotAllowed { method, allow } => Facts {
                header: HeaderValue::from_str(allow).ok().map(|v| (header::ALLOW, v)),
                ..Facts::client(
                    S::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("Method {method} is not allowed on this path; use {allow}"),
                )
            },
            ProxyError::InvalidClientKey => Facts::client(
                S::UNAUTHORIZED,
                "invalid_api_key",
                "Incorrect or missing API key for this proxy. Send it as 'Authorization: Bearer <key>'.",
            ),
            // Not OpenAI's `rate_limit_exceeded`: a client can tell this proxy's refusal apart.
            ProxyError::ClientLimited(Limited { limit, retry_after }) => {
                let secs = retry_after.as_secs();
                let (code, kind, message) = match limit {
                    Limit::Concurrency => ("proxy_concurrency_limit", "requests", format!(
                        "This proxy allows each client a limited number of requests at once (PROXY_CLIENT_MAX_IN_FLIGHT), and this client has that many open. Retry after {secs} s."
                    )),
                    Limit::Rate => ("proxy_rate_limit", "requests", format!(
                        "This proxy allows each client a limited number of requests a minute (PROXY_CLIENT_RATE), and this client has used them. Retry after {secs} s."
                    )),
                    // OpenAI's type for a limit on the number of tokens.
                    Limit::TokenBudget => ("proxy_token_budget", "tokens", format!(
                        "This proxy gives each client a budget of tokens for each window of time (PROXY_CLIENT_TOKEN_BUDGET or the client's token_budget, such as 2000000/day), and this client has spent this window's. The window ends in {secs} s."
                    )),
                    Limit::Unavailable => ("proxy_limits_unavailable", "requests", format!(
                        "This proxy checks each client's limits in a shared store, which does not answer now, and it is set to refuse until it does (PROXY_LIMITS_REDIS_FALLBACK=refuse). Retry after {secs} s."
                    )),
                };
                Facts::client(S::TOO_MANY_REQUESTS, code, message).limited(kind, *retry_after)
            }
            ProxyError::OriginNotAllowed => Facts::client(
                S::FORBIDDEN,
                "origin_not_allowed",
                "This origin is not allowed by PROXY_CORS_ORIGINS",
            ),
            ProxyError::BodyTooLarge { limit } => Facts::client(
                S::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("The request body is larger than this proxy's limit of {limit} bytes (PROXY_MAX_BODY_BYTES)"),
            )
            .outcome(Outcome::BodyTooLarge),
            ProxyError::RequestBodyTimeout(t) => Facts::client(
                S::REQUEST_TIMEOUT,
                "request_body_timeout",
                format!("The request body stalled for longer than {t:?} (PROXY_IDLE_TIMEOUT)"),
            )
            .outcome(Outcome::IdleTimeout),
            ProxyError::ClientBodyFailed => Facts::client(
                S::BAD_REQUEST,
                "request_body_incomplete",
                "The request body ended before it was complete",
            )
            .outcome(Outcome::ClientCancelled),
            ProxyError::BadRequest(why) => Facts::client(S::BAD_REQUEST, "bad_request", *why),
            ProxyError::HeadTooLarge => Facts::client(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                format!(
                    "The request head is larger than {} bytes or has more than {} header lines",
                    crate::bounds::MAX_REQUEST_HEAD_BYTES,
                    crate::bounds::MAX_HEADERS
                ),
            ),
            // RFC 5842's 508 Loop Detected: the proxy's own configuration leads back to it.
            ProxyError::LoopDetected => Facts::proxy(
                S::LOOP_DETECTED,
                "proxy_loop_detected",
                "This request has already passed through this proxy: OPENAI_BASE_URL leads back to it. Set the proxy's OPENAI_BASE_URL to the real upstream (a shell that exports it for the app also changes the proxy's, since the environment wins over .env).".to_owned(),
            )
            .outcome(Outcome::Rejected),
            ProxyError::UpstreamUnreachable(why) => Facts::upstream(
                S::BAD_GATEWAY,
                "upstream_unreachable",
                format!("Could not reach the upstream API: {why}"),
            )
            .outcome(Outcome::UpstreamUnreachable),
            ProxyError::UpstreamCertificate(why) => Facts::upstream(
                S::BAD_GATEWAY,
                "upstream_certificate_error",
                format!("The upstream API's TLS certificate was not accepted (a certificate problem; see PROXY_UPSTREAM_CA): {why}"),
            )
            .outcome(Outcome::UpstreamUnreachable),
            ProxyError::ForwardProxyFailed(why) => Facts::upstream(
                S::BAD_GATEWAY,
                "forward_proxy_error",
                format!("The forward proxy did not open a tunnel to the upstream API (HTTPS_PROXY): {why}"),
            )
            .outcome(Outcome::UpstreamUnreachable),
            ProxyError::UpstreamConnectTimeout(t) => Facts::upstream(
                S::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                format!("Timed out after {t:?} connecting to the upstream API (PROXY_CONNECT_TIMEOUT)"),
            )
            .outcome(Outcome::ConnectTimeout),
            ProxyError::FirstByteTimeout(t) => Facts::upstream(
                S::GATEWAY_TIMEOUT,
                "upstream_first_byte_timeout",
                format!("The upstream API sent no response within {t:?} (PROXY_FIRST_BYTE_TIMEOUT)"),
            )
            .outcome(Outcome::FirstByteTimeout)
            .reached_upstream(),
            ProxyError::TotalTimeout(t) => Facts::upstream(
                S::GATEWAY_TIMEOUT,
                "total_timeout",
                format!("The exchange took longer than {t:?} (PROXY_TOTAL_TIMEOUT)"),
            )
            .outcome(Outcome::TotalTimeout)
            .reached_upstream(),
            ProxyError::UpstreamFailed(why) => Facts::upstream(
                S::BAD_GATEWAY,
                "upstream_error",
                format!("The upstream API failed: {why}"),
            ),
            ProxyError::UpstreamMayHaveProcessed(why) => Facts::upstream(
                S::BAD_GATEWAY,
                "upstream_request_may_have_been_processed",
                format!("The upstream API failed after the request was sent, before its answer began ({why}). It may have processed the request, so this proxy did not send it again: a retry may be billed twice."),
            )
            .reached_upstream(),
            ProxyError::UpstreamRejectedKey => Facts::upstream(
                S::BAD_GATEWAY,
                "upstream_auth_failed",
                "The upstream rejected the proxy's API key. This is a server configuration problem; contact the operator of this proxy.".to_owned(),
            ),
            ProxyError::Internal(why) => Facts::proxy(
                S::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("Internal proxy error: {why}"),
            ),
        }
    }

    pub(crate) fn into_response<B: From<bytes::Bytes>>(self) -> Response<B> {
        self.facts().into_response()
    }
}

/// A small JSON answer made by the proxy itself.
pub(crate) fn json_response<B: From<bytes::Bytes>>(
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
            ProxyError::UpstreamUnreachable("refused".into())
                .facts()
                .status,
            502
        );
        assert_eq!(
            ProxyError::FirstByteTimeout(Duration::from_secs(1))
                .facts()
                .status,
            504
        );
        assert_eq!(
            ProxyError::UpstreamConnectTimeout(Duration::from_secs(1))
                .facts()
                .status,
            504
        );
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.facts().status, 413);
        assert_eq!(ProxyError::InvalidClientKey.facts().status, 401);
        assert_eq!(ProxyError::UpstreamRejectedKey.facts().status, 502);
        assert_eq!(ProxyError::Internal("x").facts().status, 500);
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
