//! A socket wrapper that counts the bytes written through it, so that a connection's
//! driver can tell a slow write (bytes still move) from a stalled one (`WriteTimeoutMs`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::io::{AsyncRead, AsyncWrite};

/// Bytes written so far to one connection's socket; cloned into its driver.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteProgress(Arc<AtomicU64>);

impl WriteProgress {
    /// Bytes written so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        // One writer (the connection's task): a plain load and store suffice.
        let total = self.get().wrapping_add(n as u64);
        self.0.store(total, Ordering::Relaxed);
    }
}

/// A `futures` IO stream that counts every byte written through it (for the write timeout).
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    progress: WriteProgress,
}

impl<S> Metered<S> {
    /// Wraps `inner`; its writes are counted in `progress`.
    pub(crate) fn new(inner: S, progress: WriteProgress) -> Self {
        Self { inner, progress }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = r {
            self.progress.add(n);
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
