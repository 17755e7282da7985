//! Streaming bodies: the chunks of an answer that starts before it ends, as a backend makes them and as a caller reads them.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;

use crate::error::BackendError;

/// The chunks of a streaming answer, in order; an error ends the stream early.
///
/// A [`Response::stream`](crate::Response::stream) over HTTP goes out chunk by chunk as the
/// chunks are made, read only as fast as the client takes them; through a handle the caller
/// reads them with [`Response::into_chunks`](crate::Response::into_chunks). Dropping it
/// before its end (the client left) drops the stream that makes the chunks, and with it
/// whatever the backend held for it (a Python generator is closed).
pub struct Chunks {
    inner: Inner,
}

enum Inner {
    /// A whole body, given as one chunk (none if empty).
    Whole(Option<Bytes>),
    /// A stream behind a lock it never takes (`get_mut`), which makes `Chunks` `Sync`
    /// for any `Send` stream.
    Stream(Mutex<BoxStream<'static, Result<Bytes, BackendError>>>),
}

impl Chunks {
    /// The chunks of `stream`.
    pub(crate) fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
    {
        Self {
            inner: Inner::Stream(Mutex::new(Box::pin(stream))),
        }
    }

    /// A whole body as a stream of one chunk.
    pub(crate) fn whole(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Whole((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// Reads every chunk into one body, failing once it passes `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BackendError> {
        use futures_util::StreamExt as _;
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            let have = first.as_ref().map_or(joined.len(), Bytes::len);
            if have + chunk.len() > limit {
                return Err(BackendError::msg(format!(
                    "the streamed answer is larger than {limit} bytes"
                )));
            }
            match first.take() {
                None if joined.is_empty() => first = Some(chunk),
                None => joined.extend_from_slice(&chunk),
                Some(earlier) => {
                    joined.extend_from_slice(&earlier);
                    joined.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(joined)))
    }

    /// Wraps the stream so that `guard` lives until the stream ends or is dropped (how a
    /// replica slot stays taken while its answer streams), with `context` before the
    /// message of an error that ends it.
    pub(crate) fn holding<G: Send + 'static>(self, guard: G, context: String) -> Self {
        match self.inner {
            Inner::Whole(_) => self,
            Inner::Stream(stream) => {
                let mut stream = into_inner(stream);
                let mut guard = Some(guard);
                Self::new(futures_util::stream::poll_fn(move |cx| {
                    match stream.as_mut().poll_next(cx) {
                        Poll::Ready(Some(Err(e))) => {
                            drop(guard.take());
                            Poll::Ready(Some(Err(e.prefixed(&context))))
                        }
                        Poll::Ready(None) => {
                            drop(guard.take());
                            Poll::Ready(None)
                        }
                        next => next,
                    }
                }))
            }
        }
    }
}

fn into_inner<T>(lock: Mutex<T>) -> T {
    lock.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stream for Chunks {
    type Item = Result<Bytes, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().inner {
            Inner::Whole(bytes) => Poll::Ready(bytes.take().map(Ok)),
            Inner::Stream(stream) => stream
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
                .poll_next(cx),
        }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chunks")
    }
}

/// One server-sent event as it goes on the wire: an optional `event:` name, then each line
/// of `data` as a `data:` line, then a blank line.
///
/// ```
/// let event = ferroserve::response::sse_event(Some("token"), "Hello\nworld");
/// assert_eq!(&event[..], b"event: token\ndata: Hello\ndata: world\n\n");
/// ```
pub fn sse_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(name) = event {
        // A name is one line.
        out.push_str("event: ");
        out.push_str(name.lines().next().unwrap_or_default());
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn chunks(parts: &[&'static str]) -> Chunks {
        let parts: Vec<Result<Bytes, BackendError>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Chunks::new(futures_util::stream::iter(parts))
    }

    #[tokio::test]
    async fn collect_joins_and_bounds() {
        assert_eq!(
            &chunks(&["a", "bc", "d"])
                .collect(10)
                .await
                .expect("within the limit")[..],
            b"abcd"
        );
        assert_eq!(
            &chunks(&["abc"]).collect(3).await.expect("within the limit")[..],
            b"abc"
        );
        assert!(chunks(&["ab", "cd"]).collect(3).await.is_err());
        assert!(Chunks::whole(Bytes::new()).next().await.is_none());
    }

    #[tokio::test]
    async fn the_guard_lives_until_the_end() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let mut held = chunks(&["a", "b"]).holding(Flag(dropped.clone()), String::new());
        assert!(held.next().await.is_some());
        assert!(!dropped.load(Ordering::SeqCst));
        assert!(held.next().await.is_some());
        assert!(held.next().await.is_none());
        assert!(dropped.load(Ordering::SeqCst), "freed at the end");
        let dropped = Arc::new(AtomicBool::new(false));
        let held = chunks(&["a"]).holding(Flag(dropped.clone()), String::new());
        drop(held);
        assert!(dropped.load(Ordering::SeqCst), "freed when dropped");
    }

    #[test]
    fn events_are_framed() {
        assert_eq!(&sse_event(None, "x")[..], b"data: x\n\n");
        assert_eq!(
            &sse_event(Some("a\nb"), "1\r\n2")[..],
            b"event: a\ndata: 1\ndata: 2\n\n"
        );
    }
}
