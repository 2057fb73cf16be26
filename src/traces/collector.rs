//! The client that carries exports to the collector: hyper's, with rustls for an `https://`
//! collector, so that traces add no second HTTP stack. The collector is reached directly,
//! never through the egress proxy, and its answer is read up to a small bound.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

use crate::config::TraceSettings;

/// The most of a collector's answer that is read: an `ExportTraceServiceResponse` is a few
/// bytes, or a short message about partial success.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub(super) struct Collector {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &settings.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
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
            headers: settings.headers.clone(),
            timeout: settings.timeout,
        })
    }
}

#[async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        for (name, value) in &self.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("the collector did not answer within {:?}", self.timeout))??;
        if !response.status().is_success() {
            return Err(format!("the collector answered {}", response.status()).into());
        }
        Ok(response)
    }
}
