//! Panics: a request whose handler panics gets a 500 and its connection goes on; any panic is
//! logged through `tracing`, with every secret in its message blotted out.
//!
//! Nothing on the request path is meant to panic (the crate denies `unwrap`, `expect` and
//! `panic!`), but hyper, h2 or a dependency may. A panic while a response body streams is
//! caught one level up, where tokio ends that connection's task and the accept loop goes on.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::config::Config;

pin_project_lite::pin_project! {
    /// A future that turns a panic while it is polled into `Err(())`.
    pub struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> CatchUnwind<F> {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Replaces the default panic hook, which prints to standard error whatever the message
/// holds, with one that logs an error event, the server's key and the client keys of `config`
/// and any bearer token or `sk-` key blotted out.
pub fn install_hook(config: &Config) {
    let secrets = secrets_of(config);
    std::panic::set_hook(Box::new(move |info| log_panic(info, &secrets)));
}

fn log_panic(info: &PanicHookInfo<'_>, secrets: &[Vec<u8>]) {
    let message = redact(&payload_text(info.payload()), secrets);
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current();
    tracing::error!(
        target: "memoctopus::panic",
        thread = thread.name().unwrap_or("unnamed"),
        %location,
        "panic: {message}"
    );
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn secrets_of(config: &Config) -> Vec<Vec<u8>> {
    config
        .upstreams
        .entries
        .iter()
        .map(|entry| entry.api_key.as_bytes())
        .chain(config.keys.client_keys.secrets())
        .filter(|k| !k.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

const BLOT: &str = "[redacted]";

/// `text` with each of `secrets`, and each token after `Bearer ` or starting `sk-`, replaced.
pub(crate) fn redact(text: &str, secrets: &[Vec<u8>]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if let Ok(secret) = std::str::from_utf8(secret) {
            out = out.replace(secret, BLOT);
        }
    }
    for marker in ["bearer ", "sk-"] {
        out = blot_tokens_after(&out, marker);
    }
    out
}

/// Blots the token that follows each case-insensitive occurrence of `marker`.
fn blot_tokens_after(text: &str, marker: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(marker) {
        let token_start = at + found + marker.len();
        let token_len = text[token_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | '}'))
            .unwrap_or(text.len() - token_start);
        out.push_str(&text[at..token_start]);
        if token_len > 0 && &text[token_start..token_start + token_len] != BLOT {
            out.push_str(BLOT);
        } else {
            out.push_str(&text[token_start..token_start + token_len]);
        }
        at = token_start + token_len;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_configured_secrets_and_anything_that_looks_like_a_key() {
        let secrets = vec![b"my-odd-key-123".to_vec()];
        let text = r#"failed: my-odd-key-123 in "Authorization: Bearer abc.def" and sk-live-999, BEARER xyz"#;
        let out = redact(text, &secrets);
        for leaked in ["my-odd-key-123", "abc.def", "live-999", "xyz"] {
            assert!(!out.contains(leaked), "{out}");
        }
        assert!(out.starts_with("failed: [redacted] in"), "{out}");
        assert_eq!(redact("nothing secret", &secrets), "nothing secret");
    }
}
