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
use redis::{ErrorKind, Script, ServerErrorKind};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::local::LocalLimits;
use crate::config::{Fallback, SharedLimitsSettings};
use crate::metrics::Metrics;
use crate::policy::client_limits::{unix_now, Budget, Limit, LimitSettings, Limited};

/// Exchanges kept for Redis to settle while it does not answer, at most; older ones are
/// dropped, and logged with their count.
const MAX_PENDING: usize = 10_000;
/// How often an absent Redis is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest a background write may take: the connection's response timeout, and the bound
/// on a pipeline of settlements.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis keeps the number of the last batch a replica applied for a client: longer
/// than any batch waits to be sent again (a day's window is the longest a charge counts in).
const APPLIED_KEPT_SECS: u64 = 2 * 86_400;

/// What one finished exchange leaves for Redis: its slot to give back (with the tokens it
/// reserved), and the tokens it cost.
struct Settle {
    client: Arc<str>,
    slot: Option<String>,
    charge: Option<Charge>,
}

#[derive(Clone, Copy)]
struct Charge {
    budget: Budget,
    tokens: u64,
    at: u64,
}

/// One client's settlements, sent as one script call under a number that Redis records, so
/// that sending it again never applies it twice.
struct Batch {
    client: Arc<str>,
    number: u64,
    settles: Vec<Settle>,
}

pub(super) struct Shared {
    connection: ConnectionManager,
    admit: Script,
    refresh: Script,
    settle: Script,
    prefix: String,
    timeout: Duration,
    lease: Duration,
    fallback: Fallback,
    /// Whether Redis answered last; while not, the process's own limits decide.
    up: AtomicBool,
    /// This process's part of every slot's and batch's name, so that replicas never collide.
    replica: String,
    next_slot: AtomicU64,
    /// The slots this process holds, whose leases it renews: slot, client, name in Redis.
    held: Mutex<HashMap<u64, (Arc<str>, String)>>,
    /// Settlements not yet in a batch.
    queued: Mutex<Vec<Settle>>,
    /// Batches sent but not known to be applied, oldest first; one flush at a time.
    unsettled: tokio::sync::Mutex<Vec<Batch>>,
    next_batch: AtomicU64,
    wake: Notify,
    stopped: AtomicBool,
    local: LocalLimits,
    metrics: Arc<Metrics>,
}

/// A client's admission through Redis.
pub(super) struct SharedPermit {
    shared: Arc<Shared>,
    client: Arc<str>,
    /// The slot's name in Redis, when the admission took one.
    slot: Option<(u64, String)>,
    budget: Option<Budget>,
    charged: Mutex<Option<Charge>>,
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
    /// Records what the exchange cost; it is written, with the slot given back, when the
    /// permit is dropped.
    pub(super) fn charge(&self, tokens: u64) {
        if let Some(budget) = self.budget {
            self.shared.local.charge(&self.client, budget, tokens);
            *self.charged.lock().unwrap_or_else(PoisonError::into_inner) = Some(Charge {
                budget,
                tokens,
                at: unix_now(),
            });
        }
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        let charge = self
            .charged
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let slot = self.slot.take().map(|(slot, name)| {
            self.shared.held().remove(&slot);
            name
        });
        self.shared.queue(Settle {
            client: self.client.clone(),
            slot,
            charge,
        });
    }
}

/// Why a flush left work unsettled: the metrics' `kind`, and what Redis said, by its kind.
struct Unsettled {
    kind: &'static str,
    why: String,
}

impl Shared {
    pub(super) fn start(
        settings: &SharedLimitsSettings,
        local: LocalLimits,
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
            settle: Script::new(include_str!("settle.lua")),
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
            queued: Mutex::default(),
            unsettled: tokio::sync::Mutex::default(),
            next_batch: AtomicU64::new(0),
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

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<str>, String)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue(&self, settle: Settle) {
        if settle.slot.is_none() && settle.charge.is_none() {
            return;
        }
        {
            let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            if queued.len() >= MAX_PENDING {
                self.lost(1);
                return;
            }
            queued.push(settle);
        }
        self.wake.notify_one();
    }

    /// Settlements dropped for want of room, or not written before the process ended.
    fn lost(&self, count: usize) {
        self.metrics.limits.redis_error("dropped");
        tracing::warn!(
            count,
            "the limits' Redis did not take these finished exchanges' slots and tokens; they are not counted there"
        );
    }

    /// Adds the tokens of an exchange admitted while Redis was away to the client's count in
    /// Redis, when it next answers.
    pub(super) fn charge(&self, client: &Arc<str>, budget: Budget, tokens: u64) {
        self.queue(Settle {
            client: client.clone(),
            slot: None,
            charge: Some(Charge {
                budget,
                tokens,
                at: unix_now(),
            }),
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

    /// Admits through Redis, reserving `reserve` tokens of the client's budget until the
    /// exchange is settled: `Ok` with a permit (or none, when nothing needs holding or
    /// charging), `Err(Some)` for a refusal, `Err(None)` when Redis did not answer.
    pub(super) async fn admit(
        self: &Arc<Self>,
        client: &Arc<str>,
        limits: LimitSettings,
        reserve: u64,
    ) -> Result<Option<SharedPermit>, Option<Limited>> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(None);
        }
        let at = unix_now();
        let reserve = limits.reservation(reserve);
        let slot = (limits.max_in_flight.is_some() || limits.token_budget.is_some()).then(|| {
            let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
            (slot, format!("{}-{slot:x}/{reserve}", self.replica))
        });
        let invocation = self.admission(client, &limits, at, slot.as_ref(), reserve);
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(u8, u64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => {
                self.metrics.limits.redis_round_trip(started.elapsed());
                self.admitted(client, &limits, at, slot, answer)
            }
            Ok(Err(error)) => {
                self.failed(error_kind(&error), &why(&error));
                Err(None)
            }
            Err(_) => {
                // The script may still run: the slot it might take is given back.
                if let Some((_, name)) = slot {
                    self.queue(Settle {
                        client: client.clone(),
                        slot: Some(name),
                        charge: None,
                    });
                }
                self.failed("timeout", "no answer within PROXY_LIMITS_REDIS_TIMEOUT");
                Err(None)
            }
        }
    }

    /// The admission script's call for `client` under `limits` at `at`, taking `slot` (its
    /// number and member name) and reserving `reserve` tokens.
    fn admission(
        &self,
        client: &Arc<str>,
        limits: &LimitSettings,
        at: u64,
        slot: Option<&(u64, String)>,
        reserve: u64,
    ) -> redis::ScriptInvocation<'_> {
        let budget_key = match &limits.token_budget {
            Some(budget) => self.budget_key(client, budget, at),
            None => self.key(client, "tokens"),
        };
        let mut invocation = self.admit.key(self.key(client, "rate"));
        invocation
            .key(self.key(client, "in_flight"))
            .key(budget_key)
            .key(self.key(client, "reserved"))
            .arg(limits.rate.map_or(0, |r| r.per_minute))
            .arg(limits.rate.map_or(1, |r| r.burst))
            .arg(limits.max_in_flight.unwrap_or(0))
            .arg(limits.token_budget.map_or(0, |b| b.tokens))
            .arg(slot.map_or("", |(_, name)| name.as_str()))
            .arg(self.lease.as_millis() as u64)
            .arg(reserve);
        invocation
    }

    /// The script's answer, `(code, retry_after)`: 0 admitted (holding `slot`, if any), else
    /// the limit that refused.
    fn admitted(
        self: &Arc<Self>,
        client: &Arc<str>,
        limits: &LimitSettings,
        at: u64,
        slot: Option<(u64, String)>,
        (code, retry_after): (u8, u64),
    ) -> Result<Option<SharedPermit>, Option<Limited>> {
        let refused = |limit, retry_after: u64| {
            Err(Some(Limited {
                limit,
                retry_after: Duration::from_secs(retry_after),
            }))
        };
        match code {
            0 => {
                let Some((number, name)) = &slot else {
                    return Ok(None);
                };
                self.held().insert(*number, (client.clone(), name.clone()));
                Ok(Some(SharedPermit {
                    shared: self.clone(),
                    client: client.clone(),
                    slot,
                    budget: limits.token_budget,
                    charged: Mutex::new(None),
                }))
            }
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

    /// The script call that settles `batch`.
    fn settle_call(&self, batch: &Batch) -> redis::Cmd {
        let mut call = redis::cmd("EVALSHA");
        let charges: Vec<&Charge> = batch
            .settles
            .iter()
            .filter_map(|s| s.charge.as_ref())
            .collect();
        let slots: Vec<&String> = batch
            .settles
            .iter()
            .filter_map(|s| s.slot.as_ref())
            .collect();
        let client = &batch.client;
        call.arg(self.settle.get_hash())
            .arg(3 + charges.len())
            .arg(self.key(client, &format!("applied:{}", self.replica)))
            .arg(self.key(client, "in_flight"))
            .arg(self.key(client, "reserved"));
        for charge in &charges {
            call.arg(self.budget_key(client, &charge.budget, charge.at));
        }
        call.arg(batch.number)
            .arg(APPLIED_KEPT_SECS)
            .arg(slots.len());
        for slot in slots {
            call.arg(slot);
        }
        for charge in charges {
            let window = charge.budget.window.seconds();
            // The count lives a minute past its window's end.
            let expires = (charge.at / window + 1) * window + 60;
            call.arg(charge.tokens).arg(expires);
        }
        call
    }

    /// Sends every unsettled batch, oldest first, with what is queued as new batches, one a
    /// client. A batch leaves the list once Redis answered that it applied it, now or before,
    /// or rejected it; a lost or late answer leaves it to be sent again under its number,
    /// which Redis will not apply twice. Then renews the held slots' leases when `renew`.
    async fn flush(&self, renew: bool) -> Result<(), Unsettled> {
        let mut unsettled = self.unsettled.lock().await;
        let queued =
            std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner));
        let mut by_client: Vec<Batch> = Vec::new();
        for settle in queued {
            match by_client.iter_mut().find(|b| b.client == settle.client) {
                Some(batch) => batch.settles.push(settle),
                None => by_client.push(Batch {
                    client: settle.client.clone(),
                    number: self.next_batch.fetch_add(1, Ordering::Relaxed) + 1,
                    settles: vec![settle],
                }),
            }
        }
        unsettled.extend(by_client);
        let mut excess = unsettled.iter().map(|b| b.settles.len()).sum::<usize>();
        excess = excess.saturating_sub(MAX_PENDING);
        while excess > 0 && !unsettled.is_empty() {
            let oldest = unsettled.remove(0);
            excess = excess.saturating_sub(oldest.settles.len());
            self.lost(oldest.settles.len());
        }
        let mut connection = self.connection.clone();
        let mut result = Ok(());
        // Twice at most: once more after loading the script into a Redis that lost it.
        for _ in 0..2 {
            if unsettled.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for batch in unsettled.iter() {
                pipe.add_command(self.settle_call(batch));
            }
            // Bounded here: redis-rs's response timeout does not cover a pipeline.
            let sent = tokio::time::timeout(
                WRITE_TIMEOUT,
                pipe.query_async::<Vec<redis::RedisResult<(u8, u64)>>>(&mut connection),
            )
            .await;
            let answers = match sent {
                Ok(Ok(answers)) => answers,
                // Nothing is known of what Redis applied: every batch is kept, to be sent again
                // under its number.
                Ok(Err(error)) => {
                    return Err(Unsettled {
                        kind: error_kind(&error),
                        why: why(&error),
                    })
                }
                Err(_) => {
                    return Err(Unsettled {
                        kind: "timeout",
                        why: "no answer within 2 s".to_owned(),
                    })
                }
            };
            let mut load = false;
            let mut index = 0;
            let mut kept_because = None;
            unsettled.retain(|batch| {
                let answer = answers.get(index);
                index += 1;
                match answer {
                    Some(Ok((_, rejected))) => {
                        if *rejected > 0 {
                            self.metrics.limits.redis_error("response");
                            tracing::warn!(
                                client = %batch.client,
                                rejected,
                                "the limits' Redis rejected a charge (not a count it can hold); it is dropped"
                            );
                        }
                        false
                    }
                    Some(Err(error)) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        load = true;
                        true
                    }
                    // Refused before it ran (out of memory, loading, busy): sent again later.
                    Some(Err(error)) if error.code().is_some_and(not_run) => {
                        kept_because.get_or_insert_with(|| why(error));
                        true
                    }
                    Some(Err(error)) => {
                        self.metrics.limits.redis_error("response");
                        tracing::warn!(
                            client = %batch.client,
                            settled = batch.settles.len(),
                            error = why(error),
                            "the limits' Redis failed a settlement; it is dropped"
                        );
                        false
                    }
                    None => true,
                }
            });
            if let Some(why) = kept_because {
                result = Err(Unsettled {
                    kind: "response",
                    why,
                });
                break;
            }
            if !load {
                break;
            }
            if let Err(error) = self
                .settle
                .prepare_invoke()
                .load_async(&mut connection)
                .await
            {
                return Err(Unsettled {
                    kind: error_kind(&error),
                    why: why(&error),
                });
            }
        }
        drop(unsettled);
        result?;
        if renew {
            self.renew(&mut connection)
                .await
                .map_err(|error| Unsettled {
                    kind: error_kind(&error),
                    why: why(&error),
                })?;
        }
        Ok(())
    }

    async fn renew(&self, connection: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        let held: Vec<(Arc<str>, String)> = self.held().values().cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        let mut invocation = self.refresh.arg(self.lease.as_millis() as u64);
        for (client, name) in &held {
            invocation
                .key(self.key(client, "in_flight"))
                .key(self.key(client, "reserved"))
                .arg(name);
        }
        invocation.invoke_async::<u64>(connection).await?;
        Ok(())
    }

    /// How many finished exchanges wait for Redis.
    async fn waiting(&self) -> usize {
        let queued = self
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        queued
            + self
                .unsettled
                .lock()
                .await
                .iter()
                .map(|b| b.settles.len())
                .sum::<usize>()
    }

    /// Writes every finished exchange's slot and tokens before the process ends, trying until
    /// `deadline`; what could not be written is logged with its count.
    pub(super) async fn settle_all(&self, deadline: Instant) {
        self.stop();
        loop {
            let written = tokio::time::timeout_at(deadline, self.flush(false)).await;
            if matches!(written, Ok(Ok(()))) && self.waiting().await == 0 {
                return;
            }
            if Instant::now() + Duration::from_millis(100) >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.waiting().await;
        if left > 0 {
            self.lost(left);
        }
    }

    /// Whether Redis answers: by loading the settlement script, so that the first write is
    /// applied where it is sent, then by settling what waits, if anything does.
    async fn probe(&self) -> bool {
        let mut connection = self.connection.clone();
        let loaded = tokio::time::timeout(
            self.timeout.max(Duration::from_millis(250)),
            self.settle.prepare_invoke().load_async(&mut connection),
        )
        .await;
        if !matches!(loaded, Ok(Ok(_))) {
            return false;
        }
        self.waiting().await == 0 || self.flush(false).await.is_ok()
    }
}

/// Server errors that mean the script did not run at all, so that sending it again is safe.
fn not_run(code: &str) -> bool {
    matches!(
        code,
        "OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY"
    )
}

/// The metrics' `kind` of a failed call.
fn error_kind(error: &redis::RedisError) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        "connection"
    } else {
        "response"
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
/// limiter is dropped or settles all before the process ends.
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
        if let Err(unsettled) = this.flush(renew).await {
            this.failed(unsettled.kind, &unsettled.why);
        }
        let wait = (this.lease / 3).saturating_sub(last_renewal.elapsed());
        tokio::select! {
            () = this.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
