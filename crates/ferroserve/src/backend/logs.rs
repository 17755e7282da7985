//! What replicas' workers print: the last lines of each replica in a bounded ring, kept for the dashboard after the replica is gone (a few per backend), and echoed to the server's stderr tagged with the replica's id.
//!
//! Memory is bounded whatever a worker prints: a line is at most [`MAX_LINE`] bytes (the
//! reader cuts it), a ring at most [`RING_LINES`] lines and [`RING_BYTES`] bytes (a full
//! ring drops its oldest line), and the rings of gone replicas at most
//! [`GONE_PER_BACKEND`] per backend and [`GONE_TOTAL`] in all (the oldest go first). The
//! echo never blocks a worker: past [`ECHO_QUEUE`] lines or [`ECHO_BYTES`] bytes waiting
//! for a slow stderr, lines are not echoed (they stay in the ring) and a note says how many.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// The longest line kept, in bytes; the reader cuts longer ones.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// The most lines a replica's ring keeps.
pub(crate) const RING_LINES: usize = 1000;
/// The most bytes of lines a replica's ring keeps.
pub(crate) const RING_BYTES: usize = 256 * 1024;
/// The most rings of gone replicas kept per backend.
pub(crate) const GONE_PER_BACKEND: usize = 4;
/// The most rings of gone replicas kept in all.
pub(crate) const GONE_TOTAL: usize = 32;
/// The most lines waiting to be echoed to the server's stderr.
const ECHO_QUEUE: usize = 4096;
/// The most bytes of lines waiting to be echoed.
const ECHO_BYTES: usize = 1 << 20;
/// How many bytes of lines the echo writes at once.
const ECHO_BATCH: usize = 64 * 1024;

/// Which of a worker's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stream {
    /// Its standard output (`print`).
    Stdout,
    /// Its standard error (warnings, tracebacks, `logging`).
    Stderr,
}

/// One line a worker printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LogLine {
    /// When it was read, in seconds since the Unix epoch.
    pub(crate) at_s: f64,
    /// Where it was printed.
    pub(crate) stream: Stream,
    /// The line, without its line end.
    pub(crate) line: String,
}

/// One replica's last lines.
#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    /// The bytes of the lines kept.
    bytes: usize,
}

impl Ring {
    /// Adds `line`, dropping the oldest lines past the bounds.
    fn push(&mut self, line: LogLine) {
        self.bytes += line.line.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || (self.bytes > RING_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.line.len();
            }
        }
    }

    /// The last `n` lines, oldest first.
    fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// A shared ring: written by a worker's readers, read by the control API.
type SharedRing = Arc<Mutex<Ring>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A ring is whole between any two statements that could panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A replica's entry in the store.
struct Entry {
    backend: Arc<str>,
    ring: SharedRing,
    /// Tells this replica apart from an earlier one of the same id (a backend deleted and
    /// created again numbers its replicas from the start).
    serial: u64,
}

#[derive(Default)]
struct Rings {
    by_replica: HashMap<Arc<str>, Entry>,
    /// Gone replicas, the oldest first.
    gone: VecDeque<Arc<str>>,
    serials: u64,
}

impl Rings {
    fn forget(&mut self, replica: &str) {
        self.by_replica.remove(replica);
        self.gone.retain(|r| &**r != replica);
    }
}

/// What one echoed item is.
enum Echo {
    /// A line, tagged and ended.
    Line(String),
    /// Answered once every line before it is written.
    Flushed(oneshot::Sender<()>),
}

/// The lines of every replica's worker, for one server.
#[derive(Default)]
pub(crate) struct WorkerLogs {
    rings: Mutex<Rings>,
    /// Lines on their way to the server's stderr; the writer starts with the first line.
    echo: OnceLock<Option<mpsc::Sender<Echo>>>,
    /// What the echo has to do: bytes queued, and lines dropped since its last note.
    backlog: Arc<Backlog>,
}

/// The echo's backlog.
#[derive(Debug, Default)]
struct Backlog {
    /// Bytes of lines queued.
    bytes: AtomicUsize,
    /// Lines not echoed since the last note (stderr was too slow).
    dropped: AtomicU64,
}

impl Backlog {
    /// Queues `line` on `echo` if there is room; counts it dropped otherwise.
    fn offer(&self, echo: &mpsc::Sender<Echo>, line: String) {
        let len = line.len();
        let queued = self.bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > ECHO_BYTES || echo.try_send(Echo::Line(line)).is_err() {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WorkerLogs {
    /// Logs that keep lines but echo none (for tests that print floods).
    #[cfg(test)]
    pub(crate) fn without_echo() -> Self {
        let logs = Self::default();
        let _ = logs.echo.set(None);
        logs
    }

    /// Starts the ring of the replica `replica` of `backend` (replacing a gone one of the
    /// same id); the ring is kept until some time after the returned log is dropped.
    pub(crate) fn open(self: &Arc<Self>, backend: &str, replica: &str) -> ReplicaLog {
        let replica: Arc<str> = replica.into();
        let ring = SharedRing::default();
        let mut rings = lock(&self.rings);
        rings.forget(&replica);
        rings.serials += 1;
        let serial = rings.serials;
        rings.by_replica.insert(
            replica.clone(),
            Entry {
                backend: backend.into(),
                ring: ring.clone(),
                serial,
            },
        );
        drop(rings);
        ReplicaLog {
            writer: LogWriter {
                logs: self.clone(),
                tag: format!("[{replica}] "),
                ring,
            },
            replica,
            serial,
        }
    }

    /// The last `n` lines of `replica`, oldest first; `None` when it has no ring (it never
    /// captured output, or it is long gone).
    pub(crate) fn tail(&self, replica: &str, n: usize) -> Option<Vec<LogLine>> {
        let ring = lock(&self.rings).by_replica.get(replica)?.ring.clone();
        let lines = lock(&ring).tail(n);
        Some(lines)
    }

    /// The replica's worker is gone: its ring joins the gone ones, and the oldest gone of
    /// its backend, and of all, are dropped past the bounds.
    fn gone(&self, replica: &Arc<str>, serial: u64) {
        let mut rings = lock(&self.rings);
        let Some(backend) = rings
            .by_replica
            .get(replica)
            .filter(|e| e.serial == serial)
            .map(|e| e.backend.clone())
        else {
            return;
        };
        rings.gone.push_back(replica.clone());
        let of_backend: Vec<Arc<str>> = rings
            .gone
            .iter()
            .filter(|r| {
                rings
                    .by_replica
                    .get(*r)
                    .is_some_and(|e| e.backend == backend)
            })
            .cloned()
            .collect();
        for old in of_backend
            .iter()
            .take(of_backend.len().saturating_sub(GONE_PER_BACKEND))
        {
            rings.forget(old);
        }
        while rings.gone.len() > GONE_TOTAL {
            if let Some(old) = rings.gone.pop_front() {
                rings.by_replica.remove(&old);
            }
        }
    }

    /// The sender of the echo, its writer started on first use (on the runtime of the
    /// worker's reader); `None` outside a runtime.
    fn echo(&self) -> Option<&mpsc::Sender<Echo>> {
        self.echo
            .get_or_init(|| {
                let runtime = tokio::runtime::Handle::try_current().ok()?;
                let (sender, lines) = mpsc::channel(ECHO_QUEUE);
                runtime.spawn(write_echo(lines, self.backlog.clone()));
                Some(sender)
            })
            .as_ref()
    }

    /// Waits (a second at most) until the lines echoed so far are written to stderr: so
    /// that a worker's last words come before the error that names it.
    pub(crate) async fn flush_echo(&self) {
        let Some(Some(echo)) = self.echo.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if echo.send(Echo::Flushed(done)).await.is_ok() {
                let _ = written.await;
            }
        })
        .await;
    }
}

/// Writes echoed lines to stderr, a batch at a time (on a blocking thread: a slow stderr
/// holds up this writer, never a worker), with a note when some were dropped.
async fn write_echo(mut lines: mpsc::Receiver<Echo>, backlog: Arc<Backlog>) {
    let mut batch = String::new();
    let mut flushed = Vec::new();
    while let Some(first) = lines.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Echo::Line(line) => {
                    backlog.bytes.fetch_sub(line.len(), Ordering::Relaxed);
                    batch.push_str(&line);
                }
                Echo::Flushed(done) => flushed.push(done),
            }
            if batch.len() < ECHO_BATCH {
                next = lines.try_recv().ok();
            }
        }
        let dropped = backlog.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.push_str(&format!(
                "[ferroserve] {dropped} lines of worker output were not echoed here (stderr was too slow); each replica's last lines: GET /api/replicas/ID/logs\n"
            ));
        }
        let written = std::mem::take(&mut batch);
        let _ = tokio::task::spawn_blocking(move || write_stderr(&written)).await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes `text` to stderr with `eprint!`, which a test harness captures (`cargo test` shows
/// a worker's lines only for a test that fails), unlike a write to the handle. `eprint!`
/// panics when stderr fails (a pipe whose reader left); that is caught here: the lines stay
/// in their rings.
#[allow(clippy::print_stderr)] // the point: the one print that tests capture
fn write_stderr(text: &str) {
    let _ = std::panic::catch_unwind(|| eprint!("{text}"));
}

/// One replica's ring while its worker lives; when dropped (the worker is gone), the ring
/// is kept among the gone ones.
pub(crate) struct ReplicaLog {
    writer: LogWriter,
    replica: Arc<str>,
    serial: u64,
}

impl ReplicaLog {
    /// Where the worker's readers write its lines.
    pub(crate) fn writer(&self) -> LogWriter {
        self.writer.clone()
    }
}

impl Drop for ReplicaLog {
    fn drop(&mut self) {
        self.writer.logs.gone(&self.replica, self.serial);
    }
}

/// Writes a worker's lines to its replica's ring and echoes them.
#[derive(Clone)]
pub(crate) struct LogWriter {
    logs: Arc<WorkerLogs>,
    /// `[echo#0] `.
    tag: String,
    ring: SharedRing,
}

impl LogWriter {
    /// Keeps `line` (at most [`MAX_LINE`] bytes; the reader cuts it) and echoes it tagged.
    pub(crate) fn push(&self, stream: Stream, line: String) {
        if let Some(echo) = self.logs.echo() {
            self.logs
                .backlog
                .offer(echo, format!("{}{line}\n", self.tag));
        }
        let at_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        lock(&self.ring).push(LogLine { at_s, stream, line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            at_s: 0.0,
            stream: Stream::Stdout,
            line: text.to_owned(),
        }
    }

    #[test]
    fn a_ring_keeps_the_last_lines_within_its_count_and_bytes() {
        let mut ring = Ring::default();
        for i in 0..RING_LINES + 10 {
            ring.push(line(&i.to_string()));
        }
        assert_eq!(ring.lines.len(), RING_LINES);
        let tail = ring.tail(3);
        let last: Vec<&str> = tail.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(last, ["1007", "1008", "1009"], "oldest first");
        assert_eq!(ring.tail(5000).len(), RING_LINES);
        assert_eq!(ring.tail(0), Vec::new());

        let big = "x".repeat(MAX_LINE);
        for _ in 0..100 {
            ring.push(line(&big));
        }
        assert!(ring.bytes <= RING_BYTES, "{}", ring.bytes);
        assert_eq!(ring.lines.len(), RING_BYTES / MAX_LINE);
        assert_eq!(
            ring.bytes,
            ring.lines.iter().map(|l| l.line.len()).sum::<usize>()
        );
    }

    #[test]
    fn gone_replicas_are_kept_a_few_per_backend_and_in_all() {
        let logs = Arc::new(WorkerLogs::default());
        let live = logs.open("a", "a#live");
        live.writer().ring.lock().expect("lock").push(line("alive"));
        for i in 0..10 {
            let log = logs.open("a", &format!("a#{i}"));
            log.writer().ring.lock().expect("lock").push(line("bye"));
        }
        for i in 0..10 {
            assert_eq!(
                logs.tail(&format!("a#{i}"), 5).is_some(),
                i >= 10 - GONE_PER_BACKEND
            );
        }
        assert_eq!(logs.tail("a#9", 5).expect("kept")[0].line, "bye");
        for b in 0..GONE_TOTAL * 2 {
            drop(logs.open(&format!("b{b}"), &format!("b{b}#0")));
        }
        let rings = logs.rings.lock().expect("lock");
        assert_eq!(rings.gone.len(), GONE_TOTAL);
        assert_eq!(rings.by_replica.len(), GONE_TOTAL + 1, "the live one stays");
        drop(rings);
        assert_eq!(logs.tail("a#live", 5).expect("live")[0].line, "alive");
        assert!(logs.tail("a#9", 5).is_none(), "the oldest went first");
    }

    #[test]
    fn a_replica_id_used_again_gets_a_new_ring() {
        let logs = Arc::new(WorkerLogs::default());
        let first = logs.open("a", "a#0");
        first.writer().ring.lock().expect("lock").push(line("old"));
        drop(first);
        let again = logs.open("a", "a#0");
        assert_eq!(logs.tail("a#0", 5), Some(Vec::new()));
        drop(again);
        assert_eq!(logs.rings.lock().expect("lock").gone.len(), 1);
    }

    #[test]
    fn the_echo_backlog_is_bounded_in_lines_and_bytes() {
        let backlog = Backlog::default();
        let (echo, mut queued) = mpsc::channel(ECHO_QUEUE);
        let long = "x".repeat(MAX_LINE);
        for _ in 0..ECHO_QUEUE {
            backlog.offer(&echo, long.clone());
        }
        let kept = ECHO_BYTES / MAX_LINE;
        assert_eq!(backlog.bytes.load(Ordering::Relaxed), kept * MAX_LINE);
        assert_eq!(
            backlog.dropped.load(Ordering::Relaxed),
            (ECHO_QUEUE - kept) as u64
        );
        while queued.try_recv().is_ok() {}
        backlog.bytes.store(0, Ordering::Relaxed);
        for _ in 0..ECHO_QUEUE + 5 {
            backlog.offer(&echo, "short".to_owned());
        }
        assert_eq!(
            backlog.dropped.load(Ordering::Relaxed),
            (ECHO_QUEUE - kept + 5) as u64,
            "past the queue's lines too"
        );
    }

    #[tokio::test]
    async fn pushed_lines_are_kept_and_echoed() {
        let logs = Arc::new(WorkerLogs::default());
        let log = logs.open("echo", "echo#0");
        let writer = log.writer();
        writer.push(Stream::Stdout, "hello".to_owned());
        writer.push(Stream::Stderr, "oops".to_owned());
        logs.flush_echo().await;
        let lines = logs.tail("echo#0", 10).expect("kept");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].stream, lines[0].line.as_str()),
            (Stream::Stdout, "hello")
        );
        assert_eq!(
            (lines[1].stream, lines[1].line.as_str()),
            (Stream::Stderr, "oops")
        );
        assert!(lines[0].at_s > 1e9);
        let json = serde_json::to_value(&lines[1]).expect("serialises");
        assert_eq!(json["stream"], "stderr");
    }
}
