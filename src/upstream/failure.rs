//! What went wrong on the way to the upstream, sorted so that the answer can say whose fault it
//! was: the network, the certificate, the forward proxy, or the upstream itself.

use std::error::Error as StdError;
use std::fmt;

use crate::outcome::{BoxError, FailureKind};

/// A failed upstream call: what kind of failure, and the error itself.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    pub kind: FailureKind,
    pub error: BoxError,
}

impl UpstreamError {
    pub(crate) fn new(kind: FailureKind, error: impl Into<BoxError>) -> UpstreamError {
        UpstreamError {
            kind,
            error: error.into(),
        }
    }

    /// Sorts an error from connecting or sending: a certificate or handshake problem anywhere
    /// in its causes says more than the socket error around it.
    pub(crate) fn classify(default: FailureKind, error: impl Into<BoxError>) -> UpstreamError {
        let error = error.into();
        let mut kind = default;
        let mut source: Option<&(dyn StdError + 'static)> = Some(&*error);
        while let Some(e) = source {
            if e.is::<ConnectTimedOut>() {
                kind = FailureKind::ConnectTimeout;
                break;
            }
            // tokio-rustls wraps the handshake's error in an io::Error, whose `source` skips it.
            let inner = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn StdError + 'static));
            if let Some(tls) = e
                .downcast_ref::<rustls::Error>()
                .or_else(|| inner.and_then(|i| i.downcast_ref::<rustls::Error>()))
            {
                kind = match tls {
                    rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType => FailureKind::Certificate,
                    _ => FailureKind::Tls,
                };
                break;
            }
            source = e.source();
        }
        UpstreamError { kind, error }
    }
}

/// The connect timeout as an error in the chain, so the service can answer 504 for it.
#[derive(Debug)]
pub(crate) struct ConnectTimedOut;

impl fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connect timed out")
    }
}

impl StdError for ConnectTimedOut {}

/// The error and its causes on one line, for messages to the client and the log. It never
/// holds a header value, so it cannot hold the key.
pub(crate) fn describe(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    // rustls's words for plain HTTP where TLS was expected.
    if text.contains("InvalidContentType") {
        return format!(
            "the upstream did not answer in TLS; if it serves plain HTTP on this port, use http:// in OPENAI_BASE_URL ({text})"
        );
    }
    text
}
