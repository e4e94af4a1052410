//! A writer that fails once a write or flush has made no progress for a while.
//!
//! A client that stops reading would otherwise keep its connection's answers (and, through
//! back-pressure, the pool answers behind them) in the gateway for as long as it likes. The
//! clock runs only while the socket refuses bytes: a slow reader that keeps taking some is
//! never cut off, however large the answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

pub struct StallTimeout<W> {
    inner: W,
    limit: Duration,
    /// Armed when the socket first refused bytes; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<W> StallTimeout<W> {
    pub fn new(inner: W, limit: Duration) -> Self {
        StallTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner writer returned `poll`: clears the clock on progress, and on a refusal
    /// starts it (or fails once it has run out).
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self.stalled.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + limit))
                });
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took no bytes for {} s", limit.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallTimeout<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_fails_the_write() {
        // The client end is kept open and never read.
        let (client, server) = tokio::io::duplex(1024);
        let mut w = StallTimeout::new(server, Duration::from_secs(30));
        let err = w.write_all(&[0u8; 8192]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        let (mut client, server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            while got < 64 * 1024 {
                // Slower than the stall limit in total, never stalled that long at once.
                tokio::time::sleep(Duration::from_secs(1)).await;
                got += client.read(&mut buf).await.unwrap();
            }
            got
        });
        let mut w = StallTimeout::new(server, Duration::from_secs(5));
        w.write_all(&vec![7u8; 64 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }
}
