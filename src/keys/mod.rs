//! The client keys in force. They are replaced whole when their file changes ([`watch`]); a
//! request reads them once, through an `ArcSwap`, and keeps what it read to its end, so
//! exchanges in flight are never touched. (The upstreams' keys live with the upstreams.)

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::config::{EntryRules, KeySettings};
use crate::policy::client_keys::{Client, ClientKeys};

/// The client keys a request is checked against. Shared by the service and the file watcher.
pub(crate) struct Keys {
    clients: ArcSwap<ClientKeys>,
    /// What a reloaded list must hold.
    pub(crate) rules: EntryRules,
}

impl Keys {
    pub(crate) fn new(settings: &KeySettings) -> Keys {
        Keys {
            clients: ArcSwap::from_pointee(settings.client_keys.clone()),
            rules: settings.rules,
        }
    }

    /// The client, if the key it presents (in a WebSocket subprotocol, else in the headers) is
    /// one of the client keys now in force.
    pub(crate) fn identify(
        &self,
        headers: &HeaderMap,
        subprotocol_key: Option<&[u8]>,
    ) -> Option<Client> {
        let clients = self.clients.load();
        match subprotocol_key {
            Some(key) => clients.admit_key(Some(key)),
            None => clients.admit(headers),
        }
    }

    pub(crate) fn replace_client_keys(&self, keys: ClientKeys) {
        self.clients.store(Arc::new(keys));
    }
}
