//! Files re-read while serving: `OPENAI_API_KEY_FILE`, `PROXY_CLIENT_KEYS_FILE`, and
//! `PROXY_UPSTREAMS_FILE` with the key files it names.
//!
//! Each file is read again every [`POLL`] and compared with what was read last (the upstreams
//! file together with its key files, so that a new key applies like a new entry). Polling the
//! contents, rather than watching for file events, follows every way a file is replaced: an
//! edit in place, a rename over it, and the symlink swap with which the kubelet updates a
//! mounted Secret. There `..data` is re-pointed at a new directory, so an inotify watch on the
//! file sees only `IN_DELETE_SELF` and then nothing more (kubernetes/kubernetes#111947).
//! Reading a small file once a second needs no watch to keep alive.
//!
//! A change that parses replaces the keys or the upstreams for the next request. One that does
//! not (empty, unreadable, malformed) leaves the old ones in force, logs an error that names the
//! setting and the cause but never the contents, and counts in `memoctopus_key_reloads_total`.
//! The same bad contents are reported once, not every second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    api_key_file, check_entries, client_keys_file, read_key_file, Config, Snapshot, UpstreamsFile,
    API_KEY_FILE, CLIENT_KEYS_FILE, UPSTREAMS_FILE,
};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::upstream::SendBody;
use crate::upstreams::Upstreams;

/// How often each key file is read again.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// How long a changed file must stay the same before it is applied.
const SETTLE: Duration = Duration::from_millis(50);

/// How long one read of a key file may take before it counts as failed (the keys in force
/// stay), so that a volume that hangs never stops the watcher.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A file read on the blocking pool, so that a slow volume never stalls the runtime; the
/// upstreams file with the key files it names.
async fn read_off_thread(path: &Path, upstreams: bool) -> Result<Snapshot, String> {
    let shown = path.display().to_string();
    let path = path.to_owned();
    let read = move || {
        if upstreams {
            UpstreamsFile::read(&path)
        } else {
            read_key_file(&path).map(|file| Snapshot {
                file,
                named: Vec::new(),
            })
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(read)).await {
        Ok(read) => read.unwrap_or_else(|e| Err(format!("the read failed: {e}"))),
        Err(_) => Err(format!(
            "cannot read {shown}: no answer within {} s",
            READ_TIMEOUT.as_secs()
        )),
    }
}

/// One watched file: which setting it is, and what was last read from it.
struct Watched {
    setting: &'static str,
    path: PathBuf,
    /// What was last read, or the error last reported, so that nothing is applied or
    /// reported twice.
    last: Option<Result<Snapshot, String>>,
}

/// What the watched files replace.
pub(crate) struct Targets<B: SendBody> {
    pub(crate) keys: Arc<Keys>,
    pub(crate) upstreams: Arc<Upstreams<B>>,
    /// How `PROXY_UPSTREAMS_FILE` is read, if it is set.
    pub(crate) upstreams_file: Option<UpstreamsFile>,
}

/// Watches the files `config` names until dropped; does nothing if there are none.
pub(crate) async fn watch<B: SendBody>(
    targets: Targets<B>,
    config: &Config,
    metrics: Arc<Metrics>,
) {
    let settings = &config.keys;
    let unread = |path: &Option<PathBuf>| path.clone().map(|path| (path, None));
    let mut files: Vec<Watched> = [
        (API_KEY_FILE, unread(&settings.api_key_file)),
        (CLIENT_KEYS_FILE, unread(&settings.client_keys_file)),
        (
            UPSTREAMS_FILE,
            targets.upstreams_file.as_ref().map(|f| {
                let loaded = Snapshot::clone(&f.loaded);
                (f.path.clone(), Some(Ok(loaded)))
            }),
        ),
    ]
    .into_iter()
    .filter_map(|(setting, read)| {
        read.map(|(path, last)| Watched {
            setting,
            path,
            last,
        })
    })
    .collect();
    if files.is_empty() {
        return;
    }
    for file in &files {
        metrics.keys.file_watched(file.setting);
    }
    loop {
        for file in &mut files {
            let upstreams = file.setting == UPSTREAMS_FILE;
            let read = read_off_thread(&file.path, upstreams).await;
            if file.last.as_ref() == Some(&read) {
                continue;
            }
            // A file written in place is empty, then partly written, for a moment: a change
            // counts once a second read shortly after agrees with it.
            tokio::time::sleep(SETTLE).await;
            if read_off_thread(&file.path, upstreams).await != read {
                continue;
            }
            // A file start-up did not hand over is applied at its first read, in case it
            // changed since start-up loaded it, but only a failure is news then.
            let news = file.last.is_some();
            let outcome = apply(&targets, file, &read);
            if news || outcome.is_err() {
                report(&metrics, file.setting, outcome);
            }
            file.last = Some(read);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Replaces the keys or the upstreams if the file's contents parse; says what changed, or why
/// not.
fn apply<B: SendBody>(
    targets: &Targets<B>,
    file: &Watched,
    read: &Result<Snapshot, String>,
) -> Result<String, String> {
    let keys = &targets.keys;
    read.as_ref().map_err(String::clone).and_then(|snapshot| {
        let contents = &snapshot.file;
        if file.setting == UPSTREAMS_FILE {
            let source = targets
                .upstreams_file
                .as_ref()
                .ok_or_else(|| "no upstreams file".to_owned())?;
            source
                .parse(snapshot)
                .and_then(|set| targets.upstreams.replace(set))
        } else if file.setting == API_KEY_FILE {
            api_key_file(&file.path, contents).map(|key| {
                targets.upstreams.replace_key(&key);
                "the new key applies to the next request".to_owned()
            })
        } else {
            client_keys_file(&file.path, contents)
                .and_then(|clients| {
                    check_entries(&clients, keys.rules)
                        .map(|()| clients)
                        .map_err(|m| format!("{}: {m}", file.path.display()))
                })
                .map(|clients| {
                    let count = clients.len();
                    keys.replace_client_keys(clients);
                    format!("{count} client keys apply to the next request")
                })
        }
    })
}

fn report(metrics: &Metrics, setting: &'static str, outcome: Result<String, String>) {
    match outcome {
        Ok(what) => {
            metrics.keys.reloaded(setting, true);
            tracing::info!(setting, "file reloaded: {what}");
        }
        Err(error) if setting == UPSTREAMS_FILE => {
            metrics.keys.reloaded(setting, false);
            tracing::error!(
                setting,
                %error,
                "upstreams file change not applied; the upstreams loaded before stay in force"
            );
        }
        Err(error) => {
            metrics.keys.reloaded(setting, false);
            tracing::error!(
                setting,
                %error,
                "key file change not applied; the keys loaded before stay in force"
            );
        }
    }
}
