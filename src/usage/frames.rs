//! A WebSocket's frames (RFC 6455, section 5.2) followed as their bytes pass, so that the
//! text messages of a session reach the meter. Nothing is held back or changed: the follower
//! sees each piece after it was forwarded, keeps one frame header (at most 14 bytes), and hands
//! on the payload of text frames in place. A message may come in many frames, each in many
//! reads, with control frames (ping, pong) between them.
//!
//! A compressed message (`permessage-deflate`, the RSV1 bit) or a frame that breaks the
//! protocol stops the reading; the session is then estimated, and says why.

/// The longest frame header: two bytes, eight of length and four of mask.
const MAX_HEADER: usize = 14;
/// Masked payload is unmasked through a buffer of this size on the stack.
const UNMASK_BYTES: usize = 256;

/// A piece of what the frames carry.
pub(super) enum Part<'a> {
    /// Payload bytes of a text message, in order.
    Text(&'a [u8]),
    /// The text message whose bytes came last has ended.
    End,
}

/// Why the frames could no longer be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lost {
    /// A compressed message, which the meter cannot read.
    Compressed,
    /// A frame that breaks the protocol.
    Malformed,
}

impl Lost {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Lost::Compressed => "compressed",
            Lost::Malformed => "malformed",
        }
    }
}

/// The frame whose payload is passing.
#[derive(Debug)]
struct Payload {
    left: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes seen so far, for the mask's place.
    seen: usize,
    /// Part of a text message: handed on.
    text: bool,
    /// The last frame of a data message.
    ends_message: bool,
}

/// Where the follower is in the frames of one direction.
#[derive(Debug, Default)]
pub(super) struct Frames {
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Set once the header is whole, until the payload has passed.
    payload: Option<Payload>,
    /// The message under way is text.
    in_text: bool,
    lost: Option<Lost>,
}

/// How long a header is, from its first two bytes.
fn header_len(first: [u8; 2]) -> usize {
    let length = match first[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first[1] & 0x80 != 0 { 4 } else { 0 };
    2 + length + mask
}

impl Frames {
    pub(super) fn lost(&self) -> Option<Lost> {
        self.lost
    }

    /// Follows the next bytes, handing the text messages' parts to `on`.
    pub(super) fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Part<'_>)) {
        while !data.is_empty() && self.lost.is_none() {
            let Some(payload) = &mut self.payload else {
                let want = if self.header_len < 2 {
                    2
                } else {
                    header_len([self.header[0], self.header[1]])
                };
                let take = (want - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len >= 2
                    && self.header_len == header_len([self.header[0], self.header[1]])
                {
                    self.begin_frame(&mut on);
                }
                continue;
            };
            let n = payload.left.min(data.len() as u64) as usize;
            let (this, rest) = data.split_at(n);
            if payload.text {
                match payload.mask {
                    None => on(Part::Text(this)),
                    Some(mask) => {
                        let mut buffer = [0u8; UNMASK_BYTES];
                        for chunk in this.chunks(UNMASK_BYTES) {
                            for (i, b) in chunk.iter().enumerate() {
                                buffer[i] = b ^ mask[(payload.seen + i) % 4];
                            }
                            payload.seen += chunk.len();
                            on(Part::Text(&buffer[..chunk.len()]));
                        }
                    }
                }
            }
            payload.left -= n as u64;
            data = rest;
            if payload.left == 0 {
                self.end_frame(&mut on);
            }
        }
    }

    fn begin_frame(&mut self, on: &mut impl FnMut(Part<'_>)) {
        let h = self.header;
        let len = self.header_len;
        self.header_len = 0;
        let fin = h[0] & 0x80 != 0;
        let compressed = h[0] & 0x40 != 0;
        let opcode = h[0] & 0x0f;
        let left = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        let mask = (h[1] & 0x80 != 0).then(|| [h[len - 4], h[len - 3], h[len - 2], h[len - 1]]);
        let data = match opcode {
            0x0 => true,
            0x1 | 0x2 => {
                self.in_text = opcode == 0x1;
                true
            }
            0x8..=0xa => false,
            _ => {
                self.lost = Some(Lost::Malformed);
                return;
            }
        };
        if left >> 63 != 0 || (!data && (left > 125 || !fin)) {
            self.lost = Some(Lost::Malformed);
            return;
        }
        if data && compressed && opcode != 0x0 && self.in_text {
            self.lost = Some(Lost::Compressed);
            return;
        }
        self.payload = Some(Payload {
            left,
            mask,
            seen: 0,
            text: data && self.in_text,
            ends_message: data && fin,
        });
        if left == 0 {
            self.end_frame(on);
        }
    }

    fn end_frame(&mut self, on: &mut impl FnMut(Part<'_>)) {
        if let Some(payload) = self.payload.take() {
            if payload.ends_message {
                if self.in_text {
                    on(Part::End);
                }
                self.in_text = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a server (unmasked) or a client (masked) writes it.
    pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        let masked = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(masked | n as u8),
            n if n <= 0xffff => {
                out.push(masked | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(masked | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            None => out.extend_from_slice(payload),
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            }
        }
        out
    }

    /// The text messages `bytes` carry, fed in pieces of `piece` bytes.
    fn messages(bytes: &[u8], piece: usize) -> (Vec<String>, Option<Lost>) {
        let mut frames = Frames::default();
        let mut messages = vec![String::new()];
        for chunk in bytes.chunks(piece) {
            frames.feed(chunk, |part| match part {
                Part::Text(text) => messages
                    .last_mut()
                    .unwrap()
                    .push_str(std::str::from_utf8(text).unwrap()),
                Part::End => messages.push(String::new()),
            });
        }
        messages.pop();
        (messages, frames.lost())
    }

    #[test]
    fn text_messages_across_frames_and_reads_with_control_frames_between() {
        let long = "x".repeat(70_000);
        let mid = "y".repeat(300);
        let mut bytes = Vec::new();
        bytes.extend(frame(true, 0x1, b"{\"one\":1}", None));
        bytes.extend(frame(false, 0x1, b"{\"tw", None));
        bytes.extend(frame(true, 0x9, b"ping", None));
        bytes.extend(frame(false, 0x0, b"o\":", None));
        bytes.extend(frame(true, 0x0, b"2}", None));
        bytes.extend(frame(true, 0x2, b"binary, never read", None));
        bytes.extend(frame(false, 0x2, b"binary ", None));
        bytes.extend(frame(true, 0x0, b"continued", None));
        bytes.extend(frame(true, 0x1, long.as_bytes(), None));
        bytes.extend(frame(true, 0x1, mid.as_bytes(), Some([1, 2, 3, 4])));
        bytes.extend(frame(true, 0x1, b"", None));
        bytes.extend(frame(true, 0x8, b"\x03\xe8", None));
        for piece in [1, 2, 3, 7, 13, 1000, bytes.len()] {
            let (got, lost) = messages(&bytes, piece);
            assert_eq!(
                got,
                ["{\"one\":1}", "{\"two\":2}", &long, &mid, ""],
                "pieces of {piece}"
            );
            assert_eq!(lost, None);
        }
    }

    #[test]
    fn a_compressed_or_broken_frame_stops_the_reading() {
        let mut compressed = frame(true, 0x1, b"deflated", None);
        compressed[0] |= 0x40;
        assert_eq!(messages(&compressed, 3).1, Some(Lost::Compressed));
        // A compressed binary message is not the meter's loss.
        let mut binary = frame(true, 0x2, b"deflated", None);
        binary[0] |= 0x40;
        assert_eq!(messages(&binary, 3).1, None);
        for broken in [
            frame(true, 0x3, b"reserved opcode", None),
            frame(false, 0x9, b"fragmented ping", None),
            frame(true, 0x9, &[0; 126], None),
        ] {
            assert_eq!(messages(&broken, 5).1, Some(Lost::Malformed));
        }
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(messages(&huge, 4).1, Some(Lost::Malformed));
    }
}
