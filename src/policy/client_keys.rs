//! The inbound check of `PROXY_CLIENT_KEYS`: clients prove they may spend the server's key,
//! and the key they present names them for the access log, the metrics and the limits.

use std::fmt;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The name every client has when no client keys are configured.
pub const ANONYMOUS: &str = "anonymous";
/// The name a request is counted under before, or without, a valid key.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Azure OpenAI's key header, which its SDKs send instead of `Authorization`.
pub static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// Client keys and their names. `Debug` shows only how many there are.
#[derive(Clone)]
pub struct ClientKeys {
    entries: Vec<ClientKey>,
}

#[derive(Clone)]
struct ClientKey {
    name: Arc<str>,
    key: Box<[u8]>,
}

impl Default for ClientKeys {
    fn default() -> ClientKeys {
        ClientKeys::new(Vec::new())
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKeys({} keys)", self.entries.len())
    }
}

/// Why a list of client keys cannot be used. Never holds a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListError(pub String);

impl ClientKeys {
    /// `(name, key)` pairs, as read from `PROXY_CLIENT_KEYS` or its file; `name` is `None` for
    /// a bare key.
    pub fn new(entries: Vec<(Arc<str>, Box<[u8]>)>) -> ClientKeys {
        ClientKeys {
            entries: entries
                .into_iter()
                .map(|(name, key)| ClientKey { name, key })
                .collect(),
        }
    }

    /// Parses entries such as `web:ck-123` or a bare `ck-123`, checking that every key is
    /// printable, every name is a plain word, and neither repeats.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<ClientKeys, KeyListError> {
        let mut parsed: Vec<(Arc<str>, Box<[u8]>)> = Vec::new();
        for (line, entry) in entries.into_iter().enumerate() {
            let (name, key) = match entry.split_once(':') {
                Some((name, key)) => (Some(name.trim()), key.trim()),
                None => (None, entry.trim()),
            };
            let which = line + 1;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyListError(format!(
                    "entry {which}: the key is empty or contains spaces or non-printable characters"
                )));
            }
            let name: Arc<str> = match name {
                Some(name) if is_plain_name(name) => Arc::from(name),
                Some(_) => {
                    return Err(KeyListError(format!(
                        "entry {which}: a name is 1 to 64 letters, digits, '.', '_' or '-', and not {ANONYMOUS:?} or {UNAUTHENTICATED:?}"
                    )))
                }
                None => Arc::from(derived_name(which)),
            };
            if parsed.iter().any(|(n, _)| *n == name) {
                return Err(KeyListError(format!(
                    "entry {which}: the name {name:?} is used twice"
                )));
            }
            if parsed.iter().any(|(_, k)| **k == *key.as_bytes()) {
                return Err(KeyListError(format!(
                    "entry {which}: the same key is listed twice"
                )));
            }
            parsed.push((name, Box::from(key.as_bytes())));
        }
        Ok(ClientKeys::new(parsed))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys themselves, for the panic hook's redaction.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| &e.key[..])
    }

    /// The client's name, if it may pass: [`ANONYMOUS`] when no keys are configured, else the
    /// name of the key in `Authorization: Bearer <key>` (or Azure's `api-key: <key>`). Every
    /// key is compared in constant time, so the answer's timing tells nothing about how close
    /// a guess was.
    pub fn admit(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .or_else(|| headers.get(&API_KEY).map(|v| v.as_bytes().trim_ascii()));
        self.admit_key(presented)
    }

    /// The client's name for a key presented some other way (a WebSocket subprotocol), or
    /// for none: [`ANONYMOUS`] when no keys are configured.
    pub fn admit_key(&self, presented: Option<&[u8]>) -> Option<Arc<str>> {
        if self.entries.is_empty() {
            static ANON: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
            return Some(ANON.get_or_init(|| Arc::from(ANONYMOUS)).clone());
        }
        let presented = presented?;
        let mut found = 0u32;
        let mut matched = subtle::Choice::from(0);
        for (index, entry) in self.entries.iter().enumerate() {
            let equal = entry.key.as_ref().ct_eq(presented);
            found = u32::conditional_select(&found, &(index as u32), equal);
            matched |= equal;
        }
        bool::from(matched).then(|| self.entries[found as usize].name.clone())
    }
}

/// A name is a word fit for a log field and a metric label.
fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != ANONYMOUS
        && name != UNAUTHENTICATED
}

/// The name of a bare key: `key-` and its entry's place in the list, counted from 1. It says
/// nothing about the key, so a name seen in `/metrics` or a log line is no help in guessing
/// one (a hash of the key would be a test for guesses). Name a key to keep its name when the
/// list is reordered.
fn derived_name(entry: usize) -> String {
    format!("key-{entry}")
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
        ClientKeys::parse(list.iter().copied()).unwrap()
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    fn with_auth(value: &'static str) -> HeaderMap {
        with("authorization", value)
    }

    #[test]
    fn no_keys_admits_everyone_as_anonymous() {
        assert_eq!(
            ClientKeys::default().admit(&HeaderMap::new()).as_deref(),
            Some(ANONYMOUS)
        );
    }

    #[test]
    fn only_a_listed_bearer_token_is_admitted() {
        let k = keys(&["ck-one", "ck-two"]);
        assert!(k.admit(&with_auth("Bearer ck-two")).is_some());
        assert!(k.admit(&with_auth("bearer ck-one")).is_some());
        assert!(k.admit(&with_auth("Bearer ck-three")).is_none());
        assert!(k.admit(&with_auth("Bearer ck-on")).is_none());
        assert!(k.admit(&with_auth("Basic ck-one")).is_none());
        assert!(k.admit(&with_auth("Bearer")).is_none());
        assert!(k.admit(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_key_names_the_client() {
        let k = keys(&["web:ck-web", "batch : ck-batch", "ck-bare"]);
        assert_eq!(k.admit(&with_auth("Bearer ck-web")).as_deref(), Some("web"));
        assert_eq!(
            k.admit(&with("api-key", "ck-batch")).as_deref(),
            Some("batch")
        );
        let bare = k.admit(&with_auth("Bearer ck-bare")).unwrap();
        assert_eq!(&*bare, "key-3");
        assert_eq!(
            keys(&["ck-bare"])
                .admit(&with_auth("Bearer ck-bare"))
                .as_deref(),
            Some("key-1")
        );
    }

    #[test]
    fn bad_lists_are_refused_without_showing_a_key() {
        for list in [
            &["web:ck-1", "web:ck-2"][..],
            &["a:ck-1", "b:ck-1"],
            &["web:"],
            &["we b:ck-1"],
            &["anonymous:ck-1"],
            &["ck 1"],
        ] {
            let err = ClientKeys::parse(list.iter().copied()).unwrap_err();
            assert!(!err.0.contains("ck-"), "{err:?}");
        }
    }
}
