//! The upstreams requests go to: `OPENAI_BASE_URL`'s alone, or the entries of
//! `PROXY_UPSTREAMS_FILE`, each with its key, its pools and its cooldown.
//!
//! - `choice`: which upstream a request goes to, by priority and weight.
//! - `cooldown`: how long an upstream that answered "not now" rests.
//! - `budget`: how many failovers the last ten seconds allow.
//! - `failover`: a request sent to one upstream after another, only while that can never
//!   charge a user twice, and a WebSocket upgrade likewise before it switches.
//!
//! The set is replaced whole when the file changes; a request keeps the set it started with,
//! so an upstream removed while it serves finishes what it holds and gets nothing new. An
//! upstream kept across a change (same name, same place) keeps its connections and its rest.

mod bounded;
mod budget;
mod choice;
mod cooldown;
mod failover;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

pub(crate) use failover::Tried;

use crate::config::{FailoverRules, UpstreamEntry, UpstreamSet};
use crate::metrics::Metrics;
use crate::outcome::Target;
use crate::policy::headers::{Credential, UpstreamAuth};
use crate::policy::routes::upstream_target;
use crate::upstream::{SendBody, Upstream};
use budget::Budget;
use choice::Candidate;

/// The upstreams in force, shared by every request and the file watcher.
pub(crate) struct Upstreams<B: SendBody> {
    set: ArcSwap<Set<B>>,
    /// What cooldowns are measured from.
    epoch: Instant,
    /// Whose turn it is, for the spread by weight.
    turn: AtomicU64,
    budget: Budget,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// One version of the set.
struct Set<B: SendBody> {
    members: Vec<Member<B>>,
    rules: FailoverRules,
}

/// One upstream of the set.
struct Member<B: SendBody> {
    entry: UpstreamEntry,
    credential: Credential,
    pools: Arc<Upstream<B>>,
    rest: Arc<Rest>,
    /// Its `memoctopus_upstream_attempts_total{result="answered"}`.
    answered: Counter,
    /// Where it is, for the traces.
    target: Arc<Target>,
}

/// An upstream's cooldown, kept across reloads that keep it.
#[derive(Default)]
struct Rest {
    /// When it takes requests again, in the set's milliseconds.
    until: AtomicU64,
    /// Whether its rejected key has been logged: once, until the key changes.
    key_rejected_told: AtomicBool,
}

impl<B: SendBody> Upstreams<B> {
    /// Must be called within the runtime: the pools start their sweeping tasks.
    pub(crate) fn new(
        set: &UpstreamSet,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Upstreams<B>>, String> {
        let upstreams = Arc::new(Upstreams {
            set: ArcSwap::from_pointee(Set {
                members: Vec::new(),
                rules: set.failover,
            }),
            epoch: Instant::now(),
            turn: AtomicU64::new(0),
            budget: Budget::default(),
            connect_timeout,
            metrics,
        });
        upstreams.replace(set.clone())?;
        // The availability gauges follow the cooldowns' ends, whatever a reload makes of the
        // set.
        let weak = Arc::downgrade(&upstreams);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let Some(upstreams) = weak.upgrade() else {
                    return;
                };
                upstreams.show_availability();
            }
        });
        Ok(upstreams)
    }

    /// Puts `set` in force for the next request. An entry with the name and the place of one
    /// in force keeps its connections, and its cooldown unless its key changed.
    pub(crate) fn replace(&self, set: UpstreamSet) -> Result<String, String> {
        let old = self.set.load();
        let mut members = Vec::with_capacity(set.entries.len());
        for entry in set.entries {
            let same = old.members.iter().find(|m| m.entry.name == entry.name);
            let pools = match same.filter(|m| same_place(&m.entry, &entry)) {
                Some(kept) => kept.pools.clone(),
                None => Arc::new(
                    Upstream::new(&entry.settings, self.connect_timeout, self.metrics.clone())
                        .map_err(|e| format!("upstream {:?}'s TLS settings: {e}", entry.name))?,
                ),
            };
            let rest = match same.filter(|m| same_place(&m.entry, &entry)) {
                Some(kept) if kept.entry.api_key == entry.api_key => kept.rest.clone(),
                _ => Arc::default(),
            };
            let settings = &entry.settings;
            let azure = settings.auth == UpstreamAuth::ApiKey;
            let target = Arc::new(Target {
                host: settings.authority.host().into(),
                port: settings.port(),
                azure,
            });
            members.push(Member {
                target,
                answered: self.metrics.upstream.answered(&entry.name),
                credential: Credential::new(entry.settings.auth, &entry.api_key),
                entry,
                pools,
                rest,
            });
        }
        for gone in old
            .members
            .iter()
            .filter(|m| !members.iter().any(|n| n.entry.name == m.entry.name))
        {
            self.metrics.upstream.removed(&gone.entry.name);
        }
        let names: Vec<&str> = members.iter().map(|m| &*m.entry.name).collect();
        let said = format!(
            "{} upstreams apply to the next request: {}",
            names.len(),
            names.join(", ")
        );
        self.set.store(Arc::new(Set {
            members,
            rules: set.failover,
        }));
        self.show_availability();
        Ok(said)
    }

    /// `OPENAI_API_KEY_FILE` changed: the one upstream's new key, for the next request.
    pub(crate) fn replace_key(&self, key: &HeaderValue) {
        let set = self.set.load();
        let entries = set
            .members
            .iter()
            .map(|m| UpstreamEntry {
                api_key: key.clone(),
                ..m.entry.clone()
            })
            .collect();
        // Only the TLS settings can fail, and the pools are kept.
        let _ = self.replace(UpstreamSet {
            entries,
            failover: set.rules,
        });
    }

    /// The set's clock, in milliseconds.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Sets each upstream's availability gauge.
    fn show_availability(&self) {
        let set = self.set.load();
        let now = self.now();
        for member in &set.members {
            let available = member.rest.until.load(Ordering::Relaxed) <= now;
            self.metrics
                .upstream
                .available(&member.entry.name, available);
        }
    }

    /// `member` rests for `rest` from now, unless it already rests longer. An upstream alone
    /// never rests: there is nowhere else to go, and its availability is not shown.
    fn cool_down(&self, set: &Set<B>, member: &Member<B>, rest: Duration) {
        if set.members.len() < 2 {
            return;
        }
        let until = self.now() + rest.as_millis() as u64;
        member.rest.until.fetch_max(until, Ordering::Relaxed);
        self.metrics.upstream.available(&member.entry.name, false);
    }

    /// How long until the first upstream of `set` is available again, if every one rests.
    fn all_resting(&self, set: &Set<B>) -> Option<Duration> {
        let now = self.now();
        set.members
            .iter()
            .map(|m| m.rest.until.load(Ordering::Relaxed))
            .min()
            .filter(|&until| until > now)
            .map(|until| Duration::from_millis(until - now))
    }
}

impl<B: SendBody> Set<B> {
    /// The upstream for this turn, skipping those tried.
    fn pick(&self, tried: u64, turn: u64, now: u64, first: bool) -> Option<usize> {
        if let [_] = self.members[..] {
            return first.then_some(0);
        }
        let candidates: Vec<Candidate> = self
            .members
            .iter()
            .map(|m| Candidate {
                priority: m.entry.priority,
                weight: m.entry.weight,
                rests_until: m.rest.until.load(Ordering::Relaxed),
            })
            .collect();
        choice::pick(&candidates, tried, turn, now, first)
    }
}

impl<B: SendBody> Member<B> {
    /// Points a request head at this upstream: its URL under the base URL, with its query, and
    /// its key. `client` is the path and query the client asked for.
    fn aim(&self, parts: &mut Parts, client: Option<&PathAndQuery>) -> bool {
        let settings = &self.entry.settings;
        let (path, query) = client.map_or(("/", None), |pq| (pq.path(), pq.query()));
        let target = upstream_target(&settings.base_path, path, query, &settings.query);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(settings.scheme.clone());
        uri.authority = Some(settings.authority.clone());
        uri.path_and_query = PathAndQuery::try_from(target).ok();
        let Ok(uri) = Uri::from_parts(uri) else {
            return false;
        };
        parts.uri = uri;
        self.credential.put(&mut parts.headers);
        true
    }
}

/// Whether two entries reach the same place the same way, so that connections to one serve
/// the other.
fn same_place(a: &UpstreamEntry, b: &UpstreamEntry) -> bool {
    let (a, b) = (&a.settings, &b.settings);
    a.scheme == b.scheme
        && a.authority == b.authority
        && a.egress.as_ref().map(|e| &e.uri) == b.egress.as_ref().map(|e| &e.uri)
}
