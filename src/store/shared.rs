//! The client limits in Redis: one admission script per request on a shared, multiplexed
//! connection that reconnects by itself (redis-rs's `ConnectionManager`), and one background
//! task that writes what needs no answer (slots given back, tokens charged, leases renewed) in
//! pipelines, and probes Redis while it is away.
//!
//! Keys carry the client's name, never a key, inside a hash tag, so that one client's keys
//! sit together: `memoctopus:{web}:rate`, `memoctopus:{web}:in_flight`,
//! `memoctopus:{web}:tokens:day:20423`. Every key expires by itself.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Fallback, SharedLimitsSettings};
use crate::metrics::Metrics;
use crate::policy::client_limits::{unix_now, Budget, ClientLimits, Limit, LimitSettings, Limited};

/// Charges kept for Redis while it does not answer, at most; older ones are dropped.
const MAX_PENDING_CHARGES: usize = 10_000;
/// How often an absent Redis is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest a background write may take: the connection's response timeout.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A write that needs no answer.
enum Write {
    Release {
        client: Arc<str>,
        slot: u64,
    },
    Charge {
        client: Arc<str>,
        budget: Budget,
        tokens: u64,
        at: u64,
    },
}

pub(super) struct Shared {
    connection: ConnectionManager,
    admit: Script,
    refresh: Script,
    prefix: String,
    timeout: Duration,
    lease: Duration,
    fallback: Fallback,
    /// Whether Redis answered last; while not, the process's own limits decide.
    up: AtomicBool,
    /// This process's part of every slot's name, so that slots of replicas never collide.
    replica: String,
    next_slot: AtomicU64,
    /// The slots this process holds, whose leases it renews.
    held: Mutex<HashMap<u64, Arc<str>>>,
    writes: Mutex<Vec<Write>>,
    wake: Notify,
    stopped: AtomicBool,
    local: ClientLimits,
    metrics: Arc<Metrics>,
}

/// A client's admission through Redis.
pub(super) struct SharedPermit {
    shared: Arc<Shared>,
    client: Arc<str>,
    slot: Option<u64>,
    budget: Option<Budget>,
}

impl std::fmt::Debug for SharedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermit")
            .field("client", &self.client)
            .field("slot", &self.slot)
            .finish()
    }
}

impl SharedPermit {
    pub(super) fn charge(&self, tokens: u64) {
        if let Some(budget) = self.budget {
            self.shared.local.charge(&self.client, budget, tokens);
            self.shared.charge(&self.client, budget, tokens);
        }
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.shared.held().remove(&slot);
            self.shared.queue(Write::Release {
                client: self.client.clone(),
                slot,
            });
        }
    }
}

impl Shared {
    pub(super) fn start(
        settings: &SharedLimitsSettings,
        local: ClientLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Shared>, String> {
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(settings.url.as_str()),
        }
        .map_err(|e| format!("PROXY_LIMITS_REDIS_URL: {}", why(&e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(WRITE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("PROXY_LIMITS_REDIS_URL: {}", why(&e)))?;
        let shared = Arc::new(Shared {
            connection,
            admit: Script::new(include_str!("admit.lua")),
            refresh: Script::new(include_str!("refresh.lua")),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            lease: settings.lease,
            fallback: settings.fallback,
            up: AtomicBool::new(false),
            replica: format!(
                "{:016x}",
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            ),
            next_slot: AtomicU64::new(0),
            held: Mutex::default(),
            writes: Mutex::default(),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            local,
            metrics,
        });
        metrics_backend(&shared, false);
        tokio::spawn(background(shared.clone()));
        Ok(shared)
    }

    pub(super) fn fallback(&self) -> Fallback {
        self.fallback
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<str>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue(&self, write: Write) {
        let up = self.up.load(Ordering::Relaxed);
        {
            let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
            // While Redis is away a slot needs no giving back (its lease ends), and charges
            // are kept up to a bound.
            if !up && matches!(write, Write::Release { .. }) || writes.len() >= MAX_PENDING_CHARGES
            {
                return;
            }
            writes.push(write);
        }
        self.wake.notify_one();
    }

    /// Adds an answer's tokens to the client's count in Redis, when it next answers. Every
    /// answer is charged so, whether Redis or, while it was away, the process admitted it.
    pub(super) fn charge(&self, client: &Arc<str>, budget: Budget, tokens: u64) {
        self.queue(Write::Charge {
            client: client.clone(),
            budget,
            tokens,
            at: unix_now(),
        });
    }

    fn key(&self, client: &str, what: &str) -> String {
        format!("{}{{{client}}}:{what}", self.prefix)
    }

    fn budget_key(&self, client: &str, budget: &Budget, at: u64) -> String {
        let window = budget.window;
        self.key(
            client,
            &format!("tokens:{}:{}", window.name(), at / window.seconds()),
        )
    }

    /// Admits through Redis: `Ok` with a permit (or none, when nothing needs holding or
    /// charging), `Err(Some)` for a refusal, `Err(None)` when Redis did not answer.
    pub(super) async fn admit(
        self: &Arc<Self>,
        client: &Arc<str>,
        limits: LimitSettings,
    ) -> Result<Option<SharedPermit>, Option<Limited>> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(None);
        }
        let at = unix_now();
        let slot = limits
            .max_in_flight
            .map(|_| self.next_slot.fetch_add(1, Ordering::Relaxed));
        let budget_key = match &limits.token_budget {
            Some(budget) => self.budget_key(client, budget, at),
            None => self.key(client, "tokens"),
        };
        let mut invocation = self.admit.key(self.key(client, "rate"));
        invocation
            .key(self.key(client, "in_flight"))
            .key(budget_key)
            .arg(limits.rate.map_or(0, |r| r.per_minute))
            .arg(limits.rate.map_or(1, |r| r.burst))
            .arg(limits.max_in_flight.unwrap_or(0))
            .arg(limits.token_budget.map_or(0, |b| b.tokens))
            .arg(slot.map_or_else(String::new, |slot| self.slot_name(slot)))
            .arg(self.lease.as_millis() as u64);
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(u8, u64)>(&mut connection),
        )
        .await;
        let refused = |limit, retry_after: u64| {
            Err(Some(Limited {
                limit,
                retry_after: Duration::from_secs(retry_after),
            }))
        };
        match answer {
            Ok(Ok((0, _))) => {
                self.metrics.limits.redis_round_trip(started.elapsed());
                if let Some(slot) = slot {
                    self.held().insert(slot, client.clone());
                }
                if slot.is_none() && limits.token_budget.is_none() {
                    return Ok(None);
                }
                Ok(Some(SharedPermit {
                    shared: self.clone(),
                    client: client.clone(),
                    slot,
                    budget: limits.token_budget,
                }))
            }
            Ok(Ok((code, retry_after))) => {
                self.metrics.limits.redis_round_trip(started.elapsed());
                match code {
                    1 => refused(Limit::Concurrency, 1),
                    2 => {
                        let left = limits
                            .token_budget
                            .map_or(1, |b| b.window.seconds() - at % b.window.seconds());
                        refused(Limit::TokenBudget, left)
                    }
                    _ => refused(Limit::Rate, retry_after.max(1)),
                }
            }
            Ok(Err(error)) => {
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                {
                    "connection"
                } else {
                    "response"
                };
                self.failed(kind, &why(&error));
                Err(None)
            }
            Err(_) => {
                // The script may still run: the slot it might take is given back.
                if let Some(slot) = slot {
                    self.queue(Write::Release {
                        client: client.clone(),
                        slot,
                    });
                }
                self.failed("timeout", "no answer within PROXY_LIMITS_REDIS_TIMEOUT");
                Err(None)
            }
        }
    }

    fn slot_name(&self, slot: u64) -> String {
        format!("{}-{slot:x}", self.replica)
    }

    /// Redis failed a call: counted, and, the first time, the change to local limits logged.
    fn failed(&self, kind: &'static str, why: &str) {
        self.metrics.limits.redis_error(kind);
        if self.up.swap(false, Ordering::Relaxed) {
            metrics_backend(self, false);
            tracing::warn!(
                error = why,
                fallback = match self.fallback {
                    Fallback::Local => "local",
                    Fallback::Refuse => "refuse",
                },
                "the limits' Redis did not answer; each process's own limits are in force until it does"
            );
        }
    }

    /// Writes what is queued, and renews the held slots' leases when `renew`.
    async fn flush(&self, renew: bool) -> Result<(), redis::RedisError> {
        let writes =
            std::mem::take(&mut *self.writes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut pipe = redis::pipe();
        let mut charges = Vec::new();
        for write in writes {
            match write {
                Write::Release { client, slot } => {
                    pipe.cmd("ZREM")
                        .arg(self.key(&client, "in_flight"))
                        .arg(self.slot_name(slot))
                        .ignore();
                }
                Write::Charge {
                    ref client,
                    budget,
                    tokens,
                    at,
                } => {
                    let key = self.budget_key(client, &budget, at);
                    let left = budget.window.seconds() - at % budget.window.seconds();
                    pipe.cmd("INCRBY").arg(&key).arg(tokens).ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(left + 60).ignore();
                    charges.push(write);
                }
            }
        }
        let mut connection = self.connection.clone();
        // Each write is bounded by the connection's response timeout (WRITE_TIMEOUT).
        let written = if pipe.is_empty() {
            Ok(())
        } else {
            pipe.query_async::<()>(&mut connection).await
        };
        if written.is_err() {
            // Tokens are kept for when Redis is back; a slot expires with its lease anyway.
            let mut queued = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
            queued.extend(charges);
            let excess = queued.len().saturating_sub(MAX_PENDING_CHARGES);
            queued.drain(..excess);
            return written;
        }
        if renew {
            let held: Vec<(u64, Arc<str>)> =
                self.held().iter().map(|(s, c)| (*s, c.clone())).collect();
            if !held.is_empty() {
                let mut invocation = self.refresh.arg(self.lease.as_millis() as u64);
                for (slot, client) in &held {
                    invocation
                        .key(self.key(client, "in_flight"))
                        .arg(self.slot_name(*slot));
                }
                invocation.invoke_async::<u64>(&mut connection).await?;
            }
        }
        Ok(())
    }

    /// Whether Redis answers a PING within the timeout.
    async fn probe(&self) -> bool {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        matches!(
            tokio::time::timeout(
                self.timeout.max(Duration::from_millis(250)),
                ping.query_async::<String>(&mut connection)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// What went wrong, by its kind only: a message could hold the URL, and with it a password.
fn why(error: &redis::RedisError) -> String {
    format!("{:?}", error.kind())
}

fn metrics_backend(shared: &Shared, up: bool) {
    shared.metrics.limits.backend(up);
}

/// Writes queued work as it comes, renews leases a third of a lease apart, and while Redis is
/// away probes it every second, switching back to shared limits when it answers. Ends when the
/// limiter is dropped.
async fn background(this: Arc<Shared>) {
    let mut last_renewal = Instant::now();
    while !this.stopped.load(Ordering::Relaxed) {
        if !this.up.load(Ordering::Relaxed) {
            if this.probe().await {
                this.up.store(true, Ordering::Relaxed);
                metrics_backend(&this, true);
                tracing::info!("the limits' Redis answers; the shared limits are in force");
            } else {
                tokio::select! {
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(PROBE_EVERY) => {}
                }
                continue;
            }
        }
        let renew = last_renewal.elapsed() >= this.lease / 3;
        if renew {
            last_renewal = Instant::now();
        }
        if let Err(error) = this.flush(renew).await {
            this.failed("connection", &why(&error));
        }
        let wait = (this.lease / 3).saturating_sub(last_renewal.elapsed());
        tokio::select! {
            () = this.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
