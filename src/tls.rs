//! The TLS client configuration every outbound connection starts from (to an upstream, to an
//! OTLP collector): rustls on ring with its safe protocol versions, trusting the built-in
//! webpki roots and the operator's extra roots beside them, never instead of them.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// The webpki roots, and `extra` added to them.
pub(crate) fn roots(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::RootCertStore, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert.clone())?;
    }
    Ok(roots)
}

/// A client configuration trusting [`roots`], without a client certificate and without ALPN.
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots(extra_roots)?)
    .with_no_client_auth())
}
