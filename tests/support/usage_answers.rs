//! OpenAI's answers with usage, as the mock sends them for `x-mock-answer: NAME`: each split
//! into writes 50 ms apart, with the `usage` object cut in two between writes, and generated
//! text that holds usage-like JSON which must never count.

/// One canned answer: its content type, its writes, and the usage the meter must read.
pub struct UsageAnswer {
    pub name: &'static str,
    pub content_type: &'static str,
    pub writes: &'static [&'static str],
    /// `(input, output, cached, reasoning)`, or `None` for an answer without usage.
    pub tokens: Option<(u64, u64, u64, u64)>,
    pub audio_seconds: Option<f64>,
    pub model: &'static str,
}

impl UsageAnswer {
    pub fn body(&self) -> String {
        self.writes.concat()
    }
}

pub const ANSWERS: &[UsageAnswer] = &[
    UsageAnswer {
        name: "chat-json",
        content_type: "application/json",
        writes: &[
            r#"{"id":"chatcmpl-u1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Write \"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999} here"},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_"#,
            r#"tokens":17,"total_tokens":48,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":5,"audio_tokens":0}},"system_fingerprint":"fp_1"}"#,
        ],
        tokens: Some((31, 17, 8, 5)),
        audio_seconds: None,
        model: "gpt-4o-mini-2024-07-18",
    },
    UsageAnswer {
        name: "chat-sse",
        content_type: "text/event-stream",
        writes: &[
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":999}\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"comp",
            "letion_tokens\":34,\"total_tokens\":46,\"prompt_tokens_details\":{\"cached_tokens\":2},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
            "data: [DONE]\n\n",
        ],
        tokens: Some((12, 34, 2, 0)),
        audio_seconds: None,
        model: "gpt-4o-2024-08-06",
    },
    UsageAnswer {
        name: "chat-sse-without-usage",
        content_type: "text/event-stream",
        writes: &[
            "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n",
            "data: [DONE]\n\n",
        ],
        tokens: None,
        audio_seconds: None,
        model: "gpt-4o",
    },
    UsageAnswer {
        name: "responses-json",
        content_type: "application/json",
        writes: &[
            r#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","content":[{"type":"output_text","text":"{\"usage\":{\"input_tokens\":999}}"}]}],"usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":16},"output_"#,
            r#"tokens":22,"output_tokens_details":{"reasoning_tokens":9},"total_tokens":62}}"#,
        ],
        tokens: Some((40, 22, 16, 9)),
        audio_seconds: None,
        model: "gpt-4.1-2025-04-14",
    },
    UsageAnswer {
        name: "responses-sse",
        content_type: "text/event-stream",
        writes: &[
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_2\",\"status\":\"in_progress\",\"model\":\"o4-mini-2025-04-16\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"\\\"usage\\\":{\\\"input_tokens\\\":999}\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_2\",\"status\":\"completed\",\"model\":\"o4-mini-2025-04-16\",\"usage\":{\"input_tokens\":55,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tok",
            "ens\":70,\"output_tokens_details\":{\"reasoning_tokens\":64},\"total_tokens\":125}}}\n\n",
        ],
        tokens: Some((55, 70, 0, 64)),
        audio_seconds: None,
        model: "o4-mini-2025-04-16",
    },
    UsageAnswer {
        name: "transcription-json",
        content_type: "application/json",
        writes: &[
            r#"{"text":"She said \"usage\":{\"input_tokens\":999}.","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"outp"#,
            r#"ut_tokens":45,"total_tokens":59}}"#,
        ],
        tokens: Some((14, 45, 0, 0)),
        audio_seconds: None,
        model: "unknown",
    },
    UsageAnswer {
        name: "transcription-sse",
        content_type: "text/event-stream",
        writes: &[
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\" I see\"}\n\n",
            "data: {\"type\":\"transcript.text.done\",\"text\":\"I see\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":9,",
            "\"output_tokens\":3,\"total_tokens\":12}}\n\n",
        ],
        tokens: Some((9, 3, 0, 0)),
        audio_seconds: None,
        model: "unknown",
    },
    UsageAnswer {
        name: "transcription-duration",
        content_type: "application/json",
        writes: &[
            r#"{"text":"Hello.","usage":{"type":"dur"#,
            r#"ation","seconds":7.5}}"#,
        ],
        tokens: None,
        audio_seconds: Some(7.5),
        model: "unknown",
    },
    UsageAnswer {
        name: "embeddings",
        content_type: "application/json",
        writes: &[
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]}],"model":"text-embedding-3-small","usage":{"prompt_"#,
            r#"tokens":8,"total_tokens":8}}"#,
        ],
        tokens: Some((8, 0, 0, 0)),
        audio_seconds: None,
        model: "text-embedding-3-small",
    },
];

/// Answers outside the meter's happy path: a count no store can hold, and a transcription as
/// plain text, which carries no usage at all.
pub const OTHERS: &[UsageAnswer] = &[
    UsageAnswer {
        name: "chat-json-poisoned",
        content_type: "application/json",
        writes: &[
            r#"{"id":"chatcmpl-p","object":"chat.completion","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":0}}"#,
        ],
        tokens: Some((u64::MAX, 0, 0, 0)),
        audio_seconds: None,
        model: "gpt-4o-mini",
    },
    UsageAnswer {
        name: "transcription-text",
        content_type: "text/plain; charset=utf-8",
        writes: &["Imagine the wildest idea that you've ever had, and you're curious about how it might scale.\n"],
        tokens: None,
        audio_seconds: None,
        model: "",
    },
];

pub fn answer(name: &str) -> Option<&'static UsageAnswer> {
    ANSWERS.iter().chain(OTHERS).find(|a| a.name == name)
}
