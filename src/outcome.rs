//! How things end, named once for the layers that act on them and the metrics that count them.

use std::fmt;

/// How an exchange ended, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    ClientCancelled,
    /// The proxy answered the client itself with a 4xx (no route, bad key, ...).
    Rejected,
    /// A per-client limit answered 429.
    Limited,
    BodyTooLarge,
    ConnectTimeout,
    FirstByteTimeout,
    IdleTimeout,
    TotalTimeout,
    UpstreamUnreachable,
    UpstreamFailed,
    /// Cut when the shutdown grace period ran out.
    Shutdown,
    /// A WebSocket session the client closed (or lost).
    ClientClosed,
    /// A WebSocket session the upstream closed (or lost).
    UpstreamClosed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::Rejected => "rejected",
            Outcome::Limited => "limited",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::FirstByteTimeout => "first_byte_timeout",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::TotalTimeout => "total_timeout",
            Outcome::UpstreamUnreachable => "upstream_unreachable",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Shutdown => "shutdown",
            Outcome::ClientClosed => "client_closed",
            Outcome::UpstreamClosed => "upstream_closed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The head cannot be parsed, or its framing is ambiguous: 400.
    BadRequest(&'static str),
    /// The head is larger than [`MAX_REQUEST_HEAD_BYTES`](crate::bounds::MAX_REQUEST_HEAD_BYTES) or has more than [`MAX_HEADERS`](crate::bounds::MAX_HEADERS)
    /// lines: 431.
    HeadTooLarge,
}

/// Why a request was sent again, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    /// A pooled connection the upstream had just closed; the request was never written.
    StaleConnection,
    /// HTTP/2 `REFUSED_STREAM`: the upstream says it did not process the stream.
    RefusedStream,
    /// HTTP/2 GOAWAY whose last-stream-id is below the stream: not processed.
    GoAway,
    /// The connection could not be made; nothing was sent.
    Connect,
}

impl RetryReason {
    pub(crate) const ALL: [RetryReason; 4] = [
        RetryReason::StaleConnection,
        RetryReason::RefusedStream,
        RetryReason::GoAway,
        RetryReason::Connect,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::RefusedStream => "refused_stream",
            RetryReason::GoAway => "goaway",
            RetryReason::Connect => "connect",
        }
    }
}

/// Where an upstream is, as its calls' trace says: `server.address` and `server.port`, and
/// whether it is Azure OpenAI. Made once per upstream, so that a trace reads it, not parses.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) host: Box<str>,
    pub(crate) port: u16,
    pub(crate) azure: bool,
}

/// A request sent again, for its trace: on the same upstream for a reason that proves the
/// first try went unprocessed, or to the next upstream after `from` refused or failed it.
#[derive(Debug, Clone)]
pub(crate) struct Resent {
    pub(crate) at: std::time::SystemTime,
    /// A [`RetryReason`]'s label, or the failover's reason as the metrics label it.
    pub(crate) reason: &'static str,
    /// The upstream left behind, for a failover.
    pub(crate) from: Option<std::sync::Arc<str>>,
}

impl Resent {
    /// Sent again on the same upstream.
    pub(crate) fn retried(reason: RetryReason) -> Resent {
        Resent {
            at: std::time::SystemTime::now(),
            reason: reason.label(),
            from: None,
        }
    }

    /// Sent on to the next upstream.
    pub(crate) fn moved_on(from: std::sync::Arc<str>, reason: &'static str) -> Resent {
        Resent {
            at: std::time::SystemTime::now(),
            reason,
            from: Some(from),
        }
    }
}

/// What went wrong talking to the upstream, for the answer and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Connect,
    ConnectTimeout,
    /// The TLS handshake failed for a reason other than the certificate.
    Tls,
    /// The upstream's certificate was not trusted or not valid for its name.
    Certificate,
    /// The forward proxy could not be reached or refused the `CONNECT`.
    ForwardProxy,
    /// The connection broke or the upstream spoke nonsense after we connected, before the
    /// request could have reached it.
    Reset,
    /// The connection or the stream failed once the request may have reached the upstream,
    /// before the answer's head: it may have been processed.
    AfterSend,
}

/// How the upstream failed, as the `kind` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    Connect,
    Tls,
    Timeout,
    Reset,
    MayHaveBeenProcessed,
}

impl UpstreamErrorKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::MayHaveBeenProcessed => "may_have_been_processed",
        }
    }
}

impl FailureKind {
    /// The `kind` label this failure counts under in `memoctopus_upstream_errors_total`.
    pub(crate) fn counted_as(self) -> UpstreamErrorKind {
        match self {
            FailureKind::Connect | FailureKind::ForwardProxy => UpstreamErrorKind::Connect,
            FailureKind::ConnectTimeout => UpstreamErrorKind::Timeout,
            FailureKind::Tls | FailureKind::Certificate => UpstreamErrorKind::Tls,
            FailureKind::Reset => UpstreamErrorKind::Reset,
            FailureKind::AfterSend => UpstreamErrorKind::MayHaveBeenProcessed,
        }
    }
}

/// Any error, as hyper and the upstream's connectors hand them over.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
