//! An HTTP/2 connection's writes, gathered and sent once per scheduler turn.
//!
//! hyper's HTTP/2 client sends a request's HEADERS from the connection task and its body from
//! another task (the body pipe), which can only send once the connection task has opened the
//! stream and granted it window. Written as they come, a small JSON request costs two TLS
//! records and two `writev`s, and the upstream two reads. And h2 writes every DATA frame of
//! more than 256 bytes on its own (it chains the payload instead of copying it, then flushes
//! before it takes the next frame), so an upload would leave in one write per 16 KiB frame.
//!
//! [`Coalesce`] keeps what h2 writes and sends it on a flush, with two rules:
//! - a batch is held back for one turn of the runtime: the flush that starts it wakes the
//!   connection task and returns, the tasks it woke (the body pipe, other streams) queue their
//!   frames, and the first flush after the connection's next read writes them all at once;
//! - a flush with nothing new since the previous one writes (the end of h2's send loop), and so
//!   does a batch that reaches [`GATHER_LIMIT`].
//!
//! Each DATA frame's flush in between only adds to the batch, so an upload leaves in writes of
//! up to [`GATHER_LIMIT`] instead of one frame each. nginx's `postpone_output` and TCP_CORK
//! trade the same way.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A batch this large is written without waiting for the flush: four full TLS records.
const GATHER_LIMIT: usize = 64 * 1024;

pub(super) struct Coalesce<T> {
    inner: T,
    /// What h2 wrote and `inner` has not taken yet, from `sent` on.
    batch: Vec<u8>,
    sent: usize,
    /// This batch was held back for a turn already.
    held: bool,
    /// The connection read to its end since the batch was held: a new turn has begun.
    turned: bool,
    /// Bytes arrived since the last flush.
    fresh: bool,
}

impl<T> Coalesce<T> {
    pub(super) fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            batch: Vec::new(),
            sent: 0,
            held: false,
            turned: false,
            fresh: false,
        }
    }

    /// Bytes h2 wrote that have not gone to `inner` yet.
    fn unsent(&self) -> usize {
        self.batch.len() - self.sent
    }

    /// Whether a flush now should wait. A flush that leaves bytes unsent always asks for
    /// another poll, so nothing waits on a wake-up that may not come.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        if self.unsent() >= GATHER_LIMIT {
            return false;
        }
        let hold = if self.held {
            // Held already: keep gathering only while frames keep coming in the same turn.
            fresh && !self.turned
        } else {
            self.held = true;
            self.turned = false;
            true
        };
        if hold {
            cx.waker().wake_by_ref();
        }
        hold
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the whole batch to `inner`. A batch sent because it reached the limit keeps its
    /// turn: what follows in the same turn joins the next batch without another wait.
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

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
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
        if this.unsent() > 0 && this.unsent() + len > GATHER_LIMIT {
            ready!(this.poll_send(cx))?;
        }
        for buf in bufs {
            this.batch.extend_from_slice(buf);
        }
        this.fresh |= len > 0;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unsent() > 0 {
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

    /// Records the size of every write it takes; reads are always pending.
    #[derive(Default)]
    struct Socket {
        writes: Vec<usize>,
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
            self.get_mut().writes.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    }

    impl Harness {
        fn new() -> Harness {
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            Harness {
                io: Coalesce::new(Socket::default()),
                wakes,
                waker,
            }
        }

        fn write(&mut self, len: usize) {
            let mut cx = Context::from_waker(&self.waker);
            let frame = vec![7u8; len];
            let polled = Pin::new(&mut self.io).poll_write(&mut cx, &frame);
            assert!(matches!(polled, Poll::Ready(Ok(n)) if n == len));
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
            let wakes = h.wakes();
            h.flush();
            if !h.io.batch.is_empty() {
                assert_eq!(h.wakes(), wakes + 1, "bytes left unsent need another poll");
            }
        }
        h.flush();
        assert_eq!(h.written(), &[3 * 16_393, 2 * 16_393]);
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
}
