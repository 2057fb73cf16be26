//! The key files: reloads by result, and when each was last loaded.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{ReloadLabels, SettingLabels};

pub(crate) struct KeyMetrics {
    reloads: Family<ReloadLabels, Counter>,
    loaded: Family<SettingLabels, Gauge<f64, AtomicU64>>,
}

impl KeyMetrics {
    pub(super) fn register(registry: &mut Registry) -> KeyMetrics {
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "key_reloads",
            "Key files re-read after a change, by setting and result: success, or error (the old keys stay in force)",
            reloads.clone(),
        );
        let loaded = Family::<SettingLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "key_last_load_timestamp_seconds",
            "When each key file was last loaded successfully, at start or on a reload, in Unix seconds",
            loaded.clone(),
        );
        KeyMetrics { reloads, loaded }
    }

    /// A key file now watched: its series start at zero, and its first load is now.
    pub(crate) fn file_watched(&self, setting: &'static str) {
        for result in ["success", "error"] {
            drop(
                self.reloads
                    .get_or_create(&ReloadLabels { setting, result }),
            );
        }
        self.file_loaded(setting);
    }

    /// A key file re-read after a change; on an error the old keys stay in force.
    pub(crate) fn reloaded(&self, setting: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reloads
            .get_or_create(&ReloadLabels { setting, result })
            .inc();
        if ok {
            self.file_loaded(setting);
        }
    }

    fn file_loaded(&self, setting: &'static str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.loaded
            .get_or_create(&SettingLabels { setting })
            .set(now);
    }
}
