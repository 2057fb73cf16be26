//! The pools' housekeeping: once a second, closing idle connections, for as long as the pool
//! lives.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// Calls `sweep` on the pool once a second, from a task that ends when the pool is dropped.
/// Must be called within the runtime.
pub(super) fn every_second<P: Send + Sync + 'static>(pool: &Arc<P>, sweep: fn(&P)) {
    let weak: Weak<P> = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            sweep(&pool);
        }
    });
}
