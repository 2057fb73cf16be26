//! Hand-made HTTP/2 frames, for clients that no well-behaved library would be.

use std::time::Duration;

use tokio::io::AsyncReadExt;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn hpack_int(out: &mut Vec<u8>, value: usize) {
    if value < 127 {
        out.push(value as u8);
        return;
    }
    out.push(127);
    let mut rest = value - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        hpack_int(&mut block, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_int(&mut block, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

pub fn request_headers(authority: &str) -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", authority),
        ("content-type", "application/json"),
    ])
}

/// Reads until the peer closes or `wait` passes; returns the frame types seen.
pub async fn frame_types(stream: &mut tokio::net::TcpStream, wait: Duration) -> Vec<u8> {
    frames_until_closed(stream, wait).await.0
}

/// Reads until the peer closes or `wait` passes; returns the frame types seen and whether the
/// peer closed.
pub async fn frames_until_closed(
    stream: &mut tokio::net::TcpStream,
    wait: Duration,
) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = vec![0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= data.len() {
        let len = (data[at] as usize) << 16 | (data[at + 1] as usize) << 8 | data[at + 2] as usize;
        types.push(data[at + 3]);
        at += 9 + len;
    }
    (types, closed)
}
