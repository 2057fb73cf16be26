//! The keys: the server's own (`OPENAI_API_KEY` or `OPENAI_API_KEY_FILE`) and the clients'
//! (`PROXY_CLIENT_KEYS` or `PROXY_CLIENT_KEYS_FILE`). The file readers here serve both the
//! start, where a fault exits 64, and the reloads while serving, where it keeps the old keys.
//! No message ever holds a key.

use std::path::{Path, PathBuf};

use http::HeaderValue;

use super::settings::{declared, Found};
use super::values::ConfigError;
use crate::policy::client_keys::{ClientKeys, KeyListError};

/// The keys as loaded at start, and the files they are reloaded from.
#[derive(Clone, Debug)]
pub(crate) struct KeySettings {
    /// The server's OpenAI key alone (no scheme), marked sensitive; `None` when
    /// `PROXY_UPSTREAMS_FILE` gives each upstream its own.
    pub api_key: Option<HeaderValue>,
    /// `OPENAI_API_KEY_FILE`: watched, and re-read when it changes.
    pub api_key_file: Option<PathBuf>,
    /// The client keys; empty only when neither setting is set, which means no inbound check.
    pub client_keys: ClientKeys,
    /// `PROXY_CLIENT_KEYS_FILE`: watched, and re-read when it changes.
    pub client_keys_file: Option<PathBuf>,
    /// What every list of client keys must hold, loaded at start or reloaded.
    pub rules: EntryRules,
}

/// What the rest of the configuration asks of a list of client keys.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EntryRules {
    /// Whether the usage meter runs, which a client's `token_budget` needs.
    pub metered: bool,
    /// Whether `PROXY_CLIENT_TOKEN_BUDGET` sets a default budget, which every key then carries.
    pub budget_by_default: bool,
}

/// What a list of client keys must hold beside its own form, at start and on a reload: a
/// client's `token_budget` counts what the usage meter reads, so with the meter off it would
/// never close; and a key that carries a budget, its own or the default, needs a name, since
/// its count is kept under it (a key with limits of its own is refused by the list's parser).
pub(crate) fn check_entries(keys: &ClientKeys, rules: EntryRules) -> Result<(), String> {
    if !rules.metered && keys.any_token_budget() {
        return Err(
            "a client key sets a token_budget, which needs the usage meter, and PROXY_USAGE is off"
                .to_owned(),
        );
    }
    if rules.budget_by_default {
        if let Some(entry) = keys.bare_entries().next() {
            return Err(format!(
                "entry {entry}: a key carries PROXY_CLIENT_TOKEN_BUDGET and needs a name (name:key), so that its spent budget stays its own when the list changes"
            ));
        }
    }
    Ok(())
}

/// The settings' names, as the reload metrics and logs give them.
pub(crate) const API_KEY_FILE: &str = declared::openai_api_key_file.name;
pub(crate) const CLIENT_KEYS_FILE: &str = declared::proxy_client_keys_file.name;
pub(crate) const UPSTREAMS_FILE: &str = declared::proxy_upstreams_file.name;

/// `OPENAI_API_KEY` or its file (neither, when `PROXY_UPSTREAMS_FILE` names the upstreams and
/// their keys), and `PROXY_CLIENT_KEYS` or its file.
pub(super) fn validate(found: &Found<'_>) -> Result<KeySettings, ConfigError> {
    let (key, key_file) = (found.openai_api_key, found.openai_api_key_file);
    let several = found.proxy_upstreams_file.get().is_some();
    let (api_key, api_key_file) = match (key.get(), key_file.get()) {
        (None, None) if several => (None, None),
        (Some(_), _) | (_, Some(_)) if several => {
            let set = if key.get().is_some() { key } else { key_file };
            return Err(set.invalid(
                "is set, and so is PROXY_UPSTREAMS_FILE, whose entries each name their own api_key_file; unset one of them (in .env, leave OPENAI_API_KEY empty)",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(key.invalid(
                "and OPENAI_API_KEY_FILE are both set; set exactly one of them",
            ))
        }
        (Some(text), None) => (Some(parse_api_key(text).map_err(|m| key.invalid(m))?), None),
        (None, Some(path)) => (
            Some(read_api_key(Path::new(path)).map_err(|m| key_file.invalid(m))?),
            Some(PathBuf::from(path)),
        ),
        (None, None) => {
            return Err(key.invalid(
                "is required (or OPENAI_API_KEY_FILE, or PROXY_UPSTREAMS_FILE); set it in the environment or in .env (see config/example.env)",
            ))
        }
    };
    let (keys, keys_file) = (found.proxy_client_keys, found.proxy_client_keys_file);
    let (client_keys, client_keys_file) = match (keys.get(), keys_file.get()) {
        (Some(_), Some(_)) => {
            return Err(
                keys.invalid("and PROXY_CLIENT_KEYS_FILE are both set; set at most one of them")
            )
        }
        (None, None) => (ClientKeys::default(), None),
        (Some(_), None) => (
            ClientKeys::parse(keys.list())
                .and_then(at_least_one)
                .map_err(|e| keys.invalid(e.0))?,
            None,
        ),
        (None, Some(path)) => (
            read_client_keys(Path::new(path)).map_err(|m| keys_file.invalid(m))?,
            Some(PathBuf::from(path)),
        ),
    };
    Ok(KeySettings {
        api_key,
        api_key_file,
        client_keys,
        client_keys_file,
        rules: EntryRules {
            metered: true,
            budget_by_default: false,
        },
    })
}

/// A key as written: surrounding whitespace ignored, and then printable ASCII only.
pub(super) fn parse_api_key(text: &str) -> Result<HeaderValue, String> {
    let key = text.trim();
    if key.is_empty() {
        return Err("is empty".to_owned());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "contains spaces, line breaks or characters not allowed in a header".to_owned(),
        );
    }
    let mut value =
        HeaderValue::from_str(key).map_err(|_| "contains characters not allowed in a header")?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads the key file: the key, with surrounding whitespace ignored.
pub(super) fn read_api_key(path: &Path) -> Result<HeaderValue, String> {
    api_key_file(path, &read(path)?)
}

/// The key file's contents, read from `path`.
pub(crate) fn api_key_file(path: &Path, contents: &[u8]) -> Result<HeaderValue, String> {
    let text = std::str::from_utf8(contents)
        .map_err(|_| format!("{}: the key is not text", path.display()))?;
    parse_api_key(text).map_err(|m| format!("{}: the key {m}", path.display()))
}

/// Reads the client-keys file.
pub(super) fn read_client_keys(path: &Path) -> Result<ClientKeys, String> {
    client_keys_file(path, &read(path)?)
}

/// The client-keys file's contents, read from `path`: one `name:key` or bare `key` a line;
/// blank lines and lines that start with `#` are ignored.
pub(crate) fn client_keys_file(path: &Path, contents: &[u8]) -> Result<ClientKeys, String> {
    let text = std::str::from_utf8(contents)
        .map_err(|_| format!("{}: the file is not text", path.display()))?;
    let entries: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    // `PROXY_CLIENT_KEYS`'s comma-separated form pasted into the file would be one key.
    if let Some(at) = entries.iter().position(|line| line.contains(',')) {
        return Err(format!(
            "{}: entry {} holds a comma; the file takes one name:key entry a line",
            path.display(),
            at + 1
        ));
    }
    ClientKeys::parse(entries)
        .and_then(at_least_one)
        .map_err(|e| format!("{}: {}", path.display(), e.0))
}

/// A list of client keys that is set must hold one: an empty one would mean "no check", the
/// opposite of what setting it asked for. At start that stops the proxy; at a reload the keys
/// in force stay.
fn at_least_one(keys: ClientKeys) -> Result<ClientKeys, KeyListError> {
    if keys.is_empty() {
        return Err(KeyListError(
            "holds no client key; with client keys set, an empty list would let every request through, so it is refused (unset the setting to run without client keys)".to_owned(),
        ));
    }
    Ok(keys)
}

/// The largest file a setting names: a key, a Redis URL, a PEM bundle (all of webpki's roots
/// as PEM are about 250 KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// `O_NONBLOCK`, so that opening a FIFO put where a file was expected returns at once instead
/// of waiting for a writer; for a regular file it changes nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const OPEN_FLAGS: i32 = libc::O_NONBLOCK;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const OPEN_FLAGS: i32 = 0;

/// A file a setting names, read whole: only a regular file of at most 1 MiB. A FIFO, a
/// device or a directory is refused like a malformed file, since reading one could block
/// start-up or every later reload for good. The error names the file and the cause, never the
/// contents.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |why: String| format!("cannot read {}: {why}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| cannot(e.to_string()))?;
    let meta = file.metadata().map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".to_owned()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(cannot("larger than 1 MiB".to_owned()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(cannot("larger than 1 MiB".to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_ignores_surrounding_whitespace_and_refuses_two_keys() {
        assert_eq!(parse_api_key("  sk-abc\n").unwrap().as_bytes(), b"sk-abc");
        assert!(parse_api_key("\n\n").is_err());
        let err = parse_api_key("sk-one\nsk-two").unwrap_err();
        assert!(!err.contains("sk-"), "{err}");
    }
}
