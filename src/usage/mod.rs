//! The usage meter: the tokens an answer cost, read from the upstream's own `usage` object as
//! the answer's bytes are forwarded, and the estimate made when an answer carried none.
//!
//! The meter looks at bytes that have already gone to the client; it never holds, delays or
//! changes a frame. It parses nothing but the one small `usage` object: a [`json`] scanner
//! follows the rest byte by byte, knowing only its depth and whether it is inside a string.
//! Its memory is fixed ([`MAX_USAGE_BYTES`] for the object, [`MAX_MODEL_BYTES`] for the
//! model), in one allocation per answer it reads.

mod frames;
mod json;

use memchr::memchr;
use serde::Deserialize;

use json::{JsonScan, Sink};

use frames::{Frames, Part};

/// A `usage` object longer than this is not read (OpenAI's are under 400 bytes). The meter
/// keeps it in place, so that reading it allocates nothing.
pub const MAX_USAGE_BYTES: usize = 1024;
/// An answer's id longer than this is not kept.
const MAX_ID_BYTES: usize = 64;

/// A model name longer than this is counted as `other`.
pub const MAX_MODEL_BYTES: usize = 128;

/// The tokens one answer cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// The cached part of `input`.
    pub cached: u64,
    /// The reasoning part of `output`.
    pub reasoning: u64,
    /// Transcription billed by duration (`"type": "duration"`).
    pub audio_seconds: Option<f64>,
}

impl Tokens {
    /// What a budget counts: input plus output.
    pub fn billed(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Adds another answer's tokens, as a session's answers add up.
    fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cached = self.cached.saturating_add(other.cached);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
        self.audio_seconds = match (self.audio_seconds, other.audio_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// The fields of every `usage` object OpenAI sends: Chat Completions and embeddings
/// (`prompt_tokens`, `completion_tokens`), the Responses API, transcriptions and Realtime
/// (`input_tokens`, `output_tokens`; Realtime names its details `input_token_details`), and
/// transcription by duration (`seconds`).
#[derive(Deserialize)]
struct Reported {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
    input_token_details: Option<Details>,
    output_token_details: Option<Details>,
    seconds: Option<f64>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// Reads a `usage` object; `None` if it holds no count this meter knows.
pub fn parse_usage(bytes: &[u8]) -> Option<Tokens> {
    let r: Reported = serde_json::from_slice(bytes).ok()?;
    let input = r.prompt_tokens.or(r.input_tokens);
    let output = r.completion_tokens.or(r.output_tokens);
    if input.is_none() && output.is_none() && r.seconds.is_none() {
        return None;
    }
    let detail = |d: &Option<Details>, f: fn(&Details) -> Option<u64>| d.as_ref().and_then(f);
    let cached = [
        &r.prompt_tokens_details,
        &r.input_tokens_details,
        &r.input_token_details,
    ]
    .into_iter()
    .find_map(|d| detail(d, |d| d.cached_tokens));
    let reasoning = [
        &r.completion_tokens_details,
        &r.output_tokens_details,
        &r.output_token_details,
    ]
    .into_iter()
    .find_map(|d| detail(d, |d| d.reasoning_tokens));
    Some(Tokens {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        cached: cached.unwrap_or(0),
        reasoning: reasoning.unwrap_or(0),
        audio_seconds: r.seconds.filter(|s| s.is_finite() && *s >= 0.0),
    })
}

/// The estimate of a request's input tokens: one for every four bytes of a JSON body, and for
/// every KiB of any other (an audio upload).
pub fn input_estimate(request_bytes: u64, request_is_json: bool) -> u64 {
    if request_is_json {
        request_bytes.div_ceil(4)
    } else {
        request_bytes.div_ceil(1024)
    }
}

/// What the meter found so far.
#[derive(Debug)]
struct Found {
    /// The `usage` object's bytes while it passes, and how many; `None` until it begins.
    capture: [u8; MAX_USAGE_BYTES],
    usage_bytes: Option<usize>,
    /// The object was longer than [`MAX_USAGE_BYTES`].
    usage_too_long: bool,
    usage: Option<Tokens>,
    model: [u8; MAX_MODEL_BYTES],
    /// The model's length; `MAX_MODEL_BYTES + 1` when it was longer.
    model_len: usize,
    model_seen: bool,
    /// The answer's `id`, as far as it fits; `MAX_ID_BYTES + 1` long when it did not.
    id: [u8; MAX_ID_BYTES],
    id_len: usize,
    id_seen: bool,
    /// Bytes of generated text forwarded in a JSON answer.
    text_bytes: u64,
}

impl Default for Found {
    fn default() -> Found {
        Found {
            capture: [0; MAX_USAGE_BYTES],
            usage_bytes: None,
            usage_too_long: false,
            usage: None,
            model: [0; MAX_MODEL_BYTES],
            model_len: 0,
            model_seen: false,
            id: [0; MAX_ID_BYTES],
            id_len: 0,
            id_seen: false,
            text_bytes: 0,
        }
    }
}

impl Sink for Found {
    fn wants_usage(&self) -> bool {
        self.usage.is_none() && self.usage_bytes.is_none() && !self.usage_too_long
    }

    fn wants_model(&self) -> bool {
        !self.model_seen
    }

    fn usage_bytes(&mut self, bytes: &[u8]) {
        if self.usage_too_long {
            return;
        }
        let len = self.usage_bytes.get_or_insert(0);
        let end = *len + bytes.len();
        if end > MAX_USAGE_BYTES {
            self.usage_bytes = None;
            self.usage_too_long = true;
            return;
        }
        self.capture[*len..end].copy_from_slice(bytes);
        *len = end;
    }

    fn usage_done(&mut self) {
        if let Some(len) = self.usage_bytes.take() {
            self.usage = parse_usage(&self.capture[..len]);
            if self.usage.is_none() {
                // Not a usage object after all: a later one may still be.
                self.usage_bytes = None;
            }
        }
    }

    fn model_bytes(&mut self, bytes: &[u8]) {
        append(&mut self.model, &mut self.model_len, bytes);
    }

    fn text_bytes(&mut self, len: usize) {
        self.text_bytes += len as u64;
    }

    fn model_ended(&mut self) {
        self.model_seen = true;
    }

    fn wants_id(&self) -> bool {
        !self.id_seen
    }

    fn id_bytes(&mut self, bytes: &[u8]) {
        append(&mut self.id, &mut self.id_len, bytes);
    }

    fn id_ended(&mut self) {
        self.id_seen = true;
    }
}

/// Appends `bytes` to the `len` bytes kept in `kept`; past its size, `len` becomes one more than
/// the size, which says "too long" and keeps nothing more.
fn append<const N: usize>(kept: &mut [u8; N], len: &mut usize, bytes: &[u8]) {
    let end = *len + bytes.len();
    if end <= N {
        kept[*len..end].copy_from_slice(bytes);
        *len = end;
    } else {
        *len = N + 1;
    }
}

/// What [`append`] kept, if anything, and if it all fit.
fn kept<const N: usize>(kept: &[u8; N], len: usize) -> Option<&str> {
    if len == 0 || len > N {
        return None;
    }
    std::str::from_utf8(&kept[..len]).ok()
}

/// Where an SSE line is: at its start (with how much of `data:` matched), at the start of a
/// data line's value, in a value the scanner reads, or in a line the meter skips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Start { matched: u8, blank: bool },
    Value,
    Data,
    Skip,
}

/// What the meter does with the data lines of the current SSE event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// No data line yet: the first one decides.
    Undecided,
    Scan,
    /// The first event, read for its model only.
    Model,
    Skip,
}

/// The member name the meter looks for, quoted; built once, since a searcher costs more to
/// make than a line costs to search.
static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));

/// Whether a whole data line may hold a `usage` object: `"usage"` followed by `:` and `{`.
/// A chunk's `"usage":null` may not, nor may a line without the word.
fn may_hold_usage(line: &[u8]) -> bool {
    USAGE.find_iter(line).any(|at| {
        let mut rest = line[at + 7..]
            .iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r'));
        rest.next() == Some(b':') && rest.next() == Some(b'{')
    })
}

/// The meter of one answer: a JSON body, or a stream of SSE events each holding one.
///
/// In a stream, the scanner reads the first event (for the model) and the events whose data
/// line may hold a `usage` object; the others, nearly all of them, are passed over with two
/// vectorised searches a line. A data line cut by a frame's end is always read.
#[derive(Debug)]
pub struct Meter {
    scan: JsonScan,
    found: Found,
    /// `None` for a JSON answer.
    sse: Option<Line>,
    event: Event,
    /// The bytes of the stream's data lines, for the estimate, and whether the line being
    /// read is one.
    data_bytes: u64,
    in_data: bool,
    /// A WebSocket session's: its frames, each text message in them one JSON value, and the
    /// usage the messages reported, summed as each one ends.
    frames: Option<Frames>,
    session_total: Option<Tokens>,
}

impl Meter {
    pub fn json() -> Meter {
        Meter {
            scan: JsonScan::default(),
            found: Found::default(),
            sse: None,
            event: Event::Undecided,
            data_bytes: 0,
            in_data: false,
            frames: None,
            session_total: None,
        }
    }

    /// The meter of a WebSocket session's frames from the upstream, with the model its URL
    /// names, if it names one. Realtime's `response.done` events carry each response's usage
    /// under `response`; a session costs what they add up to.
    pub fn websocket(model: Option<&[u8]>) -> Meter {
        let mut meter = Meter {
            frames: Some(Frames::default()),
            ..Meter::json()
        };
        if let Some(model) = model {
            meter.found.model_bytes(model);
            meter.found.model_ended();
        }
        meter
    }

    pub fn sse() -> Meter {
        Meter {
            sse: Some(Line::Start {
                matched: 0,
                blank: true,
            }),
            ..Meter::json()
        }
    }

    /// Looks at the next bytes of the answer, as forwarded.
    pub fn feed(&mut self, data: &[u8]) {
        if let Some(frames) = &mut self.frames {
            let (scan, found, total) = (&mut self.scan, &mut self.found, &mut self.session_total);
            frames.feed(data, |part| match part {
                Part::Text(text) if found.usage.is_none() => scan.feed(text, found),
                Part::Text(_) => {}
                Part::End => {
                    if let Some(tokens) = found.usage.take() {
                        total.get_or_insert_with(Tokens::default).add(&tokens);
                    }
                    found.usage_bytes = None;
                    found.usage_too_long = false;
                    scan.reset();
                }
            });
            return;
        }
        if self.found.usage.is_some() {
            return;
        }
        match self.sse {
            None => self.scan.feed(data, &mut self.found),
            Some(line) => self.feed_sse(line, data),
        }
    }

    fn feed_sse(&mut self, mut line: Line, frame: &[u8]) {
        const DATA: &[u8; 5] = b"data:";
        const START: Line = Line::Start {
            matched: 0,
            blank: true,
        };
        let mut data = frame;
        // Where the next `"usage"` in the frame is, once looked for: a line that ends before
        // it is passed over without a search of its own.
        let mut next_word: Option<Option<usize>> = None;
        while !data.is_empty() {
            match line {
                Line::Start { matched: 0, .. } if data.starts_with(DATA) => {
                    data = &data[DATA.len()..];
                    self.in_data = true;
                    line = Line::Value;
                }
                Line::Start { matched, blank } => {
                    let b = data[0];
                    data = &data[1..];
                    line = match b {
                        b'\n' if blank => {
                            self.event_ended();
                            START
                        }
                        b'\n' => START,
                        b'\r' if matched == 0 => Line::Start { matched, blank },
                        _ if b == DATA[usize::from(matched)] => {
                            if matched + 1 == DATA.len() as u8 {
                                self.in_data = true;
                                Line::Value
                            } else {
                                Line::Start {
                                    matched: matched + 1,
                                    blank: false,
                                }
                            }
                        }
                        _ => Line::Skip,
                    };
                }
                Line::Value => {
                    let end = memchr(b'\n', data);
                    if self.event == Event::Undecided {
                        self.event = match end {
                            // A cut line is read: where it may go is not known yet.
                            None => Event::Scan,
                            Some(end) => {
                                let at = frame.len() - data.len();
                                let word = match next_word {
                                    Some(word) if word.is_none_or(|w| w >= at) => word,
                                    _ => USAGE.find(data).map(|w| w + at),
                                };
                                next_word = Some(word);
                                if word.is_some_and(|w| w < at + end)
                                    && may_hold_usage(&data[..end])
                                {
                                    Event::Scan
                                } else if !self.found.model_seen {
                                    Event::Model
                                } else {
                                    Event::Skip
                                }
                            }
                        };
                    }
                    match (self.event, end) {
                        // A whole line passed over, or read up to its model: counted and
                        // left at once.
                        (Event::Skip | Event::Model, Some(end)) => {
                            if self.event == Event::Model {
                                self.read_model(&data[..end]);
                            }
                            self.data_bytes += end as u64;
                            self.in_data = false;
                            data = &data[end + 1..];
                            line = START;
                        }
                        (Event::Scan, _) => line = Line::Data,
                        _ => line = Line::Skip,
                    }
                }
                Line::Data | Line::Skip => {
                    let end = memchr(b'\n', data);
                    let (this, rest) = data.split_at(end.unwrap_or(data.len()));
                    if self.in_data {
                        self.data_bytes += this.len() as u64;
                    }
                    if line == Line::Data {
                        self.scan.feed(this, &mut self.found);
                    }
                    data = rest;
                    if end.is_some() {
                        data = &data[1..];
                        self.in_data = false;
                        // A data line's end is the `\n` that joins it to the next one.
                        if line == Line::Data {
                            self.scan.feed(b"\n", &mut self.found);
                        }
                        line = START;
                    }
                }
            }
        }
        self.sse = Some(line);
    }

    /// Reads the first event's line, which holds no `usage`, only as far as its model: a
    /// run of bytes at a time, so that what follows the model (the choices, the output) is
    /// passed over unread.
    fn read_model(&mut self, mut line: &[u8]) {
        const RUN: usize = 32;
        while !line.is_empty() && !self.found.model_seen {
            let (run, rest) = line.split_at(line.len().min(RUN));
            self.scan.feed(run, &mut self.found);
            line = rest;
        }
        self.scan.reset();
        self.event = Event::Skip;
    }

    fn event_ended(&mut self) {
        if self.event == Event::Scan {
            self.scan.reset();
        }
        // The model is the first event's, if it names one.
        if self.event != Event::Undecided {
            self.found.model_seen = true;
        }
        self.event = Event::Undecided;
        // A usage object cut short by the event's end is not one.
        if self.found.usage.is_none() {
            self.found.usage_bytes = None;
        }
    }

    /// The tokens the upstream reported, if it did.
    pub fn reported(&self) -> Option<Tokens> {
        match self.frames {
            Some(_) => self.session_total,
            None => self.found.usage,
        }
    }

    /// The model the answer named, if it named one that fits.
    pub fn model(&self) -> Option<&str> {
        kept(&self.found.model, self.found.model_len)
    }

    /// Why a session's frames could no longer be read, if they could not.
    pub fn lost(&self) -> Option<&'static str> {
        self.frames.as_ref()?.lost().map(frames::Lost::reason)
    }

    /// The answer's `id` (`chatcmpl-...`, `resp_...`), if it gave one that fits.
    pub fn response_id(&self) -> Option<&str> {
        kept(&self.found.id, self.found.id_len)
    }

    /// Whether the answer named a model too long to keep.
    pub fn model_too_long(&self) -> bool {
        self.found.model_len > MAX_MODEL_BYTES
    }

    /// The estimate for an answer that reported nothing. Output: for a stream, one token for
    /// every four bytes of its data lines, whole events and not only their text, which
    /// overcounts the visible text many times over and so stands in for the reasoning tokens
    /// a stream never shows; for a JSON answer, one for every four bytes of the strings in its
    /// nested values (its text, and the few names around it). Input: [`input_estimate`].
    pub fn estimate(&self, request_bytes: u64, request_is_json: bool) -> Tokens {
        let found = &self.found;
        let output = if self.sse.is_some() {
            self.data_bytes.div_ceil(4)
        } else {
            found.text_bytes.div_ceil(4)
        };
        let input = input_estimate(request_bytes, request_is_json);
        Tokens {
            input,
            output,
            ..Tokens::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `answer` split at every place, and returns what the meter reported each time.
    fn all_splits(answer: &str, sse: bool) -> Vec<(Option<Tokens>, Option<String>)> {
        let bytes = answer.as_bytes();
        (0..=bytes.len())
            .map(|at| {
                let mut meter = if sse { Meter::sse() } else { Meter::json() };
                meter.feed(&bytes[..at]);
                meter.feed(&bytes[at..]);
                (meter.reported(), meter.model().map(str::to_owned))
            })
            .collect()
    }

    fn tokens(input: u64, output: u64, cached: u64, reasoning: u64) -> Option<Tokens> {
        Some(Tokens {
            input,
            output,
            cached,
            reasoning,
            audio_seconds: None,
        })
    }

    #[test]
    fn chat_json_usage_and_model_at_every_split() {
        let answer = r#"{"id":"c","model":"gpt-4o-mini","choices":[{"message":{"content":"say \"usage\":{\"prompt_tokens\":999}"}}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        for (usage, model) in all_splits(answer, false) {
            assert_eq!(usage, tokens(20, 9, 4, 3));
            assert_eq!(model.as_deref(), Some("gpt-4o-mini"));
        }
    }

    #[test]
    fn brackets_and_quotes_in_nested_strings_do_not_lose_the_depth() {
        let answer = r#"{"choices":[{"message":{"content":"}]} \" {[ \\","tool_calls":[{"arguments":"{\"usage\":{}}"}]}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        for (usage, _) in all_splits(answer, false) {
            assert_eq!(usage, tokens(3, 1, 0, 0));
        }
        // Inside the `usage` object too, which is captured while it is passed over.
        let answer = r#"{"usage":{"note":"}} \" {","prompt_tokens":3,"x":[{"y":"]"}],"completion_tokens":1},"z":1}"#;
        for (usage, _) in all_splits(answer, false) {
            assert_eq!(usage, tokens(3, 1, 0, 0));
        }
    }

    #[test]
    fn usage_below_the_top_level_or_in_a_string_never_counts() {
        for answer in [
            r#"{"choices":[{"usage":{"prompt_tokens":5}}]}"#,
            r#"{"text":"{\"usage\":{\"prompt_tokens\":5}}"}"#,
            r#"{"a":{"usage":{"prompt_tokens":5}}}"#,
            r#"["usage",{"prompt_tokens":5}]"#,
            r#"{"usage":null,"x":{"prompt_tokens":5}}"#,
        ] {
            for (usage, _) in all_splits(answer, false) {
                assert_eq!(usage, None, "{answer}");
            }
        }
    }

    #[test]
    fn chat_sse_reads_the_final_usage_chunk() {
        let answer = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":7}\"}}],\"usage\":null}\n\n\
            data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2}}\r\n\r\n\
            data: [DONE]\n\n";
        for (usage, model) in all_splits(answer, true) {
            assert_eq!(usage, tokens(11, 2, 0, 0));
            assert_eq!(model.as_deref(), Some("gpt-4o"));
        }
    }

    #[test]
    fn responses_api_usage_sits_under_response() {
        let sse = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":null}}\n\n\
            event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":35}}}\n\n";
        for (usage, model) in all_splits(sse, true) {
            assert_eq!(usage, tokens(30, 5, 10, 2));
            assert_eq!(model.as_deref(), Some("gpt-4.1"));
        }
        let json = r#"{"id":"resp_1","model":"gpt-4.1","output":[],"usage":{"input_tokens":3,"output_tokens":4}}"#;
        for (usage, _) in all_splits(json, false) {
            assert_eq!(usage, tokens(3, 4, 0, 0));
        }
    }

    #[test]
    fn transcription_usage_by_tokens_or_by_duration() {
        let mut meter = Meter::json();
        meter.feed(br#"{"text":"hi","usage":{"type":"duration","seconds":9.5}}"#);
        assert_eq!(meter.reported().unwrap().audio_seconds, Some(9.5));
        assert_eq!(meter.model(), None);
        let sse = "data: {\"type\":\"transcript.text.delta\",\"delta\":\" hi\"}\n\ndata: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":14,\"output_tokens\":45}}\n\n";
        for (usage, _) in all_splits(sse, true) {
            assert_eq!(usage, tokens(14, 45, 0, 0));
        }
    }

    #[test]
    fn only_lines_that_may_hold_usage_are_read() {
        assert!(may_hold_usage(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(may_hold_usage(br#"{"usage" : {"prompt_tokens":1}}"#));
        assert!(!may_hold_usage(br#"{"choices":[],"usage":null}"#));
        assert!(!may_hold_usage(
            br#"{"choices":[{"delta":{"content":"usage"}}]}"#
        ));
        // Usage-like text in a string never matches: its quotes are escaped.
        let mut meter = Meter::sse();
        meter.feed(b"data: {\"model\":\"m\",\"choices\":[]}\n\n");
        meter.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":9}\"}}]}\n\n");
        assert_eq!(meter.reported(), None);
        assert_eq!(meter.event, Event::Undecided);
        meter.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
        );
        assert_eq!(meter.reported(), tokens(4, 2, 0, 0));
        assert_eq!(meter.model(), Some("m"));
    }

    #[test]
    fn an_oversized_usage_object_is_dropped_and_memory_stays_bounded() {
        let mut meter = Meter::json();
        meter.feed(b"{\"usage\":{\"prompt_tokens\":1,\"pad\":\"");
        for _ in 0..100 {
            meter.feed(&[b'x'; 100]);
        }
        meter.feed(b"\"}}");
        assert_eq!(meter.reported(), None);
        assert!(meter.found.usage_bytes.is_none());
    }

    #[test]
    fn the_estimate_counts_text_and_events() {
        let mut meter = Meter::sse();
        for word in ["Hel", "lo", " world, this is longer"] {
            meter.feed(
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n")
                    .as_bytes(),
            );
        }
        meter.feed(b"data: [DONE]\n\n");
        let estimate = meter.estimate(400, true);
        assert_eq!(estimate.input, 100);
        // A token for every four bytes of the data lines' values: 3 events of 42, 41 and 61
        // bytes, and [DONE]'s 7, not the lines' `data:` or their ends.
        assert_eq!(estimate.output, (42 + 41 + 61 + 7_u64).div_ceil(4));
        assert_eq!(Meter::json().estimate(4096, false).input, 4);
        let mut json = Meter::json();
        json.feed(br#"{"choices":[{"message":{"content":"twenty-seven bytes of text!"}}]}"#);
        // 27 bytes of text and 14 of the names around it.
        assert_eq!(json.estimate(0, true).output, 11);
    }
}
