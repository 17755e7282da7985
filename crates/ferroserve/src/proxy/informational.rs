//! Lets a backend answer with a 1xx status (the FAQ answers `123`): hyper writes only final statuses, so the proxy sends a placeholder and patches the status line on the wire.
//!
//! A response whose status is 1xx goes to hyper as `999` with a recognisable reason
//! phrase, and the connection is armed with the real code; [`StatusPatchIo`], which wraps
//! the connection's socket, replaces the three digits of the next `HTTP/1.x 999 …` status
//! line it writes and disarms. Such a response also carries `connection: close`: a client
//! reads a 1xx as informational and would otherwise wait for another response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};

use http::header::CONNECTION;
use http::{HeaderValue, StatusCode};
use hyper::ext::ReasonPhrase;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The status hyper is given in place of a 1xx one.
const PLACEHOLDER: u16 = 999;
/// Where the three status digits start in `HTTP/1.1 999 …`.
const DIGITS_AT: usize = 9;

/// The 1xx status a connection still has to put on the wire (0: none).
#[derive(Default)]
pub(crate) struct PendingStatus(AtomicU16);

impl PendingStatus {
    /// Swaps a 1xx status for the placeholder and arms the connection; other statuses pass.
    pub(crate) fn prepare<B>(&self, mut response: http::Response<B>) -> http::Response<B> {
        let status = response.status();
        if !status.is_informational() {
            return response;
        }
        self.0.store(status.as_u16(), Ordering::Release);
        let reason = status.canonical_reason().unwrap_or("Informational");
        response
            .extensions_mut()
            .insert(ReasonPhrase::from_static(reason.as_bytes()));
        *response.status_mut() = StatusCode::from_u16(PLACEHOLDER).unwrap_or(status);
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }

    fn armed(&self) -> Option<u16> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }
}

/// A socket that patches an armed connection's placeholder status line as it is written.
pub(crate) struct StatusPatchIo<T> {
    inner: T,
    pending: Arc<PendingStatus>,
    /// Bytes of the status line already written, when a write stopped inside it.
    written_of_line: usize,
}

impl<T> StatusPatchIo<T> {
    pub(crate) fn new(inner: T, pending: Arc<PendingStatus>) -> Self {
        Self {
            inner,
            pending,
            written_of_line: 0,
        }
    }
}

/// Where the placeholder status line starts in `buf`, if it does.
fn find_placeholder(buf: &[u8]) -> Option<usize> {
    const LINES: [&[u8]; 2] = [b"HTTP/1.1 999 ", b"HTTP/1.0 999 "];
    (0..buf.len()).find(|&i| LINES.iter().any(|line| buf[i..].starts_with(line)))
}

impl<T: AsyncWrite + Unpin> StatusPatchIo<T> {
    fn poll_patched(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        code: u16,
    ) -> Poll<io::Result<usize>> {
        let digits = code.to_string();
        let digits = digits.as_bytes();
        if self.written_of_line == 0 {
            match find_placeholder(buf) {
                // Write what comes before the status line on its own first.
                Some(0) => {}
                Some(start) => return Pin::new(&mut self.inner).poll_write(cx, &buf[..start]),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        let mut patched = buf[..buf.len().min(64)].to_vec();
        for (i, digit) in digits.iter().enumerate() {
            let at = DIGITS_AT + i;
            if at >= self.written_of_line && at - self.written_of_line < patched.len() {
                patched[at - self.written_of_line] = *digit;
            }
        }
        let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &patched))?;
        self.written_of_line += written;
        if self.written_of_line >= DIGITS_AT + 3 {
            self.written_of_line = 0;
            self.pending.0.store(0, Ordering::Release);
        }
        Poll::Ready(Ok(written))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StatusPatchIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StatusPatchIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.pending.armed() {
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
            Some(code) => self.poll_patched(cx, buf, code),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.pending.armed() {
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Some(code) => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                self.poll_patched(cx, first, code)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Writes `chunks` through an armed patcher, `max` bytes per write at most.
    async fn written(code: u16, chunks: &[&[u8]], max: usize) -> Vec<u8> {
        struct Limited {
            out: Vec<u8>,
            max: usize,
        }
        impl AsyncWrite for Limited {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let n = buf.len().min(self.max);
                self.out.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let pending = Arc::new(PendingStatus::default());
        pending.0.store(code, Ordering::Release);
        let mut io = StatusPatchIo::new(
            Limited {
                out: Vec::new(),
                max,
            },
            pending.clone(),
        );
        for chunk in chunks {
            io.write_all(chunk).await.expect("write");
        }
        assert_eq!(pending.armed(), None, "disarmed after the status line");
        io.inner.out
    }

    #[tokio::test]
    async fn the_placeholder_becomes_the_real_code() {
        let out = written(
            123,
            &[b"HTTP/1.1 999 Informational\r\ncontent-length: 2\r\n\r\nhi"],
            1000,
        )
        .await;
        assert_eq!(
            out,
            b"HTTP/1.1 123 Informational\r\ncontent-length: 2\r\n\r\nhi"
        );
    }

    #[tokio::test]
    async fn writes_that_split_the_status_line_are_patched() {
        for max in 1..14 {
            let out = written(103, &[b"HTTP/1.1 999 Early Hints\r\n\r\n"], max).await;
            assert_eq!(
                out, b"HTTP/1.1 103 Early Hints\r\n\r\n",
                "writes of {max} bytes"
            );
        }
    }

    #[tokio::test]
    async fn earlier_bytes_pass_untouched() {
        let out = written(
            123,
            &[b"999 bytes of an earlier body", b"HTTP/1.1 999 X\r\n\r\n"],
            1000,
        )
        .await;
        assert_eq!(out, b"999 bytes of an earlier bodyHTTP/1.1 123 X\r\n\r\n");
    }

    #[test]
    fn final_statuses_are_not_touched() {
        let pending = PendingStatus::default();
        let r = pending.prepare(
            http::Response::builder()
                .status(204)
                .body(())
                .expect("response"),
        );
        assert_eq!(r.status(), 204);
        assert_eq!(pending.armed(), None);
        let r = pending.prepare(
            http::Response::builder()
                .status(123)
                .body(())
                .expect("response"),
        );
        assert_eq!(r.status().as_u16(), PLACEHOLDER);
        assert_eq!(r.headers()[CONNECTION], "close");
        assert_eq!(pending.armed(), Some(123));
    }
}
