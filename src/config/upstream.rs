//! The upstream settings: where requests go (`OPENAI_BASE_URL`), which certificates are
//! trusted there (`PROXY_UPSTREAM_CA`), which protocol is spoken (`PROXY_UPSTREAM_PROTOCOL`,
//! `PROXY_UPSTREAM_MAX_STREAMS`), and the forward proxy on the way (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{invalid, parse_number, ConfigError};

/// The upstream, parsed once.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The base URL's path without a trailing slash, such as `/v1`, or empty.
    pub base_path: String,
    /// `PROXY_UPSTREAM_PROTOCOL`: what to offer in ALPN, and which pool serves requests.
    pub protocol: Protocol,
    /// `PROXY_UPSTREAM_MAX_STREAMS`: the most streams one HTTP/2 connection carries, below
    /// the peer's own limit; past it another connection opens.
    pub max_streams: usize,
    /// `PROXY_UPSTREAM_CA`: certificates trusted in addition to the built-in roots, for a
    /// corporate TLS-intercepting proxy or a private upstream.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The forward proxy the upstream is reached through, if the environment names one and
    /// `NO_PROXY` does not exempt the upstream.
    pub egress: Option<EgressProxy>,
}

/// Which HTTP version is spoken to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ALPN decides: HTTP/2 where the upstream offers it, HTTP/1.1 otherwise. A plain-HTTP
    /// upstream gets HTTP/1.1.
    Auto,
    /// HTTP/1.1 only: ALPN offers nothing else.
    Http1,
    /// HTTP/2 only: ALPN offers only `h2`; a plain-HTTP upstream gets h2c (prior knowledge).
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// An HTTP forward proxy, reached with `CONNECT`.
#[derive(Clone)]
pub struct EgressProxy {
    /// `http://host:port/`, without credentials.
    pub uri: Uri,
    /// `Basic ...` from the credentials in the proxy URL, marked sensitive.
    pub authorization: Option<HeaderValue>,
}

impl EgressProxy {
    /// The proxy as logs and answers may name it: no credentials.
    pub fn name(&self) -> String {
        self.uri
            .authority()
            .map_or_else(|| self.uri.to_string(), |a| a.to_string())
    }
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("uri", &self.uri)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "masked"),
            )
            .finish()
    }
}

/// The forward-proxy variables, in both cases as curl reads them.
pub const EGRESS_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The raw upstream settings, as found.
pub struct RawUpstream<'a> {
    pub base_url: Option<&'a str>,
    pub ca: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub max_streams: &'a Option<String>,
    /// The forward-proxy variables present, by exact name.
    pub egress: &'a HashMap<String, String>,
}

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

impl RawUpstream<'_> {
    pub fn validate(&self) -> Result<Upstream, ConfigError> {
        let (scheme, authority, base_path) =
            parse_base_url(self.base_url.unwrap_or(DEFAULT_BASE_URL))?;
        let protocol = match self.protocol.unwrap_or("auto") {
            "auto" => Protocol::Auto,
            "http1" => Protocol::Http1,
            "http2" => Protocol::Http2,
            other => {
                return Err(invalid(
                    "PROXY_UPSTREAM_PROTOCOL",
                    format!("{other:?} is none of auto, http1, http2"),
                ))
            }
        };
        let max_streams = parse_number::<usize>(
            "PROXY_UPSTREAM_MAX_STREAMS",
            self.max_streams,
            DEFAULT_MAX_STREAMS,
        )?;
        if max_streams == 0 {
            return Err(invalid("PROXY_UPSTREAM_MAX_STREAMS", "must be at least 1"));
        }
        let extra_roots = match self.ca {
            None => Vec::new(),
            Some(path) => load_roots(Path::new(path))?,
        };
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| invalid("OPENAI_BASE_URL", e.to_string()))?;
        let egress = egress_proxy(self.egress, &target)?;
        Ok(Upstream {
            scheme,
            authority,
            base_path,
            protocol,
            max_streams,
            extra_roots,
            egress,
        })
    }
}

/// RFC 9113 asks peers to allow at least 100 concurrent streams; OpenAI's edge and nginx
/// allow about that many.
const DEFAULT_MAX_STREAMS: usize = 100;

fn parse_base_url(value: &str) -> Result<(Scheme, Authority, String), ConfigError> {
    const NAME: &str = "OPENAI_BASE_URL";
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(NAME, format!("{value:?} is not a URL: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => {
            return Err(invalid(
                NAME,
                format!("{value:?} must start with http:// or https://"),
            ))
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| invalid(NAME, format!("{value:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            NAME,
            "must not carry credentials; the key goes in OPENAI_API_KEY",
        ));
    }
    if uri.query().is_some() {
        return Err(invalid(NAME, "must not have a query string"));
    }
    Ok((
        scheme,
        authority,
        uri.path().trim_end_matches('/').to_owned(),
    ))
}

/// Reads every certificate in a PEM file; a file without one is a mistake, not an empty set.
fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    const NAME: &str = "PROXY_UPSTREAM_CA";
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(NAME, format!("cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            NAME,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    // Each must parse as a trust anchor, so that a wrong file fails here and not per request.
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            invalid(
                NAME,
                format!("{} holds an unusable certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(certs)
}

/// Applies curl's rules, through hyper-util's matcher: the lower-case name wins over the
/// upper-case one, `ALL_PROXY` is the fallback, and `NO_PROXY` exempts hosts and networks.
fn egress_proxy(
    vars: &HashMap<String, String>,
    target: &Uri,
) -> Result<Option<EgressProxy>, ConfigError> {
    let pick = |lower: &str, upper: &str| -> String {
        [lower, upper]
            .iter()
            .filter_map(|name| vars.get(*name))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .unwrap_or("")
            .to_owned()
    };
    let https = pick("https_proxy", "HTTPS_PROXY");
    let http = pick("http_proxy", "HTTP_PROXY");
    let all = pick("all_proxy", "ALL_PROXY");
    let setting = match target.scheme_str() {
        Some("https") if !https.is_empty() => "HTTPS_PROXY",
        Some("http") if !http.is_empty() => "HTTP_PROXY",
        _ => "ALL_PROXY",
    };
    let matcher = Matcher::builder()
        .https(https)
        .http(http)
        .all(all)
        .no(pick("no_proxy", "NO_PROXY"))
        .build();
    let Some(intercept) = matcher.intercept(target) else {
        return Ok(None);
    };
    if intercept.uri().scheme_str() != Some("http") {
        return Err(invalid(
            setting,
            "only an http:// forward proxy (reached with CONNECT) is supported",
        ));
    }
    Ok(Some(EgressProxy {
        uri: intercept.uri().clone(),
        authorization: intercept.basic_auth().cloned().map(|mut value| {
            value.set_sensitive(true);
            value
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(vars: &[(&str, &str)], target: &str) -> Option<EgressProxy> {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        egress_proxy(&vars, &target.parse().unwrap()).unwrap()
    }

    #[test]
    fn forward_proxy_follows_curls_rules() {
        let https = "https://api.openai.com/";
        assert!(egress(&[], https).is_none());
        let p = egress(&[("HTTPS_PROXY", "http://user:pa%40ss@proxy:3128")], https).unwrap();
        assert_eq!(p.name(), "proxy:3128");
        assert_eq!(
            p.authorization.unwrap().as_bytes(),
            b"Basic dXNlcjpwYUBzcw=="
        );
        let p = egress(
            &[
                ("HTTPS_PROXY", "http://upper:1"),
                ("https_proxy", "http://lower:2"),
            ],
            https,
        )
        .unwrap();
        assert_eq!(p.name(), "lower:2");
        assert_eq!(
            egress(&[("ALL_PROXY", "http://all:3")], https)
                .unwrap()
                .name(),
            "all:3"
        );
        assert!(egress(&[("HTTP_PROXY", "http://p:1")], https).is_none());
        assert!(egress(
            &[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "openai.com")],
            https
        )
        .is_none());
        assert!(egress(
            &[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "127.0.0.0/8")],
            "https://127.0.0.1:8443/"
        )
        .is_none());
    }

    #[test]
    fn debug_hides_proxy_credentials() {
        let p = egress(
            &[("HTTPS_PROXY", "http://user:hunter2@proxy:3128")],
            "https://x/",
        )
        .unwrap();
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("dXNlcjpodW50ZXIy"),
            "{shown}"
        );
    }
}
