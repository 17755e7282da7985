//! The multiplexed connection to one worker: a writer task fed by a channel, and the requests waiting for their replies by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, oneshot};

use super::frame::{Frame, encode};
use crate::error::BackendError;

/// The connection to one worker: a writer task fed by a channel, and the requests waiting
/// for their replies.
pub(super) struct Link {
    pub(super) writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Frame, String>>>>,
    next_id: AtomicU64,
    /// Why the worker is gone, once it is.
    pub(super) dead: OnceLock<String>,
    /// Told when the replica is dropped: the reader stops the worker.
    pub(super) stop: Notify,
    /// Set once the worker process is gone, and told to whoever waits for it.
    exited: AtomicBool,
    exit: Notify,
}

impl Link {
    /// A link whose frames go to `writer`.
    pub(super) fn new(writer: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        Self {
            writer,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: OnceLock::new(),
            stop: Notify::new(),
            exited: AtomicBool::new(false),
            exit: Notify::new(),
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Frame, String>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a request frame and returns where its reply will arrive.
    /// The worker process is gone: wakes whoever waits in [`Link::wait_exited`].
    pub(super) fn exited(&self) {
        self.exited.store(true, Ordering::Release);
        self.exit.notify_waiters();
    }

    /// Waits until the worker process is gone.
    pub(super) async fn wait_exited(&self) {
        let notified = self.exit.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.exited.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    pub(super) fn send(
        &self,
        kind: u8,
        meta: &[u8],
        body: &[u8],
    ) -> Result<oneshot::Receiver<Result<Frame, String>>, BackendError> {
        if let Some(reason) = self.dead.get() {
            return Err(BackendError::replica_died(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id, kind, meta, body)?;
        let (reply, receiver) = oneshot::channel();
        self.pending().insert(id, reply);
        // The worker may have died between the check and the insert; `die` drains what it
        // sees, so look again.
        if let Some(reason) = self.dead.get() {
            self.pending().remove(&id);
            return Err(BackendError::replica_died(reason));
        }
        if self.writer.send(frame).is_err() {
            self.pending().remove(&id);
            return Err(BackendError::replica_died(
                "the connection to the worker is closed",
            ));
        }
        Ok(receiver)
    }

    /// Sends a request and waits for its reply frame.
    pub(super) async fn request(
        &self,
        kind: u8,
        meta: &[u8],
        body: &[u8],
    ) -> Result<Frame, BackendError> {
        let receiver = self.send(kind, meta, body)?;
        match receiver.await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(reason)) => Err(BackendError::replica_died(reason)),
            Err(_) => Err(BackendError::replica_died("the worker dropped the request")),
        }
    }

    pub(super) fn reply(&self, frame: Frame) {
        if let Some(waiting) = self.pending().remove(&frame.id) {
            let _ = waiting.send(Ok(frame));
        }
    }

    /// Fails every waiting request at once with `reason`.
    pub(super) fn die(&self, reason: String) {
        let _ = self.dead.set(reason.clone());
        let waiting: Vec<_> = self.pending().drain().collect();
        for (_, sender) in waiting {
            let _ = sender.send(Err(reason.clone()));
        }
    }
}

pub(super) async fn write_frames(
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    write: OwnedWriteHalf,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        // Everything queued meanwhile goes out in the same write.
        while let Ok(frame) = frames.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}
