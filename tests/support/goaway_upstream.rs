//! An HTTP/2 upstream that writes its frames itself and shuts every connection down the way
//! RFC 9113 (section 6.8) describes a graceful shutdown, with the window between its two
//! GOAWAYs held open long enough for requests to race it:
//!
//! 1. at the first HEADERS of a connection, GOAWAY(2^31-1, NO_ERROR) alone;
//! 2. for [`GoawayUpstream::window`] it goes on accepting and answering every stream;
//! 3. then a PING, and after its PONG, GOAWAY(last-stream-id = the highest stream it accepted);
//!    a stream above that is never processed;
//! 4. it finishes the streams it accepted, and closes.
//!
//! A stream counts as accepted (processed, as a real server would start on it) at its HEADERS.
//! Each request carries its id as its whole body; the upstream answers `200` with that id as
//! its body. A stream accepted and then reset or cut before its body ended is *abandoned*: it
//! may have been processed, and its id is unknown. Header blocks are never decoded: the answer's
//! only header is `:status: 200`, HPACK's static entry 8.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::h2_frames::{frame, PREFACE};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const SHUTDOWN_PING: [u8; 8] = *b"shutdown";

/// What the upstream saw, over all its connections.
#[derive(Debug, Default, Clone)]
pub struct GoawayLog {
    pub connections: usize,
    /// Streams accepted at their HEADERS.
    pub accepted: usize,
    /// The ids of the requests answered, in order.
    pub answered: Vec<String>,
    /// Streams accepted, then reset or cut before their body ended.
    pub abandoned: usize,
    /// Streams above the final GOAWAY's last-stream-id: never processed.
    pub refused: usize,
    /// Connections being served now, and the streams they accepted and have not answered.
    pub live_connections: usize,
    pub waiting_streams: usize,
}

pub struct GoawayUpstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<GoawayLog>>,
}

impl GoawayUpstream {
    /// Serves h2c (prior knowledge), or HTTP/2 over TLS with `tls`, whose ALPN must offer `h2`.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, window: Duration) -> GoawayUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(GoawayLog::default()));
        let shared = log.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let log = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    {
                        let mut log = log.lock().unwrap();
                        log.connections += 1;
                        log.live_connections += 1;
                    }
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(tls, log.clone(), window).await;
                            }
                        }
                        None => serve(stream, log.clone(), window).await,
                    }
                    log.lock().unwrap().live_connections -= 1;
                });
            }
        });
        GoawayUpstream { addr, log }
    }

    /// The log itself, for a look while the upstream serves.
    pub fn shared_log(&self) -> Arc<Mutex<GoawayLog>> {
        self.log.clone()
    }

    pub fn log(&self) -> GoawayLog {
        self.log.lock().unwrap().clone()
    }
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await.ok()?;
    let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}

fn goaway(last: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
    frame(GOAWAY, 0, 0, &payload)
}

/// A DATA frame's content, without its padding.
fn data_of(frame: &Frame) -> &[u8] {
    if frame.flags & PADDED != 0 && !frame.payload.is_empty() {
        let pad = frame.payload[0] as usize;
        let end = frame.payload.len().saturating_sub(pad).max(1);
        &frame.payload[1..end]
    } else {
        &frame.payload
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    log: Arc<Mutex<GoawayLog>>,
    window: Duration,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut preface = [0u8; 24];
    if reader.read_exact(&mut preface).await.is_err() || preface != PREFACE {
        return;
    }
    if writer.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err() {
        return;
    }
    // Bodies received so far, by stream, for the streams accepted and not yet answered.
    let mut open: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut highest = 0u32;
    let mut ping_at: Option<Instant> = None;
    let mut ping_sent = false;
    let mut last: Option<u32> = None;
    // Frames are read in a task of their own, so that waiting for the next one can be given
    // up for the PING's timer without losing half a frame.
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(f) = read_frame(&mut reader).await {
            if frames_tx.send(f).is_err() {
                break;
            }
        }
    });
    loop {
        if last.is_some() && open.is_empty() {
            break;
        }
        let ping_due = ping_at.filter(|_| !ping_sent);
        let next = tokio::select! {
            frame = frames.recv() => frame,
            _ = tokio::time::sleep_until(ping_due.unwrap_or_else(Instant::now)), if ping_due.is_some() => {
                ping_sent = true;
                if writer.write_all(&frame(PING, 0, 0, &SHUTDOWN_PING)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(f) = next else { break };
        let mut out = Vec::new();
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => out.extend(frame(SETTINGS, ACK, 0, &[])),
            PING if f.flags & ACK == 0 => out.extend(frame(PING, ACK, 0, &f.payload)),
            PING if f.payload == SHUTDOWN_PING && last.is_none() => {
                last = Some(highest);
                out.extend(goaway(highest));
            }
            HEADERS => {
                if last.is_some_and(|last| f.stream > last) {
                    log.lock().unwrap().refused += 1;
                } else {
                    {
                        let mut log = log.lock().unwrap();
                        log.accepted += 1;
                        log.waiting_streams += 1;
                    }
                    highest = highest.max(f.stream);
                    open.insert(f.stream, Vec::new());
                    if ping_at.is_none() {
                        ping_at = Some(Instant::now() + window);
                        out.extend(goaway(0x7fff_ffff));
                    }
                    if f.flags & END_STREAM != 0 {
                        answer(&mut out, f.stream, &mut open, &log);
                    }
                }
            }
            DATA => {
                let len = f.payload.len() as u32;
                if len > 0 {
                    out.extend(frame(WINDOW_UPDATE, 0, 0, &len.to_be_bytes()));
                }
                if let Some(body) = open.get_mut(&f.stream) {
                    body.extend_from_slice(data_of(&f));
                    if len > 0 && f.flags & END_STREAM == 0 {
                        out.extend(frame(WINDOW_UPDATE, 0, f.stream, &len.to_be_bytes()));
                    }
                    if f.flags & END_STREAM != 0 {
                        answer(&mut out, f.stream, &mut open, &log);
                    }
                }
            }
            RST_STREAM if open.remove(&f.stream).is_some() => {
                let mut log = log.lock().unwrap();
                log.abandoned += 1;
                log.waiting_streams -= 1;
            }
            _ => {}
        }
        if !out.is_empty() && writer.write_all(&out).await.is_err() {
            break;
        }
    }
    {
        let mut log = log.lock().unwrap();
        log.abandoned += open.len();
        log.waiting_streams -= open.len();
    }
    let _ = writer.shutdown().await;
}

fn answer(
    out: &mut Vec<u8>,
    stream: u32,
    open: &mut HashMap<u32, Vec<u8>>,
    log: &Mutex<GoawayLog>,
) {
    let body = open.remove(&stream).unwrap_or_default();
    let mut log = log.lock().unwrap();
    log.waiting_streams -= 1;
    log.answered
        .push(String::from_utf8_lossy(&body).into_owned());
    out.extend(frame(HEADERS, END_HEADERS, stream, &[0x88]));
    out.extend(frame(DATA, END_STREAM, stream, &body));
}
