//! A JSON scanner that reads bytes as they pass and knows, for each one, whether it is inside a
//! string and how deep it is. It never builds a value. It points out the few places the meter
//! wants: the `usage` and `model` members of the top-level object and of its `response`
//! member. Every other nested value (`choices`, `output`, `data`) is passed over by a tight
//! loop that only follows strings and brackets, and counts the bytes of its strings, the
//! generated text, for the estimate.
//!
//! Text a model writes is always inside a string, where quotes are escaped, so a
//! `"usage":{...}` written by a model is never taken for a member.

use memchr::memchr2;

/// The deepest nesting tracked; anything deeper is treated as an array, where no member
/// names are read.
const MAX_DEPTH: u32 = 64;
/// Member names longer than this are none of the ones the scanner looks for.
const KEY_BYTES: usize = 12;

/// A member name the scanner cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Other,
    Usage,
    Model,
    /// `id`: the answer's id, for its trace.
    Id,
    Response,
    /// `content`, `delta`, `refusal`, `arguments`: generated text, for the estimate.
    Text,
}

fn classify(name: &[u8]) -> Key {
    match name {
        b"usage" => Key::Usage,
        b"model" => Key::Model,
        b"id" => Key::Id,
        b"response" => Key::Response,
        b"content" | b"delta" | b"refusal" | b"arguments" => Key::Text,
        _ => Key::Other,
    }
}

/// What a string being read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    Skip,
    Key,
    Model,
    Id,
    Text,
}

/// Where the scanner reports what it found.
pub(crate) trait Sink {
    /// Whether a `usage` object is still wanted.
    fn wants_usage(&self) -> bool;
    /// Whether a `model` string is still wanted.
    fn wants_model(&self) -> bool;
    /// Bytes of the `usage` object, in order, its braces included.
    fn usage_bytes(&mut self, bytes: &[u8]);
    /// The `usage` object's closing brace has passed.
    fn usage_done(&mut self);
    /// Bytes of the `model` string, without its quotes.
    fn model_bytes(&mut self, bytes: &[u8]);
    /// The `model` string ended.
    fn model_ended(&mut self);
    /// Whether an `id` string is still wanted.
    fn wants_id(&self) -> bool;
    /// Bytes of the `id` string, without its quotes.
    fn id_bytes(&mut self, bytes: &[u8]);
    /// The `id` string ended.
    fn id_ended(&mut self);
    /// Bytes of a generated-text string.
    fn text_bytes(&mut self, len: usize);
}

#[derive(Debug)]
pub(crate) struct JsonScan {
    depth: u32,
    /// Bit `d - 1` is set when the container at depth `d` is an array.
    arrays: u64,
    in_string: bool,
    escaped: bool,
    reading: Reading,
    /// Inside an object, before a member name.
    expect_key: bool,
    key: [u8; KEY_BYTES],
    /// The name's length, or `KEY_BYTES + 1` when it is longer.
    key_len: usize,
    /// The member whose value comes next.
    value_of: Key,
    /// The member of the top-level object that the scanner is inside.
    top: Key,
    /// The `usage` object is being passed over, its bytes captured.
    capturing_usage: bool,
    /// While passing over a nested value: the depth it ends at.
    skipping_to: Option<u32>,
}

/// The bytes that matter while passing over a nested value.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

impl Default for JsonScan {
    fn default() -> JsonScan {
        JsonScan {
            depth: 0,
            arrays: 0,
            in_string: false,
            escaped: false,
            reading: Reading::Skip,
            expect_key: false,
            key: [0; KEY_BYTES],
            key_len: 0,
            value_of: Key::Other,
            top: Key::Other,
            capturing_usage: false,
            skipping_to: None,
        }
    }
}

/// Where the first `"` or `\\` in `data` is. Names and most values are short, and a short
/// string is read faster byte by byte than a vectorised search is set up; a long one, text a
/// model wrote, gets the search.
fn quote_or_escape(data: &[u8]) -> Option<usize> {
    const SHORT: usize = 24;
    let head = &data[..data.len().min(SHORT)];
    match head.iter().position(|&b| b == b'"' || b == b'\\') {
        Some(at) => Some(at),
        None if data.len() > SHORT => memchr2(b'"', b'\\', &data[SHORT..]).map(|at| at + SHORT),
        None => None,
    }
}

impl JsonScan {
    /// Starts again at a new top-level value (the next SSE event).
    pub(crate) fn reset(&mut self) {
        *self = JsonScan::default();
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.depth <= MAX_DEPTH && self.arrays & (1 << (self.depth - 1)) == 0
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut impl Sink) {
        let mut i = 0;
        while i < data.len() {
            if self.in_string {
                i += self.string(&data[i..], sink);
                continue;
            }
            if self.skipping_to.is_some() {
                let n = self.pass_over(&data[i..]);
                if self.capturing_usage {
                    sink.usage_bytes(&data[i..i + n]);
                    if self.skipping_to.is_none() {
                        self.capturing_usage = false;
                        sink.usage_done();
                    }
                }
                i += n;
                continue;
            }
            let b = data[i];
            i += 1;
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
                b'"' => self.open_string(sink),
                b'{' | b'[' => self.open(b == b'[', sink),
                b'}' | b']' => self.close(),
                b',' => {
                    self.expect_key = self.in_object();
                    self.value_of = Key::Other;
                }
                // A number or a literal: the pending member's value, which nobody wants.
                _ => self.value_of = Key::Other,
            }
        }
    }

    /// Passes over a nested value's bytes up to a string, its end, or the end of `data`;
    /// returns how many it took. The `usage` object is passed over the same way, its bytes
    /// captured a run at a time.
    fn pass_over(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            i += 1;
            if !STRUCTURAL[usize::from(b)] {
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.reading = if self.capturing_usage {
                        Reading::Skip
                    } else {
                        Reading::Text
                    };
                    return i;
                }
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                _ => {
                    self.depth = self.depth.saturating_sub(1);
                    if Some(self.depth) == self.skipping_to {
                        self.skipping_to = None;
                        self.expect_key = false;
                        self.value_of = Key::Other;
                        return i;
                    }
                }
            }
        }
        i
    }

    /// Reads string bytes up to the closing quote or the end of `data`; returns how many.
    fn string(&mut self, data: &[u8], sink: &mut impl Sink) -> usize {
        if self.escaped {
            self.escaped = false;
            self.string_bytes(&data[..1], sink);
            return 1;
        }
        let Some(at) = quote_or_escape(data) else {
            self.string_bytes(data, sink);
            return data.len();
        };
        if data[at] == b'\\' {
            self.escaped = true;
            self.string_bytes(&data[..=at], sink);
            return at + 1;
        }
        self.string_bytes(&data[..at], sink);
        self.close_string(sink);
        if self.capturing_usage {
            sink.usage_bytes(b"\"");
        }
        at + 1
    }

    fn string_bytes(&mut self, bytes: &[u8], sink: &mut impl Sink) {
        if self.capturing_usage {
            sink.usage_bytes(bytes);
        }
        match self.reading {
            Reading::Skip => {}
            Reading::Key => {
                let end = self.key_len + bytes.len();
                if end <= KEY_BYTES {
                    self.key[self.key_len..end].copy_from_slice(bytes);
                    self.key_len = end;
                } else {
                    self.key_len = KEY_BYTES + 1;
                }
            }
            Reading::Model => sink.model_bytes(bytes),
            Reading::Id => sink.id_bytes(bytes),
            Reading::Text => sink.text_bytes(bytes.len()),
        }
    }

    fn open_string(&mut self, sink: &mut impl Sink) {
        self.in_string = true;
        self.reading = if self.expect_key && self.in_object() {
            self.expect_key = false;
            self.key_len = 0;
            Reading::Key
        } else {
            match std::mem::replace(&mut self.value_of, Key::Other) {
                Key::Model if sink.wants_model() => Reading::Model,
                Key::Id if sink.wants_id() => Reading::Id,
                Key::Text => Reading::Text,
                _ => Reading::Skip,
            }
        };
    }

    fn close_string(&mut self, sink: &mut impl Sink) {
        self.in_string = false;
        match self.reading {
            Reading::Key => {
                let key = if self.key_len <= KEY_BYTES {
                    classify(&self.key[..self.key_len])
                } else {
                    Key::Other
                };
                self.value_of = match (self.depth, key) {
                    (1, _) => {
                        self.top = key;
                        match key {
                            Key::Usage | Key::Model | Key::Id | Key::Text | Key::Response => key,
                            Key::Other => Key::Other,
                        }
                    }
                    (2, Key::Usage | Key::Model | Key::Id) if self.top == Key::Response => key,
                    (_, Key::Text) => Key::Text,
                    _ => Key::Other,
                };
            }
            Reading::Model => sink.model_ended(),
            Reading::Id => sink.id_ended(),
            Reading::Skip | Reading::Text => {}
        }
        self.reading = Reading::Skip;
    }

    fn open(&mut self, array: bool, sink: &mut impl Sink) {
        let value_of = std::mem::replace(&mut self.value_of, Key::Other);
        if !array && value_of == Key::Usage && sink.wants_usage() {
            // Captured while it is passed over, to its closing brace.
            self.capturing_usage = true;
            sink.usage_bytes(b"{");
            self.skipping_to = Some(self.depth);
            self.depth = self.depth.saturating_add(1);
            return;
        } else if self.depth >= 1 && !(self.depth == 1 && !array && value_of == Key::Response) {
            // Nothing the meter wants is inside: pass over it to its end.
            self.skipping_to = Some(self.depth);
            self.depth = self.depth.saturating_add(1);
            return;
        }
        self.depth = self.depth.saturating_add(1);
        if self.depth <= MAX_DEPTH {
            let bit = 1u64 << (self.depth - 1);
            if array {
                self.arrays |= bit;
            } else {
                self.arrays &= !bit;
            }
        }
        self.expect_key = !array && self.depth <= MAX_DEPTH;
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.expect_key = false;
        self.value_of = Key::Other;
    }
}
