//! The multiplexed connection to one worker: a writer task fed by a channel, and the requests waiting for their replies by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, oneshot};

use super::frame::{Frame, encode, kind};
use super::stream::{HandleCredit, STREAM_WINDOW, StreamFrames};
use crate::backend::Slots;
use crate::error::BackendError;

/// The worker's reply to a request: a frame, and for the head of a stream
/// (`STREAM_START`) the channel its chunks come on.
pub(super) struct Reply {
    pub(super) frame: Frame,
    pub(super) chunks: Option<mpsc::Receiver<StreamFrames>>,
}

/// Where a reply goes.
type ReplyTo = oneshot::Sender<Result<Reply, String>>;

/// A request waiting for the worker's reply.
enum Waiting {
    /// Its caller waits for the reply.
    Caller(ReplyTo),
    /// Its answer streams: chunks, then its end (or an error), go down this channel, which
    /// has room for the worker's whole window and the end.
    Streaming(mpsc::Sender<StreamFrames>),
    /// Its caller left; the worker was told to cancel it. It holds a replica slot until
    /// the worker answers or dies.
    Abandoned,
}

/// The connection to one worker: a writer task fed by a channel, and the requests waiting
/// for their replies.
pub(super) struct Link {
    pub(super) writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, Waiting>>,
    /// The credit of each streamed answer to a handle call the worker made, by its id.
    handle_streams: Mutex<HashMap<u64, Arc<HandleCredit>>>,
    /// The replica's count of running calls: abandoned calls stay in it.
    slots: Arc<Slots>,
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
    pub(super) fn new(writer: mpsc::UnboundedSender<Vec<u8>>, slots: Arc<Slots>) -> Self {
        Self {
            writer,
            pending: Mutex::new(HashMap::new()),
            handle_streams: Mutex::new(HashMap::new()),
            slots,
            next_id: AtomicU64::new(1),
            dead: OnceLock::new(),
            stop: Notify::new(),
            exited: AtomicBool::new(false),
            exit: Notify::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handle_streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<HandleCredit>>> {
        self.handle_streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the credit of a streamed answer to handle call `id` (cancelled at once if the
    /// worker is gone).
    pub(super) fn open_handle_stream(&self, id: u64) -> Arc<HandleCredit> {
        let credit = Arc::new(HandleCredit::default());
        self.handle_streams().insert(id, credit.clone());
        if self.dead.get().is_some() {
            credit.cancel();
        }
        credit
    }

    /// The streamed answer to handle call `id` is over.
    pub(super) fn close_handle_stream(&self, id: u64) {
        self.handle_streams().remove(&id);
    }

    /// The worker read `count` more chunks of handle call `id`'s answer, or (`None`)
    /// dropped it.
    pub(super) fn handle_stream_read(&self, id: u64, count: Option<usize>) {
        let credit = self.handle_streams().get(&id).cloned();
        if let Some(credit) = credit {
            match count {
                Some(count) => credit.acked(count),
                None => credit.cancel(),
            }
        }
    }

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

    /// Sends a request frame; its id, and where its reply will arrive.
    pub(super) fn send(
        &self,
        kind: u8,
        meta: &[u8],
        body: &[u8],
    ) -> Result<(u64, oneshot::Receiver<Result<Reply, String>>), BackendError> {
        if let Some(reason) = self.dead.get() {
            return Err(BackendError::replica_died(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id, kind, meta, body)?;
        let (reply, receiver) = oneshot::channel();
        self.pending().insert(id, Waiting::Caller(reply));
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
        Ok((id, receiver))
    }

    /// Tells the worker that `n` more chunks of stream `id` were taken: it may send as many
    /// more.
    pub(super) fn ack(&self, id: u64, n: u32) {
        if let Ok(frame) = encode(id, kind::STREAM_ACK, &[], &n.to_le_bytes()) {
            let _ = self.writer.send(frame);
        }
    }

    /// A guard that, dropped while armed, abandons request `id`.
    pub(super) fn abandon_on_drop(&self, id: u64) -> AbandonOnDrop<'_> {
        AbandonOnDrop {
            link: self,
            id,
            armed: true,
        }
    }

    /// The caller of request `id` left (or its stream was dropped before its end): unless
    /// it is answered already, the worker is told to cancel it, and it keeps a replica slot
    /// until the worker answers.
    pub(super) fn abandon(&self, id: u64) {
        let mut pending = self.pending();
        let Some(waiting) = pending.get_mut(&id) else {
            return;
        };
        if let Waiting::Abandoned = waiting {
            return;
        }
        *waiting = Waiting::Abandoned;
        self.slots.take();
        drop(pending);
        if let Ok(frame) = encode(id, kind::CANCEL, &[], &[]) {
            let _ = self.writer.send(frame);
        }
    }

    /// Sends a request and waits for its reply frame.
    pub(super) async fn request(
        &self,
        kind: u8,
        meta: &[u8],
        body: &[u8],
    ) -> Result<Frame, BackendError> {
        let (_, receiver) = self.send(kind, meta, body)?;
        match receiver.await {
            Ok(Ok(reply)) => Ok(reply.frame),
            Ok(Err(reason)) => Err(BackendError::replica_died(reason)),
            Err(_) => Err(BackendError::replica_died("the worker dropped the request")),
        }
    }

    /// The worker answered a request: to its caller, or, for an abandoned one, by freeing
    /// the slot it held. The head of a stream opens the channel its chunks come on; a
    /// chunk goes down it; its end (or an error) closes it.
    pub(super) fn reply(&self, frame: Frame) {
        let mut pending = self.pending();
        match frame.kind {
            kind::STREAM_START => {
                let Some(waiting) = pending.get_mut(&frame.id) else {
                    return;
                };
                if let Waiting::Caller(_) = waiting {
                    let (chunks, receiver) = mpsc::channel(STREAM_WINDOW + 1);
                    if let Waiting::Caller(reply) =
                        std::mem::replace(waiting, Waiting::Streaming(chunks))
                    {
                        drop(pending);
                        let chunks = Some(receiver);
                        let _ = reply.send(Ok(Reply { frame, chunks }));
                    }
                }
            }
            kind::STREAM_CHUNK => {
                let id = frame.id;
                let Some(Waiting::Streaming(chunks)) = pending.get(&id) else {
                    // Abandoned: the worker stops when it reads the cancel.
                    return;
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = chunks.try_send(Ok(frame)) {
                    // More than the window: the stream fails, as if its caller had left.
                    drop(pending);
                    tracing::warn!("a worker sent more stream chunks than its window allows");
                    self.abandon(id);
                }
            }
            _ => match pending.remove(&frame.id) {
                Some(Waiting::Caller(reply)) => {
                    drop(pending);
                    let _ = reply.send(Ok(Reply {
                        frame,
                        chunks: None,
                    }));
                }
                // Its end: the channel keeps room for it.
                Some(Waiting::Streaming(chunks)) => {
                    let _ = chunks.try_send(Ok(frame));
                }
                Some(Waiting::Abandoned) => self.slots.give_back(),
                None => {}
            },
        }
    }

    /// Fails every waiting request at once with `reason`.
    pub(super) fn die(&self, reason: String) {
        let _ = self.dead.set(reason.clone());
        self.slots.mark_dead();
        let waiting: Vec<_> = self.pending().drain().collect();
        for (_, waiting) in waiting {
            match waiting {
                Waiting::Caller(reply) => {
                    let _ = reply.send(Err(reason.clone()));
                }
                Waiting::Streaming(chunks) => {
                    let _ = chunks.try_send(Err(reason.clone()));
                }
                Waiting::Abandoned => self.slots.give_back(),
            }
        }
        let streams: Vec<_> = self.handle_streams().drain().collect();
        for (_, credit) in streams {
            credit.cancel();
        }
    }
}

/// Abandons its request when dropped, unless disarmed: how a call whose future is dropped
/// (its caller left) tells the worker.
pub(super) struct AbandonOnDrop<'a> {
    link: &'a Link,
    id: u64,
    armed: bool,
}

impl AbandonOnDrop<'_> {
    /// The reply came: nothing to abandon.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.link.abandon(self.id);
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
