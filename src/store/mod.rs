//! Where the client limits are kept: in this process ([`local`]), or, with
//! `PROXY_LIMITS_REDIS_URL`, in a Redis that every replica shares ([`shared`]). The service
//! asks the [`Limiter`] once per request and gets a [`Permit`] or the limit that refused it.
//!
//! A request under a token budget reserves what it may cost at admission (its input's estimate
//! and `PROXY_CLIENT_OUTPUT_RESERVE`), and is admitted only while the tokens spent and reserved
//! leave room; the reservation becomes the real count when the exchange ends.
//!
//! With Redis, admission is one script that checks and takes every limit at once, the
//! reservation included; what happens after the answer (giving back the slot and its
//! reservation, charging the tokens) is queued and written in the background, each exchange
//! once, so nothing else on the request path waits for Redis. A drain writes what is queued
//! before the process ends. When Redis does not answer
//! within `PROXY_LIMITS_REDIS_TIMEOUT`, the process's own limits decide (or, with
//! `PROXY_LIMITS_REDIS_FALLBACK=refuse`, the request is refused) until a probe finds it again.

mod local;
mod shared;

use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Fallback, SharedLimitsSettings};
use crate::metrics::Metrics;
use crate::policy::client_limits::{unix_now, Limit, LimitSettings, Limited};

use local::{LocalLimits, LocalPermit};
use shared::SharedPermit;

/// The most a request reserves: far above any answer, and exact in Redis's Lua numbers.
const MAX_RESERVE: u64 = 1 << 40;

/// The limits of every client, wherever they are kept.
pub(crate) struct Limiter {
    local: LocalLimits,
    /// `PROXY_CLIENT_OUTPUT_RESERVE`: the tokens a request under a budget reserves for its
    /// answer.
    output_reserve: u64,
    shared: Option<Arc<shared::Shared>>,
}

/// A client's admission: its in-flight slot, held until dropped, and its token budget,
/// charged with what the exchange cost.
pub(crate) struct Permit(Held);

enum Held {
    /// Admitted by this process's own limits; with shared limits configured (Redis was away),
    /// its tokens are charged there too once Redis answers.
    Local(LocalPermit, Option<Arc<shared::Shared>>),
    Shared(SharedPermit),
}

impl Permit {
    /// Adds an exchange's tokens to the client's count for the window.
    pub(crate) fn charge(&self, tokens: u64) {
        match &self.0 {
            Held::Local(permit, shared) => {
                permit.charge(tokens);
                if let (Some(shared), Some(budget)) = (shared, permit.budget()) {
                    shared.charge(permit.client(), budget, tokens);
                }
            }
            Held::Shared(permit) => permit.charge(tokens),
        }
    }
}

impl Limiter {
    /// The limits with `defaults`, kept in this process or, with `shared`, in Redis. Starts the
    /// background tasks that write to Redis and watch whether it answers; they end with the
    /// limiter.
    pub(crate) fn new(
        defaults: LimitSettings,
        output_reserve: u64,
        shared: Option<&SharedLimitsSettings>,
        metrics: Arc<Metrics>,
    ) -> Result<Limiter, String> {
        let local = LocalLimits::new(defaults);
        let shared = shared
            .map(|settings| shared::Shared::start(settings, local.clone(), metrics))
            .transpose()?;
        Ok(Limiter {
            local,
            output_reserve,
            shared,
        })
    }

    /// Takes what `client`, with its `own` limits over the defaults, needs to go on, or says
    /// which limit refused it. Under a budget, the request reserves `input` tokens, its
    /// input's estimate, and the output reserve.
    pub(crate) async fn admit(
        &self,
        client: &Arc<str>,
        own: LimitSettings,
        input: u64,
    ) -> Result<Option<Permit>, Limited> {
        let limits = self.local.limits_of(own);
        let reserve = input.saturating_add(self.output_reserve).min(MAX_RESERVE);
        if let Some(shared) = &self.shared {
            if limits != LimitSettings::default() {
                match shared.admit(client, limits, reserve).await {
                    Ok(permit) => return Ok(permit.map(|p| Permit(Held::Shared(p)))),
                    Err(Some(limited)) => return Err(limited),
                    // Redis did not answer.
                    Err(None) if shared.fallback() == Fallback::Refuse => {
                        return Err(Limited {
                            limit: Limit::Unavailable,
                            retry_after: std::time::Duration::from_secs(1),
                        })
                    }
                    Err(None) => {}
                }
            }
        }
        self.local
            .admit(client, own, Instant::now(), unix_now(), reserve)
            .map(|permit| permit.map(|permit| Permit(Held::Local(permit, self.shared.clone()))))
    }
}

impl Limiter {
    /// Writes every finished exchange's slot and tokens to the shared store, if there is one,
    /// trying until `deadline`.
    pub(crate) async fn settle_all(&self, deadline: Instant) {
        if let Some(shared) = &self.shared {
            shared.settle_all(deadline).await;
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.stop();
        }
    }
}
