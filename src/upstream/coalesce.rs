//! One write per scheduler turn on an HTTP/2 connection.
//!
//! hyper's HTTP/2 client sends a request's HEADERS from the connection task and its body from
//! another task (the body pipe), which can only send once the connection task has opened the
//! stream and granted it window. Written as they come, a small JSON request costs two TLS
//! records and two `writev`s, and the upstream two reads. [`Coalesce`] holds each write back
//! for one turn of the runtime: the connection task wakes itself and yields, the tasks it woke
//! (the body pipe, other streams) queue their frames, and the next poll writes them all at
//! once. The cost is one extra poll of the connection task per write; nginx's `postpone_output`
//! and TCP_CORK trade the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Coalesce<T> {
    inner: T,
    /// This write was held back once already: the next poll writes.
    held: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce { inner, held: false }
    }

    /// Ready to write now, or yields once first.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held {
            self.held = false;
            Poll::Ready(())
        } else {
            self.held = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.turn(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.turn(cx));
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
