//! The upstream settings: where requests go (`OPENAI_BASE_URL`), which certificates are
//! trusted there (`PROXY_UPSTREAM_CA`), which protocol is spoken (`PROXY_UPSTREAM_PROTOCOL`,
//! `PROXY_UPSTREAM_MAX_STREAMS`), how it takes the key (`PROXY_UPSTREAM_AUTH`), what every
//! URL carries (`PROXY_UPSTREAM_QUERY`), who we are there (`OPENAI_ORGANIZATION`,
//! `OPENAI_PROJECT`), and the forward proxy on the way (see [`super::egress`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::egress::{egress_proxy, EgressProxy};
use super::settings::{declared, Found};
use super::values::{invalid, ConfigError, Value};
use crate::policy::headers::UpstreamAuth;
use crate::policy::routes::UpstreamQuery;

/// The upstream, parsed once.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamSettings {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The base URL's path without a trailing slash, such as `/v1`, or empty.
    pub base_path: String,
    /// `PROXY_UPSTREAM_PROTOCOL`: what to offer in ALPN, and which pool serves requests.
    pub protocol: UpstreamProtocol,
    /// `PROXY_UPSTREAM_MAX_STREAMS`: the most streams one HTTP/2 connection carries, below
    /// the peer's own limit; past it another connection opens.
    pub max_streams: usize,
    /// `PROXY_UPSTREAM_CA`: certificates trusted in addition to the built-in roots, for a
    /// corporate TLS-intercepting proxy or a private upstream.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The forward proxy the upstream is reached through, if the environment names one and
    /// `NO_PROXY` does not exempt the upstream.
    pub egress: Option<EgressProxy>,
    /// `PROXY_UPSTREAM_AUTH`: which header carries the server's key.
    pub auth: UpstreamAuth,
    /// `PROXY_UPSTREAM_QUERY`: parameters added to every upstream URL.
    pub query: UpstreamQuery,
    /// Sent as `OpenAI-Organization` when set; the client's own value is never forwarded.
    pub organization: Option<HeaderValue>,
    /// Sent as `OpenAI-Project` when set; the client's own value is never forwarded.
    pub project: Option<HeaderValue>,
}

impl UpstreamSettings {
    /// The upstream's port: the base URL's, or its scheme's default.
    pub(crate) fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }
}

/// Which HTTP version is spoken to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamProtocol {
    /// ALPN decides: HTTP/2 where the upstream offers it, HTTP/1.1 otherwise. A plain-HTTP
    /// upstream gets HTTP/1.1.
    Auto,
    /// HTTP/1.1 only: ALPN offers nothing else.
    Http1,
    /// HTTP/2 only: ALPN offers only `h2`; a plain-HTTP upstream gets h2c (prior knowledge).
    Http2,
}

impl UpstreamProtocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }
}

pub(super) const DEFAULT_BASE_URL: &str = declared::openai_base_url.default;

/// Where requests go and how: `OPENAI_BASE_URL` and the `PROXY_UPSTREAM_*` settings, and
/// `egress`, the forward-proxy variables present, by exact name.
pub(super) fn validate(
    found: &Found<'_>,
    egress: &HashMap<String, String>,
) -> Result<UpstreamSettings, ConfigError> {
    let base_url = found.openai_base_url;
    let (scheme, authority, base_path) = parse_base_url(base_url)?;
    let protocol = found.proxy_upstream_protocol.choice(&[
        ("auto", UpstreamProtocol::Auto),
        ("http1", UpstreamProtocol::Http1),
        ("http2", UpstreamProtocol::Http2),
    ])?;
    let max_streams = found.proxy_upstream_max_streams.at_least_one::<usize>()?;
    let extra_roots = load_roots(found.proxy_upstream_ca)?;
    let target = origin(&scheme, &authority).map_err(|m| base_url.invalid(m))?;
    let egress = egress_proxy(egress, &target)?;
    let auth = found.proxy_upstream_auth.choice(&[
        ("bearer", UpstreamAuth::Bearer),
        ("api-key", UpstreamAuth::ApiKey),
    ])?;
    let query = found.proxy_upstream_query;
    let query = UpstreamQuery::parse(query.get().unwrap_or("")).map_err(|m| query.invalid(m))?;
    Ok(UpstreamSettings {
        scheme,
        authority,
        base_path,
        protocol,
        max_streams,
        extra_roots,
        egress,
        auth,
        query,
        organization: found.openai_organization.header()?,
        project: found.openai_project.header()?,
    })
}

fn parse_base_url(setting: Value<'_>) -> Result<(Scheme, Authority, String), ConfigError> {
    base_url(setting.or_default()).map_err(|m| setting.invalid(m))
}

/// A base URL: `http://` or `https://`, a host, an optional path; no credentials, no query. An
/// OpenAI URL without `/v1` is refused, since OpenAI would answer every request with 404.
pub(super) fn base_url(value: &str) -> Result<(Scheme, Authority, String), String> {
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("{value:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("{value:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials; the key goes in its own setting".to_owned());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".to_owned());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if authority.host().eq_ignore_ascii_case("api.openai.com") && !base_path.starts_with("/v1") {
        return Err(format!(
            "{scheme}://{authority}{base_path} lacks /v1, so OpenAI would answer every request with 404; use {DEFAULT_BASE_URL}"
        ));
    }
    Ok((scheme, authority, base_path))
}

/// `scheme://authority/` of an upstream, as the forward-proxy rules match it.
pub(super) fn origin(scheme: &Scheme, authority: &Authority) -> Result<Uri, String> {
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| e.to_string())
}

/// Reads every certificate in `PROXY_UPSTREAM_CA`'s PEM file, if it is set; a file without one
/// is a mistake, not an empty set.
pub(super) fn load_roots(setting: Value<'_>) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let Some(path) = setting.get().map(Path::new) else {
        return Ok(Vec::new());
    };
    let pem = super::keys::read(path).map_err(|m| setting.invalid(m))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting.invalid(format!("cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(setting.invalid(format!("{} holds no PEM certificate", path.display())));
    }
    // Each must parse as a trust anchor, so that a wrong file fails here and not per request.
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            setting.invalid(format!(
                "{} holds an unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(certs)
}

/// Refuses an upstream that is this proxy's own address: every request would come back here,
/// hop after hop. The proxy and the SDKs read the same `OPENAI_BASE_URL`, and the environment
/// wins over `.env`, so a shell that exports it for the app points the proxy at itself.
pub(super) fn not_this_proxy(
    upstream: &UpstreamSettings,
    listen: SocketAddr,
) -> Result<(), ConfigError> {
    if points_here(upstream, listen) {
        return Err(invalid(
            declared::openai_base_url.name,
            format!(
                "{}://{}{} is this proxy's own address (HOST:PORT {listen}); if your shell exports OPENAI_BASE_URL for the app, unset it where the proxy starts, or set the upstream in the proxy's environment",
                upstream.scheme, upstream.authority, upstream.base_path
            ),
        ));
    }
    Ok(())
}

/// Whether `upstream` is the address the proxy listens on.
pub(super) fn points_here(upstream: &UpstreamSettings, listen: SocketAddr) -> bool {
    let port = upstream.port();
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: Option<IpAddr> = match host {
        "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
        _ => host.parse().ok(),
    };
    let same_host = ip.is_some_and(|ip| {
        ip == listen.ip()
            || (ip.is_loopback() || ip.is_unspecified())
                && (listen.ip().is_unspecified() || listen.ip().is_loopback())
    });
    listen.port() != 0 && port == listen.port() && same_host
}
