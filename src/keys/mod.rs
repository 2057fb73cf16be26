//! The keys in force: the server's credential for the upstream and the clients' keys. Each is
//! replaced whole when its file changes ([`watch`]); a request reads each once, through an
//! `ArcSwap`, and keeps what it read to its end, so exchanges in flight are never touched.

pub(crate) mod watch;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue};

use crate::config::{EntryRules, KeySettings};
use crate::policy::client_keys::{Client, ClientKeys};
use crate::policy::headers::UpstreamAuth;

/// The keys a request uses. Shared by the service and the file watcher.
pub(crate) struct Keys {
    /// The server's key as `PROXY_UPSTREAM_AUTH` sends it (`Bearer <key>` or the bare key),
    /// made once per load rather than per request, and marked sensitive.
    credential: ArcSwap<HeaderValue>,
    clients: ArcSwap<ClientKeys>,
    auth: UpstreamAuth,
    /// What a reloaded list must hold.
    pub(crate) rules: EntryRules,
}

impl Keys {
    pub(crate) fn new(settings: &KeySettings, auth: UpstreamAuth) -> Keys {
        Keys {
            credential: ArcSwap::from_pointee(auth.credential(&settings.api_key)),
            clients: ArcSwap::from_pointee(settings.client_keys.clone()),
            auth,
            rules: settings.rules,
        }
    }

    /// The upstream credential for the next request.
    pub(crate) fn credential(&self) -> HeaderValue {
        HeaderValue::clone(&self.credential.load())
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

    pub(crate) fn replace_api_key(&self, key: &HeaderValue) {
        self.credential.store(Arc::new(self.auth.credential(key)));
    }

    pub(crate) fn replace_client_keys(&self, keys: ClientKeys) {
        self.clients.store(Arc::new(keys));
    }
}
