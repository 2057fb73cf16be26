//! The bytes of the mock upstream's streamed answers, event by event: shared by the mock
//! (`mock_upstream.rs`) and the meter's benchmark (`meter_cost.rs`), so that the meter is timed
//! on exactly what the proxy forwards in `run.py`'s stream scenarios.

use bytes::Bytes;

/// The Chat Completions JSON answer, as OpenAI's documentation shows it.
pub const CHAT_JSON: &str = r#"{"id":"chatcmpl-123","object":"chat.completion","created":1741570283,"model":"gpt-4","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}"#;

#[derive(Clone, Copy)]
pub enum Kind {
    Chat,
    ChatWithUsage,
    Transcript,
    Audio,
}

/// The words of a streamed answer, as OpenAI's documentation shows them, over and over.
const CHAT_WORDS: &[&str] = &[
    "Hello", "!", " How", " can", " I", " help", " you", " today", "?",
];
const TRANSCRIPT_WORDS: &[&str] = &[
    "I", " see", " skies", " of", " blue", " and", " clouds", " of", " white",
];

fn word(words: &'static [&'static str], i: u64) -> &'static str {
    words[(i % words.len() as u64) as usize]
}

pub fn event(kind: Kind, i: u64, last: bool) -> Bytes {
    match (kind, last) {
        (Kind::Chat | Kind::ChatWithUsage, false) => Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":null}}]}}\n\n",
            word(CHAT_WORDS, i)
        )),
        (Kind::Chat, true) => Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ),
        (Kind::ChatWithUsage, true) => Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":20,\"total_tokens\":39,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\ndata: [DONE]\n\n",
        ),
        (Kind::Transcript, false) => Bytes::from(format!(
            "data: {{\"type\":\"transcript.text.delta\",\"delta\":\"{}\",\"logprobs\":[]}}\n\n",
            word(TRANSCRIPT_WORDS, i)
        )),
        (Kind::Transcript, true) => Bytes::from_static(
            b"data: {\"type\":\"transcript.text.done\",\"text\":\"I see skies of blue and clouds of white\",\"logprobs\":[],\"usage\":{\"input_tokens\":14,\"output_tokens\":45,\"total_tokens\":59}}\n\n",
        ),
        (Kind::Audio, _) => Bytes::from(vec![(i % 251) as u8; 4096]),
    }
}
