//! HTTP/1 request framing, checked before hyper reads a byte: a request whose length is
//! ambiguous, or whose head is malformed or too large, is answered in OpenAI's error shape and
//! nothing after its head is ever read.
//!
//! hyper settles `Content-Length` together with `Transfer-Encoding: chunked` by the chunked
//! framing and closes the connection afterwards (RFC 9112, section 6.1). That is safe but
//! silent, and its own 400 and 431 answers have no body. [`FramingGuard`] sits between the socket
//! and hyper. It follows each request's framing to know where the next head starts, and parses
//! every head with httparse, the parser hyper uses. A head to refuse is replaced by a stand-in
//! request, and the connection's [`Refusals`] tells the service which request that is, so the
//! answer comes from the service like any other: in order, after any earlier answer on the
//! connection, and with `Connection: close`.
//!
//! Bytes go straight into hyper's buffer; only an unfinished head or chunk-size line is held
//! back here until its end arrives.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::bounds::{MAX_HEADERS, MAX_REQUEST_HEAD_BYTES};
use crate::outcome::Refused;
use crate::policy::websocket;

/// A chunk-size or trailer line longer than this is left for hyper to refuse.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// What hyper reads in place of a refused head: a request it accepts, without a body, that the
/// service recognises by its position on the connection, never by its content.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: memoctopus\r\n\r\n";

/// Shared by a connection's guard and its service: which request, counted from 0, was
/// refused. A refusal ends the connection, so there is at most one.
#[derive(Debug, Default)]
pub struct Refusals(OnceLock<(u64, Refused)>);

impl Refusals {
    /// Why the `index`th request on the connection was refused, if it was.
    pub fn of(&self, index: u64) -> Option<Refused> {
        match self.0.get() {
            Some((at, why)) if *at == index => Some(*why),
            _ => None,
        }
    }
}

/// Where the reader is in the stream of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Bytes left of a body framed by `Content-Length`.
    Body(u64),
    ChunkSize,
    /// Bytes left of a chunk, its closing CRLF included.
    ChunkData(u64),
    Trailers,
    /// Something hyper will refuse or close on by itself; bytes pass unchecked. Only after a
    /// WebSocket upgrade request, or once the client has closed its side.
    Unchecked,
    /// A chunk-size or trailer line hyper will refuse has been handed over: the connection
    /// ends there, and nothing after it is read, so no later head goes unchecked.
    Sealed,
    /// The stand-in has been handed over; nothing more is read.
    Refused,
}

/// How far a run of bytes could be checked.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    All,
    /// Everything before this offset is checked; from it on is an unfinished head or line.
    Partial(usize),
    /// The head starting at this offset is refused.
    Refuse(usize, Refused),
}

/// An HTTP/1 connection's read side, checked head by head. Writes pass straight through.
pub struct FramingGuard<I> {
    io: I,
    state: State,
    /// Bytes read but not handed to hyper: `held[..ready]` are checked, the rest is an
    /// unfinished head or line.
    held: Vec<u8>,
    ready: usize,
    /// Request heads accepted so far.
    heads: u64,
    refusals: Arc<Refusals>,
}

impl<I> FramingGuard<I> {
    pub fn new(io: I, refusals: Arc<Refusals>) -> FramingGuard<I> {
        FramingGuard {
            io,
            state: State::Head,
            held: Vec::new(),
            ready: 0,
            heads: 0,
            refusals,
        }
    }

    /// Follows the framing through `bytes`, which start where the last scan stopped.
    fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match self.state {
                State::Head => match check_head(rest) {
                    Head::Partial if rest.len() > MAX_REQUEST_HEAD_BYTES => {
                        return Scan::Refuse(at, Refused::HeadTooLarge)
                    }
                    Head::Partial => return Scan::Partial(at),
                    Head::Refused(why) => return Scan::Refuse(at, why),
                    Head::Complete { len, next } => {
                        at += len;
                        self.heads += 1;
                        self.state = next;
                    }
                },
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    self.state = match (self.state, left - take) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkSize,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_LINE_BYTES {
                            self.state = State::Sealed;
                            return Scan::Partial(at + rest.len());
                        }
                        return Scan::Partial(at);
                    };
                    let line = &rest[..end];
                    at += end + 1;
                    self.state = match self.state {
                        State::ChunkSize => match chunk_size(line).map(|n| n.checked_add(2)) {
                            Some(Some(2)) => State::Trailers,
                            Some(Some(left)) => State::ChunkData(left),
                            Some(None) | None => {
                                self.state = State::Sealed;
                                return Scan::Partial(at);
                            }
                        },
                        _ if line.is_empty() || line == b"\r" => State::Head,
                        _ => State::Trailers,
                    };
                }
                State::Unchecked | State::Refused => return Scan::All,
                State::Sealed => return Scan::Partial(at),
            }
        }
        Scan::All
    }

    /// Replaces the head at `held`'s end with the stand-in, and records why.
    fn refuse(&mut self, why: Refused) {
        let _ = self.refusals.0.set((self.heads, why));
        self.held.extend_from_slice(STAND_IN);
        self.ready = self.held.len();
        self.state = State::Refused;
    }

    /// Applies a scan of the whole of `held`.
    fn settle_held(&mut self, scan: Scan) {
        match scan {
            Scan::All => self.ready = self.held.len(),
            Scan::Partial(at) => self.ready = at,
            Scan::Refuse(at, why) => {
                self.held.truncate(at);
                self.refuse(why);
            }
        }
    }
}

impl<I: AsyncRead + Unpin> FramingGuard<I> {
    /// Reads more behind the unfinished head or line in `held`.
    fn poll_fill_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let len = self.held.len();
        self.held.resize(len + 4096, 0);
        let mut buf = ReadBuf::new(&mut self.held[len..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let read = buf.filled().len();
        self.held.truncate(len + read);
        ready!(polled)?;
        Poll::Ready(Ok(read))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FramingGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                if this.held.is_empty() {
                    // Most heads come in one read: an idle connection holds no buffer here.
                    this.held = Vec::new();
                }
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // hyper answers the stand-in and closes; it must not see the client leave first.
                State::Refused => return Poll::Pending,
                // hyper has the line it refuses; after it, the connection's read side ends.
                State::Sealed => return Poll::Ready(Ok(())),
                State::Unchecked if this.held.is_empty() => {
                    return Pin::new(&mut this.io).poll_read(cx, buf)
                }
                _ => {}
            }
            if !this.held.is_empty() {
                if ready!(this.poll_fill_held(cx))? == 0 {
                    // The client stopped mid-head: hand over what there is; hyper knows what
                    // to make of a cut message.
                    this.state = State::Unchecked;
                    this.ready = this.held.len();
                    continue;
                }
                let held = std::mem::take(&mut this.held);
                let scan = this.scan(&held);
                this.held = held;
                this.settle_held(scan);
                continue;
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(()));
            }
            match this.scan(&buf.filled()[start..]) {
                Scan::All => return Poll::Ready(Ok(())),
                Scan::Partial(at) => {
                    this.held.extend_from_slice(&buf.filled()[start + at..]);
                    buf.set_filled(start + at);
                }
                Scan::Refuse(at, why) => {
                    buf.set_filled(start + at);
                    this.refuse(why);
                }
            }
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FramingGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What a run of bytes starting at a request head holds.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Partial,
    Refused(Refused),
    Complete { len: usize, next: State },
}

/// Parses one request head the way hyper will, and decides how its body is framed.
fn check_head(bytes: &[u8]) -> Head {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return Head::Refused(Refused::HeadTooLarge),
        Err(error) => return Head::Refused(Refused::BadRequest(malformed(error))),
    };
    if len > MAX_REQUEST_HEAD_BYTES {
        return Head::Refused(Refused::HeadTooLarge);
    }
    let http_11 = request.version == Some(1);
    let mut length: Option<u64> = None;
    // Like hyper, the last Transfer-Encoding line decides, and chunked must be its last coding.
    let mut chunked: Option<bool> = None;
    let mut websocket = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("upgrade") && websocket::names_websocket(header.value) {
            websocket = true;
        }
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return refuse("Transfer-Encoding is not allowed in an HTTP/1.0 request");
            }
            chunked = Some(last_coding_is_chunked(header.value));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let Some(value) = digits(header.value) else {
                return refuse("The Content-Length header is not a number");
            };
            if length.is_some_and(|seen| seen != value) {
                return refuse("The request has two different Content-Length values");
            }
            length = Some(value);
        }
    }
    let next = match (chunked, length) {
        (Some(_), Some(_)) => {
            return refuse(
                "The request has both Content-Length and Transfer-Encoding; send only one",
            )
        }
        (Some(false), None) => {
            return refuse("Transfer-Encoding must end with chunked, the only coding accepted")
        }
        (Some(true), None) => State::ChunkSize,
        // After a WebSocket upgrade the bytes are no longer HTTP; if the upgrade is refused,
        // the service closes the connection after its answer (see `Proxy::handle`).
        (None, Some(0) | None) if websocket && request.method == Some("GET") => State::Unchecked,
        (None, Some(0) | None) => State::Head,
        (None, Some(length)) => State::Body(length),
    };
    Head::Complete { len, next }
}

fn refuse(why: &'static str) -> Head {
    Head::Refused(Refused::BadRequest(why))
}

fn malformed(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "The request has a malformed header name",
        httparse::Error::HeaderValue => "The request has a malformed header value",
        httparse::Error::Token => "The request line has a malformed method or target",
        httparse::Error::Version => "The request line has a malformed HTTP version",
        _ => "The request head is malformed",
    }
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A Content-Length value as hyper reads it: ASCII digits only, no sign, no list.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A chunk-size line's size; extensions after `;` are ignored. `None` if it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if hex_len == 0 {
        return None;
    }
    let rest = &line[hex_len..];
    if !(rest.is_empty() || matches!(rest.trim_ascii_start().first(), Some(b';'))) {
        return None;
    }
    // Leading zeros are allowed, as hyper allows them; past them, a size that does not fit
    // 64 bits is no size.
    line[..hex_len].iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FramingGuard<()> {
        FramingGuard::new((), Arc::default())
    }

    #[test]
    fn follows_requests_through_lengths_and_chunks() {
        let mut g = guard();
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
GET /c HTTP/1.1\r\n\r\n";
        assert_eq!(g.scan(stream), Scan::All);
        assert_eq!(g.heads, 3);
        assert_eq!(g.state, State::Head);
    }

    #[test]
    fn stops_at_an_unfinished_head_or_line() {
        let mut g = guard();
        let head = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /b HT";
        assert_eq!(g.scan(head), Scan::Partial(head.len() - 10));
        let mut g = guard();
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1";
        assert_eq!(g.scan(chunked), Scan::Partial(chunked.len() - 1));
    }

    #[test]
    fn refuses_ambiguous_lengths_where_the_head_starts() {
        let mut g = guard();
        let stream = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            g.scan(stream),
            Scan::Refuse(18, Refused::BadRequest(_))
        ));
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                matches!(guard().scan(head), Scan::Refuse(0, Refused::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let same = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(guard().scan(same), Scan::All);
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"ff ; name=value\r"), Some(255));
        assert_eq!(chunk_size(b"x\r"), None);
        assert_eq!(chunk_size(b"12345678901234567\r"), None);
        assert_eq!(chunk_size(b"00000000000000000002\r"), Some(2));
    }
}
