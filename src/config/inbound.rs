//! The inbound settings: where clients connect (`HOST`, `PORT`, `PROXY_LISTEN_BACKLOG`,
//! `PROXY_MAX_CONNECTIONS`), HTTPS for them (`PROXY_TLS_CERT`, `PROXY_TLS_KEY`), browsers
//! (`PROXY_CORS_ORIGINS`) and the separate metrics listener (`PROXY_METRICS_ADDR`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::{HeaderValue, Uri};

use super::settings::Found;
use super::values::{ConfigError, Value};
use crate::policy::cors::CorsOrigins;

/// `HOST`:`PORT`.
pub(super) fn listen(found: &Found<'_>) -> Result<SocketAddr, ConfigError> {
    let host = found.host.or_default();
    // `localhost` is what people write for loopback; other names would need a lookup.
    let host: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                found
                    .host
                    .invalid(format!("{host:?} is not an IP address or localhost"))
            })?,
    };
    let port = found.port.number::<u16>()?;
    Ok(SocketAddr::new(host, port))
}

/// `PROXY_METRICS_ADDR`.
pub(super) fn metrics_addr(value: Value<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    value
        .get()
        .map(|v| {
            v.parse::<SocketAddr>().map_err(|_| {
                value.invalid(format!("{v:?} is not an address such as 127.0.0.1:9090"))
            })
        })
        .transpose()
}

/// `PROXY_TLS_CERT` and `PROXY_TLS_KEY`: both or neither.
pub(super) fn tls(
    cert: Value<'_>,
    key: Value<'_>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    match (cert.get(), key.get()) {
        (None, None) => Ok(None),
        (Some(cert_path), Some(key_path)) => {
            load_tls((cert, Path::new(cert_path)), (key, Path::new(key_path))).map(Some)
        }
        (Some(_), None) => Err(key.invalid("is required when PROXY_TLS_CERT is set")),
        (None, Some(_)) => Err(cert.invalid("is required when PROXY_TLS_KEY is set")),
    }
}

/// Reads a PEM certificate chain and private key into a server configuration that offers
/// HTTP/2 and HTTP/1.1 by ALPN.
fn load_tls(
    (cert_setting, cert): (Value<'_>, &Path),
    (key_setting, key): (Value<'_>, &Path),
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain_pem = super::keys::read(cert).map_err(|m| cert_setting.invalid(m))?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_setting.invalid(format!("cannot read {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(cert_setting.invalid(format!("{} holds no certificate", cert.display())));
    }
    let key_pem = super::keys::read(key).map_err(|m| key_setting.invalid(m))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        key_setting.invalid(format!(
            "cannot read a private key from {}: {e}",
            key.display()
        ))
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| cert_setting.invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| {
        key_setting.invalid(format!(
            "does not match the certificate or is unusable: {e}"
        ))
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

pub(super) fn cors_origins(value: Value<'_>) -> Result<Option<CorsOrigins>, ConfigError> {
    let origins: Vec<&str> = value.list().collect();
    if origins.is_empty() {
        return Ok(None);
    }
    if origins.contains(&"*") {
        return Ok(Some(CorsOrigins::Any));
    }
    let mut list = Vec::with_capacity(origins.len());
    for origin in origins {
        let uri: Uri = origin
            .parse()
            .map_err(|_| value.invalid(format!("{origin:?} is not an origin")))?;
        let is_origin = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && !origin
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .contains('/');
        if !is_origin {
            return Err(value.invalid(format!(
                "{origin:?} is not an origin such as https://app.example.com"
            )));
        }
        list.push(HeaderValue::from_str(origin).map_err(|_| value.invalid("bad characters"))?);
    }
    Ok(Some(CorsOrigins::List(list)))
}
