//! WebSocket upgrades (the Realtime API): which requests ask for one, the headers an upgrade
//! needs on each side, and the browser's key subprotocol. Pure: no sockets.
//!
//! Browsers cannot set headers on a WebSocket, so OpenAI also takes the key as a subprotocol,
//! `openai-insecure-api-key.<key>`. Every such entry is taken out before the request goes
//! upstream: the client's value never reaches OpenAI, and with client keys set it is checked
//! like a bearer token.

use http::header::{self, HeaderMap, HeaderValue};
use http::Version;

/// The prefix of the subprotocol that carries a key.
pub(crate) const KEY_SUBPROTOCOL: &str = "openai-insecure-api-key.";

/// Whether the request asks to become a WebSocket: `Upgrade: websocket` (any case, possibly
/// among other protocols).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|value| names_websocket(value.as_bytes()))
}

/// Whether an `Upgrade` header's value lists `websocket`, in any case.
pub(crate) fn names_websocket(upgrade: &[u8]) -> bool {
    upgrade
        .split(|b| *b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// Removes every `openai-insecure-api-key.*` subprotocol, keeping the others in their order,
/// and returns the first key found. The header goes away if nothing is left in it.
pub(crate) fn take_key_subprotocol(headers: &mut HeaderMap) -> Option<Vec<u8>> {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return None;
    }
    let mut key = None;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for protocol in value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
        {
            // Subprotocol names are compared case-sensitively by RFC 6455, but a server may
            // read them in any case: every casing of the prefix is a key.
            let prefix = KEY_SUBPROTOCOL.len();
            match protocol.split_at_checked(prefix) {
                Some((head, value)) if head.eq_ignore_ascii_case(KEY_SUBPROTOCOL.as_bytes()) => {
                    key.get_or_insert_with(|| value.to_vec());
                }
                _ if !protocol.is_empty() => kept.push(protocol.to_vec()),
                _ => {}
            }
        }
    }
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b", "[..])) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    key
}

/// Why an upgrade request cannot become a WebSocket, if it cannot: it must be HTTP/1.1
/// (RFC 6455, section 4.1) and carry no body, since nothing after its head is HTTP.
pub(crate) fn check_upgrade(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    if version != Version::HTTP_11 {
        return Err("A WebSocket upgrade needs HTTP/1.1");
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err("A WebSocket upgrade request carries no body");
    }
    Ok(())
}

/// Puts back the two hop-by-hop headers that make a request, or a `101`, an upgrade; header
/// rewriting removes them with the rest of the hop-by-hop set.
pub(crate) fn mark_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_protocols(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(value),
        );
        h
    }

    #[test]
    fn the_key_subprotocol_is_taken_out_and_the_rest_kept_in_order() {
        let mut h =
            with_protocols("realtime, openai-insecure-api-key.ck-123, openai-beta.realtime-v1");
        assert_eq!(
            take_key_subprotocol(&mut h).as_deref(),
            Some(&b"ck-123"[..])
        );
        assert_eq!(
            h[header::SEC_WEBSOCKET_PROTOCOL],
            "realtime, openai-beta.realtime-v1"
        );

        let mut h = with_protocols("openai-insecure-api-key.a,openai-insecure-api-key.b");
        assert_eq!(take_key_subprotocol(&mut h).as_deref(), Some(&b"a"[..]));
        assert!(!h.contains_key(header::SEC_WEBSOCKET_PROTOCOL));

        let mut h = with_protocols("realtime, OpenAI-Insecure-API-Key.ck-9");
        assert_eq!(take_key_subprotocol(&mut h).as_deref(), Some(&b"ck-9"[..]));
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "realtime");

        let mut h = with_protocols("realtime");
        assert_eq!(take_key_subprotocol(&mut h), None);
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "realtime");
    }

    #[test]
    fn only_websocket_is_an_upgrade_here() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&h));
    }
}
