//! An HTTP/2 connection's writes, gathered and sent once per scheduler turn.
//!
//! hyper's HTTP/2 client sends a request's HEADERS from the connection task and its body from
//! another task (the body pipe), which can only send once the connection task has opened the
//! stream and granted it window. Written as they come, a small JSON request costs two TLS
//! records and two `writev`s, and the upstream two reads. And h2 writes every DATA frame of
//! more than 256 bytes on its own (it chains the payload instead of copying it, then flushes
//! before it takes the next frame), so a 5 MiB upload left in 322 writes of one 16 KiB frame
//! each, every one split into two TLS records (the frame and the next frame's 9-byte head).
//!
//! [`Coalesce`] keeps what h2 writes and sends it on a flush, with two rules:
//! - a batch is held back for one turn of the runtime: the flush that starts it wakes the
//!   connection task and returns, the tasks it woke (the body pipe, other streams) queue their
//!   frames, and the first flush after the connection's next read writes them all at once;
//! - a flush with nothing new since the previous one writes (the end of h2's send loop), and so
//!   does a batch that reaches [`GATHER_LIMIT`].
//!
//! Each DATA frame's flush in between only adds to the batch, so an upload leaves in writes of
//! up to 64 KiB instead of one frame each. A write of [`DIRECT`] bytes or more (an upload's
//! DATA frame) is not copied into the batch: over TLS it goes, with the batch before it,
//! straight into rustls's queue of encrypted records, which the next send writes out; rustls
//! copies the bytes as it encrypts them anyway. nginx's `postpone_output` and TCP_CORK trade
//! the same way.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connect::Io;

/// A batch this large is written without waiting for the flush: four full TLS records.
const GATHER_LIMIT: usize = 64 * 1024;

/// A write this large goes to the stream's queue, if it has one, instead of being copied.
const DIRECT: usize = 4096;

/// A stream that can take bytes now and send them, in order, with what it writes next: a TLS
/// stream's queue of encrypted records.
pub trait Queue {
    /// Takes what it can of `bufs`, in order; a stream with no queue takes nothing.
    fn queue(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
}

impl Queue for Io {
    fn queue(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Io::queue(self, bufs)
    }
}

pub struct Coalesce<T> {
    inner: T,
    /// What h2 wrote and `inner` has not taken yet, from `sent` on.
    batch: Vec<u8>,
    sent: usize,
    /// Bytes in `inner`'s queue, sent with the batch.
    queued: usize,
    /// This batch was held back for a turn already.
    held: bool,
    /// The connection read to its end since the batch was held: a new turn has begun.
    turned: bool,
    /// Bytes arrived since the last flush.
    fresh: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            batch: Vec::new(),
            sent: 0,
            queued: 0,
            held: false,
            turned: false,
            fresh: false,
        }
    }

    /// Bytes written by h2 and not yet sent.
    fn pending(&self) -> usize {
        self.batch.len() - self.sent + self.queued
    }

    /// Copies `bufs` into the batch, from byte `skip` on.
    fn gather(&mut self, bufs: &[io::IoSlice<'_>], mut skip: usize) {
        for buf in bufs {
            let from = skip.min(buf.len());
            self.batch.extend_from_slice(&buf[from..]);
            skip -= from;
        }
    }

    /// Whether a flush now should wait, and if so, arranges to be polled again.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        if self.pending() >= GATHER_LIMIT {
            return false;
        }
        if !self.held {
            self.held = true;
            self.turned = false;
            cx.waker().wake_by_ref();
            return true;
        }
        // Held already: keep gathering only while frames keep coming in the same turn.
        fresh && !self.turned
    }
}

impl<T: AsyncWrite + Queue + Unpin> Coalesce<T> {
    /// Hands a large write to `inner`'s queue, the batch before it; what the queue does not
    /// take joins the batch.
    fn queue(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<()> {
        let held = &self.batch[self.sent..];
        let mut slices = Vec::with_capacity(bufs.len() + 1);
        if !held.is_empty() {
            slices.push(io::IoSlice::new(held));
        }
        slices.extend(bufs.iter().map(|buf| io::IoSlice::new(buf)));
        let taken = self.inner.queue(&slices)?;
        let from_batch = taken.min(held.len());
        self.sent += from_batch;
        self.queued += taken;
        if self.sent == self.batch.len() {
            self.batch.clear();
            self.sent = 0;
        }
        self.gather(bufs, taken - from_batch);
        Ok(())
    }

    /// Sends the batch and `inner`'s queue. A batch sent because it reached the limit keeps
    /// its turn: what follows in the same turn joins the next batch without another wait.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.batch.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.batch[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.batch.clear();
        self.sent = 0;
        if self.queued > 0 {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.queued = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_pending() {
            this.turned = true;
        }
        polled
    }
}

impl<T: AsyncWrite + Queue + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|buf| buf.len()).sum();
        if this.pending() > 0 && this.pending() + len > GATHER_LIMIT {
            ready!(this.poll_send(cx))?;
        }
        if len >= DIRECT {
            this.queue(bufs)?;
        } else {
            this.gather(bufs, 0);
        }
        this.fresh |= len > 0;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if this.hold(cx) {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_send(cx))?;
            this.held = false;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// Records every write it takes, and reads are always pending. With `room`, it queues up
    /// to that many bytes as a TLS stream queues records, and sends them ahead of its next
    /// write or on a flush.
    #[derive(Default)]
    struct Socket {
        writes: Vec<usize>,
        sent: Vec<u8>,
        queue: Vec<u8>,
        room: usize,
    }

    impl Queue for Socket {
        fn queue(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(self.room - self.queue.len());
                self.queue.extend_from_slice(&buf[..n]);
                taken += n;
                if n < buf.len() {
                    break;
                }
            }
            Ok(taken)
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes.push(this.queue.len() + buf.len());
            this.sent.append(&mut this.queue);
            this.sent.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.queue.is_empty() {
                this.writes.push(this.queue.len());
                this.sent.append(&mut this.queue);
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        io: Coalesce<Socket>,
        wakes: Arc<Wakes>,
        waker: Waker,
        /// Every byte written so far, in order.
        wrote: Vec<u8>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness::with_queue(0)
        }

        /// A stream that queues up to `room` bytes, as TLS does.
        fn with_queue(room: usize) -> Harness {
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            Harness {
                io: Coalesce::new(Socket {
                    room,
                    ..Socket::default()
                }),
                wakes,
                waker,
                wrote: Vec::new(),
            }
        }

        fn write(&mut self, len: usize) {
            self.write_parts(&[len]);
        }

        /// One vectored write, as h2 writes a DATA frame: its head, then its payload.
        fn write_parts(&mut self, lens: &[usize]) {
            let parts: Vec<Vec<u8>> = lens
                .iter()
                .map(|&len| {
                    (0..len)
                        .map(|i| (self.wrote.len() + i) as u8 ^ (lens.len() as u8))
                        .collect()
                })
                .collect();
            let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut cx = Context::from_waker(&self.waker);
            let total: usize = lens.iter().sum();
            let polled = Pin::new(&mut self.io).poll_write_vectored(&mut cx, &slices);
            assert!(matches!(polled, Poll::Ready(Ok(n)) if n == total));
            for part in parts {
                self.wrote.extend(part);
            }
        }

        fn flush(&mut self) {
            let mut cx = Context::from_waker(&self.waker);
            let polled = Pin::new(&mut self.io).poll_flush(&mut cx);
            assert!(matches!(polled, Poll::Ready(Ok(()))));
        }

        /// What h2 does at the start of every poll of the connection: read until pending.
        fn read_to_end(&mut self) {
            let mut cx = Context::from_waker(&self.waker);
            let mut space = [0u8; 16];
            let mut buf = ReadBuf::new(&mut space);
            assert!(Pin::new(&mut self.io)
                .poll_read(&mut cx, &mut buf)
                .is_pending());
        }

        fn written(&self) -> &[usize] {
            &self.io.inner.writes
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn a_small_batch_waits_one_turn_and_leaves_in_one_write() {
        let mut h = Harness::new();
        // Turn 1: HEADERS, and the flush at the end of h2's send loop.
        h.write(92);
        h.flush();
        assert_eq!(h.written(), &[] as &[usize]);
        assert_eq!(h.wakes(), 1, "the held batch must ask for another turn");
        // Turn 2: the connection reads, the body pipe's DATA frame arrives, h2 flushes.
        h.read_to_end();
        h.write(62);
        h.flush();
        assert_eq!(h.written(), &[154]);
    }

    #[test]
    fn data_frames_flushed_one_by_one_leave_together() {
        let mut h = Harness::new();
        h.read_to_end();
        // h2 flushes after each chained DATA frame, then once more at the end of its loop.
        for _ in 0..5 {
            h.write(9 + 16_384);
            h.flush();
        }
        h.flush();
        assert_eq!(h.written(), &[3 * 16_393, 2 * 16_393]);
        assert_eq!(h.wakes(), 1);
    }

    #[test]
    fn a_held_batch_is_written_even_if_nothing_reads() {
        let mut h = Harness::new();
        h.write(100);
        h.flush();
        // The next turn brings nothing new and no read: the batch must still leave.
        h.flush();
        assert_eq!(h.written(), &[100]);
    }

    #[test]
    fn a_batch_at_the_limit_leaves_without_waiting() {
        let mut h = Harness::new();
        h.write(GATHER_LIMIT);
        h.flush();
        assert_eq!(h.written(), &[GATHER_LIMIT]);
        assert_eq!(h.wakes(), 0);
    }

    #[test]
    fn shutdown_writes_what_is_held() {
        let mut h = Harness::new();
        h.write(17);
        let mut cx = Context::from_waker(&h.waker);
        assert!(matches!(
            Pin::new(&mut h.io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(h.written(), &[17]);
    }

    #[test]
    fn over_tls_large_frames_go_to_the_record_queue_uncopied() {
        let mut h = Harness::with_queue(1 << 20);
        h.read_to_end();
        for _ in 0..5 {
            h.write_parts(&[9, 16_384]);
            assert!(h.io.batch.is_empty(), "a large frame must not be copied");
            h.flush();
        }
        h.flush();
        assert_eq!(h.written(), &[3 * 16_393, 2 * 16_393]);
        assert_eq!(h.io.inner.sent, h.wrote);
    }

    #[test]
    fn what_the_queue_cannot_take_keeps_its_order() {
        let mut h = Harness::with_queue(20_000);
        h.write(100);
        h.flush();
        h.read_to_end();
        h.write_parts(&[9, 16_384]);
        h.write_parts(&[9, 16_384]);
        h.write(50);
        h.flush();
        h.write(30);
        h.flush();
        h.flush();
        assert_eq!(h.io.inner.sent.len(), h.wrote.len());
        assert!(
            h.io.inner.sent == h.wrote,
            "bytes must leave in the order h2 wrote them"
        );
    }
}
