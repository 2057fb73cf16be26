//! The forward proxy on the way to the upstream: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
//! `NO_PROXY`, in either case, read as curl reads them.

use std::collections::HashMap;
use std::fmt;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use super::values::{invalid, ConfigError};

/// An HTTP forward proxy, reached with `CONNECT`.
#[derive(Clone)]
pub(crate) struct EgressProxy {
    /// `http://host:port/`, without credentials.
    pub uri: Uri,
    /// `Basic ...` from the credentials in the proxy URL, marked sensitive.
    pub authorization: Option<HeaderValue>,
}

impl EgressProxy {
    /// The proxy as logs and answers may name it: no credentials.
    pub(crate) fn name(&self) -> String {
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
pub(crate) const EGRESS_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Applies curl's rules, through hyper-util's matcher: the lower-case name wins over the
/// upper-case one, `ALL_PROXY` is the fallback, and `NO_PROXY` exempts hosts and networks.
pub(super) fn egress_proxy(
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
