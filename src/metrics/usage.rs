//! What the usage meter reports: the tokens OpenAI counted, by client, model and type; the
//! audio seconds; and the answers that reported none.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::exchanges::RouteMetrics;
use super::labels::{Label, MissingLabels, ModelLabels, TokenLabels, TokenType};
use crate::usage::Tokens;

/// One client's token series, by upstream and model label.
type ByModel = HashMap<(Arc<str>, Arc<str>), [Counter; 4]>;

/// The `type` label's values, in the order of [`UsageMetrics::counters`]' series.
const TOKEN_TYPES: [&str; 4] = ["input", "output", "cached", "reasoning"];

/// What the meter made of one answer, for the metrics.
pub(crate) enum UsageSeen<'a> {
    /// The upstream's own figures, and the model the answer named.
    Reported {
        tokens: &'a Tokens,
        model: Option<&'a str>,
        model_too_long: bool,
    },
    /// No figures, and why: `cancelled`, `failed`, `not_reported`, `not_json`, `compressed`
    /// or `no_answer`.
    Missing(&'static str),
}

/// The usage family.
pub(crate) struct UsageMetrics {
    tokens: Family<TokenLabels, Counter>,
    audio_seconds: Family<ModelLabels, Counter<f64, AtomicU64>>,
    missing: Family<MissingLabels, Counter>,
    /// Each client's four token series by model label, found once: counting an answer then
    /// takes two lookups by name under one lock instead of four label-set lookups.
    counters: Mutex<HashMap<Arc<str>, ByModel>>,
    models: ModelNames,
}

impl UsageMetrics {
    pub(super) fn register(registry: &mut Registry, max_models: usize) -> UsageMetrics {
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens the upstream reported in its answers' usage, by client, model, upstream and type: input, output, cached (part of input), reasoning (part of output)",
            tokens.clone(),
        );
        let audio_seconds = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "audio_seconds",
            "Audio seconds the upstream reported for transcriptions billed by duration, by client and model",
            audio_seconds.clone(),
        );
        let missing = Family::<MissingLabels, Counter>::default();
        registry.register(
            "usage_missing",
            "Exchanges charged an estimate because the upstream reported no usage, by client, route and reason: cancelled (the client left), failed (the answer broke or timed out), not_reported (complete, but without usage), not_json (an answer the meter cannot read, such as text or audio), compressed (compressed though asked not to be, or a session's compressed message), malformed (a session's frames broke the WebSocket protocol), no_answer (cancelled, timed out or broken off before the answer's head, after the request left)",
            missing.clone(),
        );
        UsageMetrics {
            tokens,
            audio_seconds,
            missing,
            counters: Mutex::default(),
            models: ModelNames::new(max_models),
        }
    }

    /// An answer's usage, as the meter saw it, from the upstream that answered.
    pub(crate) fn seen(
        &self,
        client: &Arc<str>,
        upstream: &Arc<str>,
        route: &RouteMetrics,
        seen: UsageSeen<'_>,
    ) {
        let client = Label(client.clone());
        match seen {
            UsageSeen::Reported {
                tokens,
                model,
                model_too_long,
            } => {
                let model = self.models.label(model, model_too_long);
                if let Some(seconds) = tokens.audio_seconds {
                    self.audio_seconds
                        .get_or_create(&ModelLabels { client, model })
                        .inc_by(seconds);
                    return;
                }
                let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
                let of_client = match counters.get_mut(&*client.0) {
                    Some(of_client) => of_client,
                    None => counters.entry(client.0.clone()).or_default(),
                };
                let key = (model.0.clone(), upstream.clone());
                let series = of_client.entry(key).or_insert_with(|| {
                    TOKEN_TYPES.map(|r#type| {
                        self.tokens.get_or_create_owned(&TokenLabels {
                            client: client.clone(),
                            model: model.clone(),
                            upstream: Label(upstream.clone()),
                            kind: TokenType { r#type },
                        })
                    })
                });
                for (counter, count) in series.iter().zip([
                    tokens.input,
                    tokens.output,
                    tokens.cached,
                    tokens.reasoning,
                ]) {
                    counter.inc_by(count);
                }
            }
            UsageSeen::Missing(reason) => {
                self.missing
                    .get_or_create(&MissingLabels {
                        client,
                        route: route.label.clone(),
                        reason,
                    })
                    .inc();
            }
        }
    }
}

/// The `model` label values: the first `max` distinct names an answer gave, then `other` for
/// the rest, so that a client cannot grow `/metrics` without bound.
struct ModelNames {
    max: usize,
    seen: Mutex<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
    unknown: Arc<str>,
}

impl ModelNames {
    fn new(max: usize) -> ModelNames {
        ModelNames {
            max,
            seen: Mutex::default(),
            other: Arc::from("other"),
            unknown: Arc::from("unknown"),
        }
    }

    /// The label for what an answer named: `unknown` for no name, `other` for one too long to
    /// keep or past the first `max`.
    fn label(&self, model: Option<&str>, too_long: bool) -> Label {
        let name = match model {
            _ if too_long => return Label(self.other.clone()),
            None => return Label(self.unknown.clone()),
            Some(name) => name,
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = seen.get(name) {
            return Label(label.clone());
        }
        if seen.len() >= self.max {
            return Label(self.other.clone());
        }
        let label: Arc<str> = Arc::from(name);
        seen.insert(Box::from(name), label.clone());
        Label(label)
    }
}
