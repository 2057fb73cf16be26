//! The inbound settings: where clients connect (`HOST`, `PORT`, `PROXY_LISTEN_BACKLOG`,
//! `PROXY_MAX_CONNECTIONS`), HTTPS for them (`PROXY_TLS_CERT`, `PROXY_TLS_KEY`), browsers
//! (`PROXY_CORS_ORIGINS`) and the separate metrics listener (`PROXY_METRICS_ADDR`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::{HeaderValue, Uri};

use super::values::{comma_list, invalid, parse_number, present, ConfigError};
use crate::policy::cors::CorsOrigins;

/// `HOST`:`PORT`.
pub(super) fn listen(
    host: &Option<String>,
    port: &Option<String>,
) -> Result<SocketAddr, ConfigError> {
    let host = present(host).unwrap_or("0.0.0.0");
    // `localhost` is what people write for loopback; other names would need a lookup.
    let host: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                invalid(
                    "HOST",
                    format!("{host:?} is not an IP address or localhost"),
                )
            })?,
    };
    let port = parse_number::<u16>("PORT", port, 8000)?;
    Ok(SocketAddr::new(host, port))
}

/// A count that must be at least 1, such as `PROXY_MAX_CONNECTIONS`.
pub(super) fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(
    setting: &'static str,
    value: &Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    let n = parse_number::<T>(setting, value, default)?;
    if n == T::from(0) {
        return Err(invalid(setting, "must be at least 1"));
    }
    Ok(n)
}

/// `PROXY_METRICS_ADDR`.
pub(super) fn metrics_addr(value: &Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    present(value)
        .map(|v| {
            v.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "PROXY_METRICS_ADDR",
                    format!("{v:?} is not an address such as 127.0.0.1:9090"),
                )
            })
        })
        .transpose()
}

/// `PROXY_TLS_CERT` and `PROXY_TLS_KEY`: both or neither.
pub(super) fn tls(
    cert: &Option<String>,
    key: &Option<String>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    match (present(cert), present(key)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load_tls(Path::new(cert), Path::new(key)).map(Some),
        (Some(_), None) => Err(invalid(
            "PROXY_TLS_KEY",
            "is required when PROXY_TLS_CERT is set",
        )),
        (None, Some(_)) => Err(invalid(
            "PROXY_TLS_CERT",
            "is required when PROXY_TLS_KEY is set",
        )),
    }
}

/// Reads a PEM certificate chain and private key into a server configuration that offers
/// HTTP/2 and HTTP/1.1 by ALPN.
fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                "PROXY_TLS_CERT",
                format!("cannot read {}: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            "PROXY_TLS_CERT",
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            "PROXY_TLS_KEY",
            format!("cannot read a private key from {}: {e}", key.display()),
        )
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("PROXY_TLS_CERT", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| {
        invalid(
            "PROXY_TLS_KEY",
            format!("does not match the certificate or is unusable: {e}"),
        )
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

pub(super) fn cors_origins(value: &Option<String>) -> Result<Option<CorsOrigins>, ConfigError> {
    let origins: Vec<&str> = comma_list(value).collect();
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
            .map_err(|_| invalid("PROXY_CORS_ORIGINS", format!("{origin:?} is not an origin")))?;
        let is_origin = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && !origin
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .contains('/');
        if !is_origin {
            return Err(invalid(
                "PROXY_CORS_ORIGINS",
                format!("{origin:?} is not an origin such as https://app.example.com"),
            ));
        }
        list.push(
            HeaderValue::from_str(origin)
                .map_err(|_| invalid("PROXY_CORS_ORIGINS", "bad characters"))?,
        );
    }
    Ok(Some(CorsOrigins::List(list)))
}
