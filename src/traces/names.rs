//! What the spans are called: the GenAI operation of each route, and the schema the attribute
//! names follow.
//!
//! The attributes this proxy sets have the same names in semantic conventions v1.41.0 and in
//! the newest `semantic-conventions-genai` (its migration guide renames only attributes the
//! proxy never sets, such as `gen_ai.usage.cache_creation.input_tokens`); what the opt-in
//! changes is the schema URL the spans declare.

use crate::config::GenAiNames;

/// The schema URL of the instrumentation scope: v1.41.0's, or none for the newest
/// experimental names, which have no published schema yet.
pub(super) fn schema_url(names: GenAiNames) -> Option<&'static str> {
    match names {
        GenAiNames::V1_41 => Some("https://opentelemetry.io/schemas/1.41.0"),
        GenAiNames::LatestExperimental => None,
    }
}

/// `gen_ai.operation.name` of a route, for the routes whose calls are model calls.
pub(super) fn operation(route: &str) -> Option<&'static str> {
    Some(match route {
        "/v1/chat/completions" | "/v1/responses" => "chat",
        "/v1/completions" => "text_completion",
        "/v1/embeddings" => "embeddings",
        "/v1/audio/transcriptions" => "transcription",
        "/v1/audio/translations" => "translation",
        "/v1/audio/speech" => "speech",
        "/v1/realtime" => "realtime",
        _ => return None,
    })
}

pub(super) const OPERATION: &str = "gen_ai.operation.name";
pub(super) const PROVIDER: &str = "gen_ai.provider.name";
pub(super) const REQUEST_MODEL: &str = "gen_ai.request.model";
pub(super) const REQUEST_STREAM: &str = "gen_ai.request.stream";
pub(super) const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub(super) const RESPONSE_ID: &str = "gen_ai.response.id";
pub(super) const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub(super) const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub(super) const CACHE_READ_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub(super) const REASONING_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
pub(super) const TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";

/// `gen_ai.provider.name` of an upstream, by how it takes its key.
pub(super) fn provider(azure: bool) -> &'static str {
    if azure {
        "azure.ai.openai"
    } else {
        "openai"
    }
}
