//! The inbound check of `PROXY_CLIENT_KEYS`: clients prove they may spend the server's key.

use http::{header, HeaderMap};
use subtle::{Choice, ConstantTimeEq};

use std::fmt;

/// Client bearer tokens. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct ClientKeys(pub Vec<Box<[u8]>>);

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKeys({} keys)", self.0.len())
    }
}

impl ClientKeys {
    /// True when no keys are configured, or when the request carries
    /// `Authorization: Bearer <one of them>`. Every key is compared, in constant time, so the
    /// answer's timing tells nothing about how close a guess was.
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
        else {
            return false;
        };
        let mut matched = Choice::from(0);
        for key in &self.0 {
            matched |= key.as_ref().ct_eq(presented);
        }
        matched.into()
    }
}

/// The token of a `Bearer <token>` credential; the scheme is case-insensitive.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys(list: &[&str]) -> ClientKeys {
        ClientKeys(list.iter().map(|k| Box::from(k.as_bytes())).collect())
    }

    fn with_auth(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn no_keys_admits_everyone() {
        assert!(keys(&[]).admit(&HeaderMap::new()));
    }

    #[test]
    fn only_a_listed_bearer_token_is_admitted() {
        let k = keys(&["ck-one", "ck-two"]);
        assert!(k.admit(&with_auth("Bearer ck-two")));
        assert!(k.admit(&with_auth("bearer ck-one")));
        assert!(!k.admit(&with_auth("Bearer ck-three")));
        assert!(!k.admit(&with_auth("Bearer ck-on")));
        assert!(!k.admit(&with_auth("Basic ck-one")));
        assert!(!k.admit(&with_auth("Bearer")));
        assert!(!k.admit(&HeaderMap::new()));
    }
}
