//! The upstreams requests go to: the one `OPENAI_BASE_URL` names, with `OPENAI_API_KEY`; or the
//! several of `PROXY_UPSTREAMS_FILE`, a TOML file of `[[upstream]]` entries, each with its base
//! URL, its key file, how it takes the key, its query, its priority and its weight, and the rules
//! of failing over between them. The file and the key files it names are read at start, where a
//! fault exits 64, and again while serving, where a fault keeps the set in force. No message
//! ever holds a key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use super::egress::egress_proxy;
use super::keys::{api_key_file, read};
use super::upstream::{base_url, origin, points_here, UpstreamSettings};
use super::values::parse_duration;
use crate::policy::headers::UpstreamAuth;
use crate::policy::routes::UpstreamQuery;

/// The name of the one upstream when `PROXY_UPSTREAMS_FILE` is unset, as metrics and logs give
/// it.
pub(crate) const DEFAULT_UPSTREAM: &str = "default";

/// The most entries a file may hold: each is a label value in `/metrics` and a pool of
/// connections.
const MAX_ENTRIES: usize = 64;

/// The longest name: a label value.
const MAX_NAME: usize = 64;

/// One upstream of the set.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamEntry {
    /// Its name in the file, as the metrics and the access log give it.
    pub name: Arc<str>,
    /// Where it is and how it is reached: its own base URL, auth, query and forward proxy,
    /// with the protocol, the trusted roots and the organization shared by all.
    pub settings: UpstreamSettings,
    /// Its key alone (no scheme), marked sensitive.
    pub api_key: HeaderValue,
    /// Lower is tried first.
    pub priority: u32,
    /// Its share of the requests among the upstreams of its priority.
    pub weight: u32,
}

/// The upstreams in force, and when a request moves from one to the next.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamSet {
    pub entries: Vec<UpstreamEntry>,
    pub failover: FailoverRules,
}

/// What a request fails over on beyond what is always safe (a connection that was never made,
/// a provably unprocessed request, `429`, `503`, a rejected key), and how long an upstream
/// rests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FailoverRules {
    /// `failover_on = ["500"]`: a `500` the upstream may have acted on is sent elsewhere.
    pub on_500: bool,
    /// `failover_on = ["reset"]`: a connection broken after the request left.
    pub on_reset: bool,
    /// `failover_on = ["timeout"]` with `attempt_timeout`: an attempt without an answer's
    /// head within it is abandoned for the next upstream.
    pub attempt_timeout: Option<Duration>,
    /// `cooldown`: how long an upstream rests after a `429` or `503` that says nothing of its
    /// own, or a connection that failed.
    pub cooldown: Duration,
    /// `key_rejected_cooldown`: how long an upstream whose key was refused (`401`) rests.
    pub key_rejected_cooldown: Duration,
}

impl Default for FailoverRules {
    fn default() -> FailoverRules {
        FailoverRules {
            on_500: false,
            on_reset: false,
            attempt_timeout: None,
            cooldown: Duration::from_secs(5),
            key_rejected_cooldown: Duration::from_secs(300),
        }
    }
}

/// Where `PROXY_UPSTREAMS_FILE`'s entries are read from, and what they are read against: the
/// shared upstream settings, the forward-proxy variables and the listening address.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamsFile {
    pub path: PathBuf,
    pub(super) base: UpstreamSettings,
    pub(super) egress: HashMap<String, String>,
    pub(super) listen: SocketAddr,
    /// What start-up read: the watcher's first comparison, so that a change made right after
    /// start is reported like any other.
    pub loaded: Arc<Snapshot>,
}

/// A file and the files it names, as read once: what the watcher compares between reads.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub file: Vec<u8>,
    pub named: Vec<(PathBuf, Result<Vec<u8>, String>)>,
}

/// The paths and sizes alone: the contents are keys.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named: Vec<_> = self.named.iter().map(|(path, _)| path).collect();
        f.debug_struct("Snapshot")
            .field("file_bytes", &self.file.len())
            .field("named", &named)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    upstream: Vec<EntryDoc>,
    #[serde(default)]
    failover_on: Vec<String>,
    attempt_timeout: Option<String>,
    cooldown: Option<String>,
    key_rejected_cooldown: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    name: String,
    base_url: String,
    api_key_file: String,
    auth: Option<String>,
    query: Option<String>,
    priority: Option<u32>,
    weight: Option<u32>,
}

impl UpstreamsFile {
    /// Reads the file, and every key file it names (relative to the file's folder), as they are
    /// now. A file that does not parse names no key file; its fault is reported by [`parse`].
    ///
    /// [`parse`]: UpstreamsFile::parse
    pub(crate) fn read(path: &Path) -> Result<Snapshot, String> {
        let file = read(path)?;
        let named = std::str::from_utf8(&file)
            .ok()
            .and_then(|text| toml::from_str::<FileDoc>(text).ok())
            .map(|doc| {
                doc.upstream
                    .iter()
                    .map(|entry| {
                        let key_path = beside(path, &entry.api_key_file);
                        let key = read(&key_path);
                        (key_path, key)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Snapshot { file, named })
    }

    /// The set a snapshot describes, or what is wrong with it, naming the entry and never a key.
    pub(crate) fn parse(&self, snapshot: &Snapshot) -> Result<UpstreamSet, String> {
        let path = self.path.display();
        let text = std::str::from_utf8(&snapshot.file)
            .map_err(|_| format!("{path}: the file is not text"))?;
        let doc: FileDoc = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which could hold a pasted key.
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            format!("{path}: not a valid upstreams file{at}: {}", e.message())
        })?;
        let failover = failover_rules(&doc).map_err(|m| format!("{path}: {m}"))?;
        if doc.upstream.is_empty() {
            return Err(format!(
                "{path}: holds no [[upstream]] entry; an empty set would answer every request with an error"
            ));
        }
        if doc.upstream.len() > MAX_ENTRIES {
            return Err(format!(
                "{path}: holds {} entries, more than {MAX_ENTRIES}",
                doc.upstream.len()
            ));
        }
        let keys: HashMap<&Path, &Result<Vec<u8>, String>> = snapshot
            .named
            .iter()
            .map(|(path, key)| (path.as_path(), key))
            .collect();
        let mut entries: Vec<UpstreamEntry> = Vec::with_capacity(doc.upstream.len());
        for doc in &doc.upstream {
            let entry = self
                .entry(doc, &keys)
                .map_err(|m| format!("{path}: upstream {:?}: {m}", doc.name))?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(format!(
                    "{path}: the name {:?} is given twice; each upstream needs its own",
                    doc.name
                ));
            }
            entries.push(entry);
        }
        Ok(UpstreamSet { entries, failover })
    }

    fn entry(
        &self,
        doc: &EntryDoc,
        keys: &HashMap<&Path, &Result<Vec<u8>, String>>,
    ) -> Result<UpstreamEntry, String> {
        let name = doc.name.trim();
        let fits_a_label = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !fits_a_label {
            return Err(format!(
                "the name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
            ));
        }
        let (scheme, authority, base_path) =
            base_url(doc.base_url.trim()).map_err(|m| format!("base_url {m}"))?;
        let auth = match doc.auth.as_deref().map(str::trim) {
            None | Some("bearer") => UpstreamAuth::Bearer,
            Some("api-key") => UpstreamAuth::ApiKey,
            Some(other) => {
                return Err(format!(
                    "auth {other:?} is neither \"bearer\" nor \"api-key\""
                ))
            }
        };
        let query = UpstreamQuery::parse(doc.query.as_deref().unwrap_or(""))
            .map_err(|m| format!("query {m}"))?;
        let weight = doc.weight.unwrap_or(1);
        if weight == 0 {
            return Err(
                "weight must be at least 1 (remove the entry to send it nothing)".to_owned(),
            );
        }
        let key_path = beside(&self.path, &doc.api_key_file);
        let api_key = match keys.get(key_path.as_path()) {
            Some(Ok(contents)) => api_key_file(&key_path, contents)?,
            Some(Err(error)) => return Err(format!("api_key_file: {error}")),
            None => return Err(format!("api_key_file: {} was not read", key_path.display())),
        };
        let target = origin(&scheme, &authority)?;
        let egress = egress_proxy(&self.egress, &target).map_err(|e| e.to_string())?;
        let settings = UpstreamSettings {
            scheme,
            authority,
            base_path,
            egress,
            auth,
            query,
            ..self.base.clone()
        };
        if points_here(&settings, self.listen) {
            return Err(format!(
                "base_url {} is this proxy's own address (HOST:PORT {})",
                doc.base_url.trim(),
                self.listen
            ));
        }
        Ok(UpstreamEntry {
            name: Arc::from(name),
            settings,
            api_key,
            priority: doc.priority.unwrap_or(0),
            weight,
        })
    }
}

/// The one upstream of `OPENAI_BASE_URL` and `OPENAI_API_KEY`.
pub(super) fn single(settings: &UpstreamSettings, api_key: &HeaderValue) -> UpstreamSet {
    UpstreamSet {
        entries: vec![UpstreamEntry {
            name: Arc::from(DEFAULT_UPSTREAM),
            settings: settings.clone(),
            api_key: api_key.clone(),
            priority: 0,
            weight: 1,
        }],
        failover: FailoverRules::default(),
    }
}

/// `failover_on` and the durations, checked.
fn failover_rules(doc: &FileDoc) -> Result<FailoverRules, String> {
    let mut rules = FailoverRules::default();
    let mut on_timeout = false;
    for word in &doc.failover_on {
        match word.trim() {
            "500" => rules.on_500 = true,
            "reset" => rules.on_reset = true,
            "timeout" => on_timeout = true,
            other => {
                return Err(format!(
                    "failover_on {other:?} is none of \"500\", \"reset\", \"timeout\" (429, 503 and failed connections always fail over)"
                ))
            }
        }
    }
    let duration = |name: &str, value: &Option<String>| -> Result<Option<Duration>, String> {
        value
            .as_deref()
            .map(|v| parse_duration(v).map_err(|m| format!("{name} {m}")))
            .transpose()
    };
    let attempt_timeout = duration("attempt_timeout", &doc.attempt_timeout)?;
    match (on_timeout, attempt_timeout) {
        (true, None) => {
            return Err(
                "failover_on \"timeout\" needs attempt_timeout, how long one upstream is waited for"
                    .to_owned(),
            )
        }
        (false, Some(_)) => {
            return Err(
                "attempt_timeout is set but failover_on has no \"timeout\"; add it, or remove attempt_timeout"
                    .to_owned(),
            )
        }
        (_, Some(timeout)) if timeout.is_zero() => {
            return Err("attempt_timeout must be more than 0".to_owned())
        }
        _ => rules.attempt_timeout = attempt_timeout,
    }
    if let Some(cooldown) = duration("cooldown", &doc.cooldown)? {
        rules.cooldown = cooldown;
    }
    if let Some(cooldown) = duration("key_rejected_cooldown", &doc.key_rejected_cooldown)? {
        rules.key_rejected_cooldown = cooldown;
    }
    Ok(rules)
}

/// `named` as the file names it: relative to the file's own folder, as a ConfigMap and the
/// Secrets beside it are mounted.
fn beside(file: &Path, named: &str) -> PathBuf {
    let named = Path::new(named.trim());
    match file.parent() {
        Some(folder) if named.is_relative() => folder.join(named),
        _ => named.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> UpstreamsFile {
        let config = crate::Config::from_vars([("OPENAI_API_KEY", "sk-x")]).unwrap();
        UpstreamsFile {
            path: dir.join("upstreams.toml"),
            base: config.upstream.clone(),
            egress: HashMap::new(),
            listen: "127.0.0.1:8000".parse().unwrap(),
            loaded: Arc::default(),
        }
    }

    fn parsed(toml: &str) -> Result<UpstreamSet, String> {
        let dir = std::env::temp_dir().join(format!(
            "memoctopus-upstreams-{}-{}",
            std::process::id(),
            toml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key-a"), "sk-aaa\n").unwrap();
        std::fs::write(dir.join("upstreams.toml"), toml).unwrap();
        let source = source(&dir);
        let snapshot = UpstreamsFile::read(&source.path).unwrap();
        source.parse(&snapshot)
    }

    #[test]
    fn entries_take_their_defaults_and_keys_beside_the_file() {
        let set = parsed(
            "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_file = \"key-a\"\n",
        )
        .unwrap();
        let entry = &set.entries[0];
        assert_eq!((entry.priority, entry.weight), (0, 1));
        assert_eq!(entry.api_key.as_bytes(), b"sk-aaa");
        assert_eq!(set.failover, FailoverRules::default());
    }

    #[test]
    fn mistakes_are_refused_by_entry_and_never_quote_a_key() {
        let one = |extra: &str| {
            parsed(&format!(
                "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_file = \"key-a\"\n{extra}"
            ))
            .unwrap_err()
        };
        assert!(one("weight = 0\n").contains("weight"));
        assert!(one("auth = \"basic\"\n").contains("auth"));
        assert!(one("api_key = \"sk-secret-pasted\"\n").contains("line 4"));
        assert!(!one("api_key = \"sk-secret-pasted\"\n").contains("sk-secret"));
        assert!(parsed("failover_on = [\"404\"]\n")
            .unwrap_err()
            .contains("failover_on"));
        assert!(parsed("").unwrap_err().contains("no [[upstream]]"));
        let missing = parsed(
            "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_file = \"nope\"\n",
        )
        .unwrap_err();
        assert!(missing.contains("api_key_file"), "{missing}");
        let twice = parsed(
            "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_file = \"key-a\"\n[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:10/v1\"\napi_key_file = \"key-a\"\n",
        )
        .unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let timeout = parsed("failover_on = [\"timeout\"]\n").unwrap_err();
        assert!(timeout.contains("attempt_timeout"), "{timeout}");
    }
}
