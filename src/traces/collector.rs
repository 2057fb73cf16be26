//! The client that carries exports to the collector: hyper's, with rustls for an `https://`
//! collector, so that traces add no second HTTP stack. The collector is reached directly,
//! never through the egress proxy, and its answer is read up to a small bound.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::TraceSettings;

/// The most of a collector's answer that is read: an `ExportTraceServiceResponse` is a few
/// bytes, or a short message about partial success.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub(super) struct Collector {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

/// Shows no header value: they may hold the collector's token.
impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl Collector {
    pub(super) fn new(settings: &TraceSettings) -> Result<Collector, String> {
        let tls = crate::tls::client_config(&settings.extra_roots)
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Collector {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint: settings.endpoint.clone(),
            headers: settings.headers.clone(),
            timeout: settings.timeout,
        })
    }
}

impl Collector {
    /// POSTs one encoded `ExportTraceServiceRequest`; an error says why it was not accepted,
    /// never with a header's value.
    pub(super) async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let mut request = Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("cannot reach the collector: {}", with_causes(&e)))?;
            let status = response.status();
            // Read to its end, within a bound, so that the connection is kept.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("the collector did not answer within {:?}", self.timeout))?
    }
}

/// An error and its causes, `: `-joined: hyper-util's own says only "client error (Connect)".
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
