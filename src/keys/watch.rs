//! Key files re-read while serving: `OPENAI_API_KEY_FILE` and `PROXY_CLIENT_KEYS_FILE`.
//!
//! Each file is read again every [`POLL`] and compared with what was read last. Polling the
//! contents, rather than watching for file events, follows every way a file is replaced: an
//! edit in place, a rename over it, and the symlink swap with which the kubelet updates a
//! mounted Secret. There `..data` is re-pointed at a new directory, so an inotify watch on the
//! file sees only `IN_DELETE_SELF` and then nothing more (kubernetes/kubernetes#111947).
//! Reading a small file once a second needs no watch to keep alive.
//!
//! A change that parses replaces the keys for the next request. One that does not (empty,
//! unreadable, malformed) leaves the old keys in force, logs an error that names the setting
//! and the cause but never the contents, and counts in `memoctopus_key_reloads_total`. The
//! same bad contents are reported once, not every second.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Keys;
use crate::config::{
    api_key_file, check_entries, client_keys_file, read_key_file, KeySettings, API_KEY_FILE,
    CLIENT_KEYS_FILE,
};
use crate::metrics::Metrics;

/// How often each key file is read again.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// How long a changed file must stay the same before it is applied.
const SETTLE: Duration = Duration::from_millis(50);

/// How long one read of a key file may take before it counts as failed (the keys in force
/// stay), so that a volume that hangs never stops the watcher.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A file read on the blocking pool, so that a slow volume never stalls the runtime.
async fn read_off_thread(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display().to_string();
    let path = path.to_owned();
    match tokio::time::timeout(
        READ_TIMEOUT,
        tokio::task::spawn_blocking(move || read_key_file(&path)),
    )
    .await
    {
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
    /// The bytes last read, or the error last reported, so that nothing is applied or
    /// reported twice.
    last: Option<Result<Vec<u8>, String>>,
}

/// Watches the key files named in `settings` until dropped; does nothing if there are none.
pub(crate) async fn watch(keys: Arc<Keys>, settings: KeySettings, metrics: Arc<Metrics>) {
    let mut files: Vec<Watched> = [
        (API_KEY_FILE, settings.api_key_file),
        (CLIENT_KEYS_FILE, settings.client_keys_file),
    ]
    .into_iter()
    .filter_map(|(setting, path)| {
        path.map(|path| Watched {
            setting,
            path,
            last: None,
        })
    })
    .collect();
    if files.is_empty() {
        return;
    }
    for file in &files {
        metrics.keys.file_watched(file.setting);
    }
    let mut first = true;
    loop {
        for file in &mut files {
            let read = read_off_thread(&file.path).await;
            if file.last.as_ref() == Some(&read) {
                continue;
            }
            // A file written in place is empty, then partly written, for a moment: a change
            // counts once a second read shortly after agrees with it.
            tokio::time::sleep(SETTLE).await;
            if read_off_thread(&file.path).await != read {
                continue;
            }
            // The first read applies what may have changed since start-up loaded the file, but
            // only a failure is news then.
            let outcome = apply(&keys, file, &read);
            if !first || outcome.is_err() {
                report(&metrics, file.setting, outcome);
            }
            file.last = Some(read);
        }
        first = false;
        tokio::time::sleep(POLL).await;
    }
}

/// Replaces the keys if the file's contents parse; says what changed, or why not.
fn apply(keys: &Keys, file: &Watched, read: &Result<Vec<u8>, String>) -> Result<String, String> {
    read.as_ref().map_err(String::clone).and_then(|contents| {
        if file.setting == API_KEY_FILE {
            api_key_file(&file.path, contents).map(|key| {
                keys.replace_api_key(&key);
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
            tracing::info!(setting, "key file reloaded: {what}");
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
