//! Header rewriting, in both directions. Pure: no sockets.
//!
//! Hop-by-hop headers describe one connection and die with it; everything else passes through
//! untouched, so `Content-Type` keeps its multipart boundary and a gzip answer stays gzip.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::client_keys::API_KEY;

/// `X-Client-Request-Id`: the header OpenAI records for support, sent both ways.
pub(crate) static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static OPENAI_ORGANIZATION: HeaderName = HeaderName::from_static("openai-organization");
static OPENAI_PROJECT: HeaderName = HeaderName::from_static("openai-project");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which header carries the server's key upstream: `PROXY_UPSTREAM_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// `Authorization: Bearer <key>`, as OpenAI takes it.
    Bearer,
    /// `api-key: <key>`, as Azure OpenAI takes it, with no `Authorization` at all.
    ApiKey,
}

impl UpstreamAuth {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamAuth::Bearer => "bearer",
            UpstreamAuth::ApiKey => "api-key",
        }
    }
}

/// An upstream's key as it goes up: in the header its `auth` names, marked sensitive so that
/// neither `Debug` nor HTTP/2's HPACK table ever holds it in the clear. Made once per key, not
/// per request.
#[derive(Debug, Clone)]
pub struct Credential {
    auth: UpstreamAuth,
    value: HeaderValue,
}

impl Credential {
    pub fn new(auth: UpstreamAuth, key: &HeaderValue) -> Credential {
        let mut value = match auth {
            UpstreamAuth::Bearer => {
                let mut bytes = Vec::with_capacity(7 + key.len());
                bytes.extend_from_slice(b"Bearer ");
                bytes.extend_from_slice(key.as_bytes());
                // A valid header value after a fixed printable prefix is still valid.
                HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| key.clone())
            }
            UpstreamAuth::ApiKey => key.clone(),
        };
        value.set_sensitive(true);
        Credential { auth, value }
    }

    /// Puts the key in the request's headers, where [`rewrite_request`] left none.
    pub fn put(&self, headers: &mut HeaderMap) {
        match self.auth {
            UpstreamAuth::Bearer => headers.insert(header::AUTHORIZATION, self.value.clone()),
            UpstreamAuth::ApiKey => headers.insert(API_KEY.clone(), self.value.clone()),
        };
    }
}

/// The headers the proxy itself puts on every upstream request, besides the key.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity {
    pub organization: Option<HeaderValue>,
    pub project: Option<HeaderValue>,
    /// This proxy's `Via` entry, from [`via_entry`].
    pub via: HeaderValue,
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are collected first: removing while iterating would borrow
    // the map twice. Values that are not tokens name nothing we could remove.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Makes a client's request headers fit to send upstream: every key the client presented is
/// gone, and the upstream's goes in with [`Credential::put`].
pub fn rewrite_request(
    headers: &mut HeaderMap,
    identity: &UpstreamIdentity,
    request_id: &HeaderValue,
) {
    remove_hop_by_hop(headers);
    // The client's Host names us. hyper-util's client sets the upstream's authority itself:
    // `Host` on HTTP/1.1, `:authority` on HTTP/2, where a Host header does not belong.
    headers.remove(header::HOST);
    // hyper has already answered `Expect: 100-continue` on the client's side.
    headers.remove(header::EXPECT);
    // Whatever the client presented, in either header, stays here.
    headers.remove(&API_KEY);
    headers.remove(header::AUTHORIZATION);
    // The server's key decides the organization and project, never the client.
    headers.remove(&OPENAI_ORGANIZATION);
    headers.remove(&OPENAI_PROJECT);
    if let Some(org) = &identity.organization {
        headers.insert(OPENAI_ORGANIZATION.clone(), org.clone());
    }
    if let Some(project) = &identity.project {
        headers.insert(OPENAI_PROJECT.clone(), project.clone());
    }
    headers.insert(CLIENT_REQUEST_ID.clone(), request_id.clone());
    headers.append(header::VIA, identity.via.clone());
}

/// A proxy's `Via` entry (RFC 9110, section 7.6.3): `1.1 memoctopus-` and 16 hex digits drawn
/// when the proxy starts, so that a request that comes back through the same proxy is known,
/// while a chain of different proxies is not mistaken for a loop.
pub fn via_entry() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    HeaderValue::from_str(&format!("1.1 memoctopus-{n:016x}"))
        .unwrap_or(HeaderValue::from_static("1.1 memoctopus"))
}

/// Whether the request already went through the proxy whose entry is `via`, in any case: a
/// hop in between may have rewritten it (header values are case-insensitive to many proxies).
pub(crate) fn passed_through(headers: &HeaderMap, via: &HeaderValue) -> bool {
    let ours = via.as_bytes().get(4..).unwrap_or_default();
    headers.get_all(header::VIA).iter().any(|v| {
        v.as_bytes()
            .windows(ours.len())
            .any(|w| w.eq_ignore_ascii_case(ours))
    })
}

/// Makes an upstream's response headers fit to send to the client.
pub fn rewrite_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    remove_hop_by_hop(headers);
    headers.insert(CLIENT_REQUEST_ID.clone(), request_id.clone());
}

/// The client's own request id, if it sent a sane one: `X-Client-Request-Id`, else
/// `X-Request-Id`, printable ASCII and at most 512 bytes (OpenAI's own limit).
pub(crate) fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    [&CLIENT_REQUEST_ID, &REQUEST_ID]
        .into_iter()
        .filter_map(|name| headers.get(name))
        .find(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
}

fn is_sane_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 512 && id.iter().all(|b| b.is_ascii_graphic())
}

/// OpenAI's own `x-request-id` on a response, for the access log, if it looks like one: at
/// most 128 letters, digits, `-`, `_`, `.` or `:` (OpenAI's are `req_` and 32 hex digits), and
/// nothing that starts like a key. The upstream chooses this value and the proxy writes it into
/// every log line, so anything else is logged as `invalid`.
pub(crate) fn upstream_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    static INVALID: HeaderValue = HeaderValue::from_static("invalid");
    let value = headers.get(&REQUEST_ID)?;
    let id = value.as_bytes();
    let sane = (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !id.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(b"sk-"));
    Some(if sane { value.clone() } else { INVALID.clone() })
}

/// The request body's length as its `Content-Length` declares it, if it does.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

pub fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> UpstreamIdentity {
        UpstreamIdentity {
            organization: Some(HeaderValue::from_static("org-server")),
            project: None,
            via: via_entry(),
        }
    }

    fn server_key() -> Credential {
        Credential::new(UpstreamAuth::Bearer, &HeaderValue::from_static("sk-server"))
    }

    #[test]
    fn request_gets_our_key_and_loses_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        h.insert(header::HOST, HeaderValue::from_static("localhost:8000"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("openai-project", HeaderValue::from_static("proj-client"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=abc"),
        );
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert("x-request-id", HeaderValue::from_static("client-req"));
        let id = HeaderValue::from_static("req-1");
        h.insert("api-key", HeaderValue::from_static("client-azure-key"));
        rewrite_request(&mut h, &identity(), &id);
        server_key().put(&mut h);

        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-server");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        for gone in [
            "host",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "openai-project",
            "api-key",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h["openai-organization"], "org-server");
        assert_eq!(h[header::CONTENT_TYPE], "multipart/form-data; boundary=abc");
        assert_eq!(h[header::ACCEPT_ENCODING], "gzip");
        assert_eq!(h["x-request-id"], "client-req");
        assert_eq!(h["x-client-request-id"], "req-1");
    }

    #[test]
    fn api_key_auth_sends_the_key_in_api_key_and_no_authorization() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer ck"));
        let identity = UpstreamIdentity {
            organization: None,
            project: None,
            via: via_entry(),
        };
        let key = Credential::new(UpstreamAuth::ApiKey, &HeaderValue::from_static("azure-key"));
        rewrite_request(&mut h, &identity, &HeaderValue::from_static("r"));
        key.put(&mut h);
        assert_eq!(h["api-key"], "azure-key");
        assert!(h["api-key"].is_sensitive());
        assert!(!h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn response_keeps_end_to_end_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("99"),
        );
        h.insert("openai-processing-ms", HeaderValue::from_static("12"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        rewrite_response(&mut h, &HeaderValue::from_static("req-1"));
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert_eq!(h["x-ratelimit-remaining-requests"], "99");
        assert_eq!(h["openai-processing-ms"], "12");
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        assert!(!h.contains_key(header::CONNECTION));
        assert_eq!(h["x-client-request-id"], "req-1");
    }

    #[test]
    fn request_ids_must_be_sane() {
        let mut h = HeaderMap::new();
        assert_eq!(client_request_id(&h), None);
        h.insert("x-request-id", HeaderValue::from_static("abc-1"));
        assert_eq!(client_request_id(&h).unwrap(), "abc-1");
        h.insert(
            "x-client-request-id",
            HeaderValue::from_static("with space"),
        );
        assert_eq!(client_request_id(&h).unwrap(), "abc-1");
        h.insert(
            "x-client-request-id",
            HeaderValue::from_str(&"a".repeat(513)).unwrap(),
        );
        assert_eq!(client_request_id(&h).unwrap(), "abc-1");
        h.insert("x-client-request-id", HeaderValue::from_static("mine"));
        assert_eq!(client_request_id(&h).unwrap(), "mine");
        h.insert(
            "x-client-request-id",
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        assert_eq!(client_request_id(&h).unwrap(), "abc-1");
    }
}
