//! The inbound check of `PROXY_CLIENT_KEYS`: clients prove they may spend the server's key,
//! and the key they present names them for the access log, the metrics and the limits. An
//! entry may carry the client's own limits after its key: `web:ck-1 rate=600 in_flight=20
//! token_budget=2000000/day`.

use std::fmt;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::client_limits::{Budget, LimitSettings, Rate};

/// The name every client has when no client keys are configured.
pub(crate) const ANONYMOUS: &str = "anonymous";
/// The name a request is counted under before, or without, a valid key.
pub(crate) const UNAUTHENTICATED: &str = "unauthenticated";

/// Azure OpenAI's key header, which its SDKs send instead of `Authorization`.
pub(crate) static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// Client keys and their names. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub(crate) struct ClientKeys {
    entries: Vec<ClientKey>,
}

#[derive(Clone)]
struct ClientKey {
    client: Client,
    key: Box<[u8]>,
    /// Whether the entry names its client; a bare key's name is its place in the list.
    named: bool,
}

/// A client a key admitted: its name, and the limits its entry sets (the rest are the
/// `PROXY_CLIENT_*` defaults).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Client {
    pub name: Arc<str>,
    pub limits: LimitSettings,
}

/// The attributes an entry may carry after its key.
const ATTRIBUTES: &str = "rate, burst, in_flight, token_budget";

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKeys({} keys)", self.entries.len())
    }
}

/// Why a list of client keys cannot be used. Never holds a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyListError(pub String);

impl ClientKeys {
    /// Parses entries such as `web:ck-123`, a bare `ck-123`, either followed by limits, checking
    /// that every key is printable, every name is a plain word, neither repeats, and every
    /// limit is one this proxy knows with a value it can use.
    pub(crate) fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<ClientKeys, KeyListError> {
        let mut parsed: Vec<ClientKey> = Vec::new();
        for (line, entry) in entries.into_iter().enumerate() {
            let (name, rest) = match entry.split_once(':') {
                Some((name, rest)) => (Some(name.trim()), rest),
                None => (None, entry),
            };
            let mut words = rest.split_whitespace();
            let key = words.next().unwrap_or("");
            let which = line + 1;
            let name_given = name.is_some();
            let limits =
                parse_limits(words).map_err(|m| KeyListError(format!("entry {which}: {m}")))?;
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
                // A limit's count is kept under the client's name: a name that moved with the
                // list would hand one client's spent budget to another.
                None if limits != LimitSettings::default() => {
                    return Err(KeyListError(format!(
                        "entry {which}: a key with limits needs a name (name:key ...), so that its count stays its own when the list changes"
                    )))
                }
                None => Arc::from(derived_name(which)),
            };
            if parsed.iter().any(|e| e.client.name == name) {
                return Err(KeyListError(format!(
                    "entry {which}: the name {name:?} is used twice"
                )));
            }
            if parsed.iter().any(|e| *e.key == *key.as_bytes()) {
                return Err(KeyListError(format!(
                    "entry {which}: the same key is listed twice"
                )));
            }
            parsed.push(ClientKey {
                client: Client { name, limits },
                key: Box::from(key.as_bytes()),
                named: name_given,
            });
        }
        Ok(ClientKeys { entries: parsed })
    }

    /// The places (from 1) of the entries that give a bare key, whose name is its place.
    pub(crate) fn bare_entries(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.named)
            .map(|(i, _)| i + 1)
    }

    /// Whether some entry sets its own token budget.
    pub(crate) fn any_token_budget(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.client.limits.token_budget.is_some())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys themselves, for the panic hook's redaction.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.iter().map(|e| &e.key[..])
    }

    /// The client's name, if it may pass: [`ANONYMOUS`] when no keys are configured, else the
    /// name of the key in `Authorization: Bearer <key>` (or Azure's `api-key: <key>`). Every
    /// key is compared in constant time, so the answer's timing tells nothing about how close
    /// a guess was.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Option<Client> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .or_else(|| headers.get(&API_KEY).map(|v| v.as_bytes().trim_ascii()));
        self.admit_key(presented)
    }

    /// The client's name for a key presented some other way (a WebSocket subprotocol), or
    /// for none: [`ANONYMOUS`] when no keys are configured.
    pub(crate) fn admit_key(&self, presented: Option<&[u8]>) -> Option<Client> {
        if self.entries.is_empty() {
            static ANON: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
            return Some(Client {
                name: ANON.get_or_init(|| Arc::from(ANONYMOUS)).clone(),
                limits: LimitSettings::default(),
            });
        }
        let presented = presented?;
        let mut found = 0u32;
        let mut matched = subtle::Choice::from(0);
        for (index, entry) in self.entries.iter().enumerate() {
            let equal = entry.key.as_ref().ct_eq(presented);
            found = u32::conditional_select(&found, &(index as u32), equal);
            matched |= equal;
        }
        bool::from(matched).then(|| self.entries[found as usize].client.clone())
    }
}

/// The limits after an entry's key: `rate=N` (a minute), `burst=N`, `in_flight=N`,
/// `token_budget=N/minute|hour|day`. A message never repeats what it could not read, which
/// might be part of a key with a space in it.
fn parse_limits<'a>(words: impl Iterator<Item = &'a str>) -> Result<LimitSettings, String> {
    let mut limits = LimitSettings::default();
    let (mut per_minute, mut burst) = (None, None);
    let mut seen: Vec<&str> = Vec::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "after the key, only limits of the form name=value may follow ({ATTRIBUTES}); a key holds no spaces"
            ));
        };
        let known = ["rate", "burst", "in_flight", "token_budget"];
        let Some(name) = known.iter().copied().find(|k| *k == name) else {
            return Err(format!("an unknown limit; the limits are {ATTRIBUTES}"));
        };
        if seen.contains(&name) {
            return Err(format!("{name} is given twice"));
        }
        seen.push(name);
        let count = || -> Result<u32, String> {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a whole number of at least 1"))
        };
        match name {
            "rate" => per_minute = Some(count()?),
            "burst" => burst = Some(count()?),
            "in_flight" => limits.max_in_flight = Some(count()?),
            _ => {
                limits.token_budget =
                    Some(Budget::parse(value).map_err(|m| format!("token_budget {m}"))?)
            }
        }
    }
    limits.rate = match (per_minute, burst) {
        (None, None) => None,
        (None, Some(_)) => return Err("burst needs rate".to_owned()),
        (Some(per_minute), burst) => Some(Rate {
            per_minute,
            burst: burst.unwrap_or_else(|| Rate::default_burst(per_minute)),
        }),
    };
    Ok(limits)
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

    fn name(client: Option<Client>) -> Option<Arc<str>> {
        client.map(|c| c.name)
    }

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
            name(ClientKeys::default().admit(&HeaderMap::new())).as_deref(),
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
        assert_eq!(
            name(k.admit(&with_auth("Bearer ck-web"))).as_deref(),
            Some("web")
        );
        assert_eq!(
            name(k.admit(&with("api-key", "ck-batch"))).as_deref(),
            Some("batch")
        );
        let bare = k.admit(&with_auth("Bearer ck-bare")).unwrap();
        assert_eq!(&*bare.name, "key-3");
        assert_eq!(
            name(keys(&["ck-bare"]).admit(&with_auth("Bearer ck-bare"))).as_deref(),
            Some("key-1")
        );
    }

    #[test]
    fn an_entry_carries_its_own_limits() {
        let k = keys(&[
            "web:ck-web rate=600 in_flight=20 token_budget=2000000/day",
            "slow:ck-slow  burst=3 rate=6",
            "plain:ck-plain",
        ]);
        let web = k.admit(&with_auth("Bearer ck-web")).unwrap();
        assert_eq!(web.limits.max_in_flight, Some(20));
        assert_eq!(
            web.limits.rate,
            Some(Rate {
                per_minute: 600,
                burst: 100
            })
        );
        assert_eq!(web.limits.token_budget.unwrap().to_string(), "2000000/day");
        let slow = k.admit(&with_auth("Bearer ck-slow")).unwrap();
        assert_eq!(
            slow.limits.rate,
            Some(Rate {
                per_minute: 6,
                burst: 3
            })
        );
        let plain = k.admit(&with_auth("Bearer ck-plain")).unwrap();
        assert_eq!(plain.limits, LimitSettings::default());
        assert!(k.any_token_budget());
        for bad in [
            "web:ck-1 rte=5",
            "web:ck-1 rate=0",
            "web:ck-1 rate=5 rate=6",
            "web:ck-1 burst=5",
            "web:ck-1 token_budget=5/week",
            "web:ck-1 in_flight=x",
            "web:ck-1 ck-2",
            // A limit is counted under a name, which a bare key's place would not keep.
            "ck-1 rate=5",
        ] {
            let err = ClientKeys::parse([bad]).unwrap_err();
            assert!(!err.0.contains("ck-"), "{err:?}");
            assert!(err.0.starts_with("entry 1: "), "{err:?}");
        }
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
