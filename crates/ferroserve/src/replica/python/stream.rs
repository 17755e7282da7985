//! Streamed answers from a worker: its chunks as a stream the proxy or a handle reads, with the credit that bounds what a worker sends ahead.
//!
//! The worker may have at most [`STREAM_WINDOW`] chunks (and [`STREAM_WINDOW_BYTES`]
//! bytes, though always one chunk) sent and not yet acknowledged; the server acknowledges
//! chunks as its reader takes them, half a window at a time. A slow client therefore slows
//! the generator, and a stream holds at most a window in memory here.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::frame::{Frame, kind};
use super::link::Link;
use super::wire::error_of;
use crate::error::BackendError;

/// The most chunks a worker sends ahead of what was taken; the same number as
/// `python/ferroserve/_protocol.py`.
pub(super) const STREAM_WINDOW: usize = 16;
/// The most bytes a worker sends ahead of what was taken (it always may send one chunk).
pub(super) const STREAM_WINDOW_BYTES: usize = 256 * 1024;

/// What comes down a stream's channel: its frames, or why the worker is gone.
pub(super) type StreamFrames = Result<Frame, String>;

/// The chunks of one streamed answer, as the worker sends them.
pub(super) struct WorkerStream {
    link: Arc<Link>,
    id: u64,
    frames: mpsc::Receiver<StreamFrames>,
    /// Chunks and bytes taken since the last acknowledgement.
    taken: (u32, usize),
    done: bool,
}

impl WorkerStream {
    pub(super) fn new(link: Arc<Link>, id: u64, frames: mpsc::Receiver<StreamFrames>) -> Self {
        Self {
            link,
            id,
            frames,
            taken: (0, 0),
            done: false,
        }
    }

    fn end(
        &mut self,
        item: Option<Result<Bytes, BackendError>>,
    ) -> Poll<Option<Result<Bytes, BackendError>>> {
        self.done = true;
        Poll::Ready(item)
    }
}

impl Stream for WorkerStream {
    type Item = Result<Bytes, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match this.frames.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(reason))) => {
                return this.end(Some(Err(BackendError::replica_died(reason))));
            }
            Poll::Ready(None) => {
                return this.end(Some(Err(BackendError::msg(
                    "the worker's stream broke off (it sent more than its window)",
                ))));
            }
        };
        match frame.kind {
            kind::STREAM_CHUNK => {
                this.taken.0 += 1;
                this.taken.1 += frame.body.len();
                if this.taken.0 as usize >= STREAM_WINDOW / 2
                    || this.taken.1 >= STREAM_WINDOW_BYTES / 2
                {
                    this.link.ack(this.id, this.taken.0);
                    this.taken = (0, 0);
                }
                Poll::Ready(Some(Ok(frame.body)))
            }
            kind::STREAM_END => this.end(None),
            _ => this.end(Some(Err(error_of(&frame)))),
        }
    }
}

impl Drop for WorkerStream {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before its end (the client left): the worker closes the generator,
            // and the call keeps its replica slot until it has.
            self.link.abandon(self.id);
        }
    }
}

/// The credit of one streamed answer to a handle call from Python code: the server sends a
/// chunk only while the worker has fewer than a window of them unread, and stops when the
/// worker cancels the stream (or dies).
#[derive(Default)]
pub(super) struct HandleCredit {
    state: std::sync::Mutex<CreditState>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct CreditState {
    /// The sizes of the chunks sent and not yet acknowledged.
    sizes: std::collections::VecDeque<usize>,
    bytes: usize,
    cancelled: bool,
}

impl CreditState {
    fn blocked(&self) -> bool {
        !self.sizes.is_empty()
            && (self.sizes.len() >= STREAM_WINDOW || self.bytes >= STREAM_WINDOW_BYTES)
    }
}

impl HandleCredit {
    fn state(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until another chunk may be sent: `false` once the stream is cancelled.
    pub(super) async fn room(&self) -> bool {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.state();
                if state.cancelled {
                    return false;
                }
                if !state.blocked() {
                    return true;
                }
            }
            changed.await;
        }
    }

    /// Waits until the stream is cancelled.
    pub(super) async fn cancelled(&self) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.state().cancelled {
                return;
            }
            changed.await;
        }
    }

    /// A chunk of `size` bytes went out.
    pub(super) fn sent(&self, size: usize) {
        let mut state = self.state();
        state.sizes.push_back(size);
        state.bytes += size;
    }

    /// The worker read `count` more chunks.
    pub(super) fn acked(&self, count: usize) {
        {
            let mut state = self.state();
            for _ in 0..count {
                let Some(size) = state.sizes.pop_front() else {
                    break;
                };
                state.bytes -= size;
            }
        }
        self.changed.notify_waiters();
    }

    /// The worker dropped the stream, or is gone.
    pub(super) fn cancel(&self) {
        self.state().cancelled = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_blocks_at_the_window_and_opens_on_acks() {
        let credit = Arc::new(HandleCredit::default());
        for _ in 0..STREAM_WINDOW {
            assert!(credit.room().await);
            credit.sent(10);
        }
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full window waits");
        credit.acked(STREAM_WINDOW / 2);
        assert!(waiting.await.expect("joins"));
        // A chunk larger than the byte window goes alone.
        let big = HandleCredit::default();
        big.sent(STREAM_WINDOW_BYTES + 1);
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(20), big.room()).await;
        assert!(blocked.is_err());
        big.cancel();
        assert!(!big.room().await, "cancelled");
    }
}
