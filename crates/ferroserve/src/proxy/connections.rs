//! Connections: the cap on open connections, shedding idle ones at it, the header timeout, accepting with back-off, the file-descriptor limit, and ending every connection at shutdown.
//!
//! Each connection's task waits on its connection and on one `Notify`; everything that
//! may end a connection (a stop, a request to make room, a timeout found by the sweeper)
//! sets a flag and notifies it. No timer or lock is touched per request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// File descriptors kept back from the connection cap for listeners, worker sockets, pipes
/// and files.
const RESERVED_FDS: u64 = 128;
/// The cap when the file-descriptor limit is unknown or unlimited.
const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
/// How long a connection asked to make room may take to close before it is dropped.
const SHED_GRACE: Duration = Duration::from_secs(1);

/// Raises the soft file-descriptor limit to the hard one, once per process; the soft limit
/// in force (`None` when it cannot be read).
pub(crate) fn raise_fd_limit() -> Option<u64> {
    static RAISED: OnceLock<Option<u64>> = OnceLock::new();
    *RAISED.get_or_init(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            tracing::debug!(soft, "file-descriptor limit");
            Some(soft)
        }
        Err(e) => {
            tracing::warn!("cannot raise the file-descriptor limit: {e}");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    })
}

/// The connection cap when none is configured: what the file-descriptor limit leaves after
/// [`RESERVED_FDS`].
pub(crate) fn default_max_connections() -> usize {
    raise_fd_limit()
        .and_then(|soft| usize::try_from(soft.saturating_sub(RESERVED_FDS)).ok())
        .map_or(DEFAULT_MAX_CONNECTIONS, |n| {
            n.clamp(16, DEFAULT_MAX_CONNECTIONS)
        })
}

/// What a connection's task is told to do (bits of [`Activity::signal`]).
mod signal {
    /// The server stops: close after the running request.
    pub(super) const STOP: u8 = 1;
    /// Make room: close if idle.
    pub(super) const SHED: u8 = 2;
    /// Drop it now: it timed out, or did not close in time.
    pub(super) const DROP: u8 = 4;
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One open connection, as the requests on it, its task and the registry see it.
pub(crate) struct Activity {
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// When its last request ended (or it opened), in ms since `epoch`.
    idle_since_ms: AtomicU64,
    /// The registry's start.
    epoch: Instant,
    /// Set by its first request. One that never had a request (a slow or silent client)
    /// has no answer to finish, and is dropped at once when asked to make room.
    served: AtomicBool,
    /// When it was asked to close to make room, in ms since `epoch` (0: not asked).
    shed_at_ms: AtomicU64,
    /// [`signal`] bits for its task.
    signal: AtomicU8,
    /// Set when the server stops: each answer from then on says `Connection: close`.
    stopping: AtomicBool,
    /// Set when the shutdown grace ran out: its running request is answered 503.
    abandoned: AtomicBool,
    /// Wakes the request that runs when `abandoned` is set.
    abandon: Notify,
    /// Wakes its task.
    control: Notify,
}

/// A request on a connection: the connection is busy until it drops.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(ms_since(self.0.epoch), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Marks a request as running until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
        Busy(self.clone())
    }

    /// Adds `Connection: close` to an answer once the server stops, so that the client
    /// learns from the answer itself that the connection ends, and sends its next request
    /// on a new one rather than on one that closes under it.
    pub(crate) fn mark_closing<B>(&self, response: &mut http::Response<B>) {
        if self.stopping.load(Ordering::Relaxed) {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// How long since its last request ended (or it opened).
    fn idle_for(&self) -> Duration {
        let since = self.idle_since_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms_since(self.epoch).saturating_sub(since))
    }

    /// Ends when the shutdown grace runs out with a request still running here. A request
    /// that answers at once never polls it, so it costs nothing then.
    pub(crate) async fn abandoned(&self) {
        let notified = self.abandon.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.abandoned.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn tell(&self, bits: u8) {
        self.signal.fetch_or(bits, Ordering::AcqRel);
        self.control.notify_one();
    }
}

/// The open connections: how many, which are idle, and the cap.
pub(crate) struct Registry {
    started: Instant,
    max: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
    /// Told when a connection closes.
    closed: Notify,
    /// Set by [`Registry::stop_all`]: how long after the stop an idle connection is closed.
    linger_ms: AtomicU64,
}

impl Registry {
    /// A registry admitting at most `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            started: Instant::now(),
            max: max.max(1),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
            closed: Notify::new(),
            linger_ms: AtomicU64::new(0),
        }
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether the cap is reached.
    pub(crate) fn is_full(&self) -> bool {
        self.open() >= self.max
    }

    /// Records a new connection.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(ms_since(self.started)),
            epoch: self.started,
            served: AtomicBool::new(false),
            shed_at_ms: AtomicU64::new(0),
            signal: AtomicU8::new(0),
            stopping: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            abandon: Notify::new(),
            control: Notify::new(),
        });
        self.connections().insert(id, activity.clone());
        self.open.fetch_add(1, Ordering::AcqRel);
        Admitted {
            id,
            activity,
            registry: self.clone(),
        }
    }

    /// Asks idle connections to close, a sixteenth of the cap at a time (at least one):
    /// those that never sent a request first; only when there is none of those (asked
    /// already or not), those idle the longest. What makes room at the cap. How many were
    /// asked.
    pub(crate) fn shed_idle(&self) -> usize {
        let mut silent_closing = false;
        let mut idle: Vec<((bool, u64), Arc<Activity>)> = Vec::new();
        for activity in self.connections().values() {
            let served = activity.served.load(Ordering::Relaxed);
            if activity.shed_at_ms.load(Ordering::Relaxed) > 0 {
                silent_closing |= !served;
            } else if activity.is_idle() {
                let since = activity.idle_since_ms.load(Ordering::Relaxed);
                idle.push(((served, since), activity.clone()));
            }
        }
        idle.sort_unstable_by_key(|(key, _)| *key);
        let silent = idle.iter().take_while(|((served, _), _)| !served).count();
        let candidates = if silent > 0 || silent_closing {
            silent
        } else {
            idle.len()
        };
        let count = (self.max / 16).max(1).min(candidates);
        let now = ms_since(self.started).max(1);
        for (_, activity) in idle.iter().take(count) {
            activity.shed_at_ms.store(now, Ordering::Relaxed);
            activity.tell(signal::SHED);
        }
        count
    }

    /// Drops the connections that sent no complete request head for `header_timeout`
    /// since they opened or their last request ended, and those asked to make room that
    /// did not close within [`SHED_GRACE`]. How many.
    pub(crate) fn sweep(&self, header_timeout: Duration) -> usize {
        let now = ms_since(self.started);
        let mut dropped = 0;
        for activity in self.connections().values() {
            let shed_at = activity.shed_at_ms.load(Ordering::Relaxed);
            let overdue =
                shed_at > 0 && Duration::from_millis(now.saturating_sub(shed_at)) >= SHED_GRACE;
            if overdue || (activity.is_idle() && activity.idle_for() >= header_timeout) {
                activity.tell(signal::DROP);
                dropped += 1;
            }
        }
        dropped
    }

    /// Tells every connection the server stops: every answer from now on says
    /// `Connection: close`, so a busy connection closes after its answer; one still open
    /// and idle `linger` after the stop is closed. A request already on its way when the
    /// server stops is answered, not cut off.
    pub(crate) fn stop_all(&self, linger: Duration) {
        self.linger_ms.store(
            u64::try_from(linger.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        for activity in self.connections().values() {
            activity.stopping.store(true, Ordering::Relaxed);
            activity.tell(signal::STOP);
        }
    }

    /// Answers every request still running with 503: the shutdown grace ran out.
    pub(crate) fn abandon_all(&self) {
        for activity in self.connections().values() {
            activity.abandoned.store(true, Ordering::Release);
            activity.abandon.notify_waiters();
        }
    }

    /// Waits until a connection closes, or `limit` passes.
    pub(crate) async fn wait_for_room(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.closed.notified()).await;
    }

    /// Waits until every connection has closed, or `limit` passes; whether they all did.
    pub(crate) async fn wait_all_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let closed = self.closed.notified();
            let mut closed = std::pin::pin!(closed);
            // Registered before the count is read, so a close in between still wakes us.
            closed.as_mut().enable();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open() == 0;
            }
        }
    }
}

/// How often the sweeper looks for timed-out connections: a quarter of the header timeout,
/// at most a second.
pub(crate) fn sweep_period(header_timeout: Duration) -> Duration {
    (header_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// A connection counted by the registry, until it drops.
pub(crate) struct Admitted {
    id: u64,
    activity: Arc<Activity>,
    registry: Arc<Registry>,
}

impl Admitted {
    /// Its activity, for the requests on it.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.registry.connections().remove(&self.id);
        self.registry.open.fetch_sub(1, Ordering::AcqRel);
        self.registry.closed.notify_waiters();
    }
}

/// Serves one connection until it ends, doing what its [`Activity`] is told: on a stop,
/// close after the running request; asked to make room while idle, drop it at once if it
/// never sent a request, else close it gracefully; told to drop, drop it.
pub(crate) async fn serve<C>(connection: C, admitted: Admitted)
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let activity = admitted.activity().clone();
    let mut closing = false;
    // Set at a stop: when to look again whether the connection has been idle long enough.
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let control = activity.control.notified();
        let recheck = draining.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            // The connection first: a request that has arrived is read (and the connection
            // marked busy) before a request to make room is looked at, so a client whose
            // connection was asked to close before its task first ran is answered, not cut
            // off (seen under a slowloris storm with one server thread).
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection closed: {e}");
                }
                break;
            }
            () = tokio::time::sleep_until(recheck), if draining.is_some() && !closing => {}
            () = control => {
                let told = activity.signal.swap(0, Ordering::AcqRel);
                if told & signal::DROP != 0 {
                    tracing::debug!("dropped a connection that timed out or did not close in time");
                    break;
                }
                if told & signal::SHED != 0 && activity.is_idle() {
                    if !activity.served.load(Ordering::Relaxed) {
                        tracing::debug!("dropped a connection that sent no request, to make room");
                        break;
                    }
                    if !closing {
                        closing = true;
                        connection.as_mut().close();
                    }
                } else if told & signal::SHED != 0 {
                    // Busy after all: asked again later if still needed.
                    activity.shed_at_ms.store(0, Ordering::Relaxed);
                }
                if told & signal::STOP != 0 && draining.is_none() {
                    draining = Some(tokio::time::Instant::now() + linger(&admitted));
                }
            }
        }
        if let Some(at) = draining
            && !closing
            && tokio::time::Instant::now() >= at
        {
            // Past the linger: an idle connection is closed; a busy one ends after its
            // answer, which says `Connection: close` (looked at again a linger later).
            if activity.is_idle() {
                closing = true;
                connection.as_mut().close();
            } else {
                draining = Some(at + linger(&admitted));
            }
        }
    }
    drop(admitted);
}

/// How long after a stop a connection stays open for a request already on its way.
fn linger(admitted: &Admitted) -> Duration {
    Duration::from_millis(admitted.registry.linger_ms.load(Ordering::Relaxed))
}

/// A connection that can be closed gracefully: no new request, the running one finishes.
pub(crate) trait GracefulConnection {
    /// Starts closing.
    fn close(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Accept errors (out of file descriptors, mostly): logged at most once a second, with a
/// back-off that doubles from 10 ms to 1 s and resets on success.
#[derive(Default)]
pub(crate) struct AcceptErrors {
    backoff: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// Notes an error; how long to wait before accepting again.
    pub(crate) fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                more_since_last = self.unlogged,
                "accept failed: {error}; backing off {:?}",
                self.backoff
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.backoff
    }

    /// An accept succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_then_longest_idle_are_shed_first_and_busy_ones_never() {
        let registry = Arc::new(Registry::new(16));
        let told = |a: &Admitted| a.activity().signal.swap(0, Ordering::AcqRel) & signal::SHED != 0;
        let oldest = registry.admit();
        drop(oldest.activity().busy());
        std::thread::sleep(Duration::from_millis(5));
        let busy = registry.admit();
        let _request = busy.activity().busy();
        std::thread::sleep(Duration::from_millis(5));
        let newer = registry.admit();
        drop(newer.activity().busy());
        let silent = registry.admit();
        assert_eq!(registry.open(), 4);
        // One at a time (a sixteenth of 16): the one that never sent a request first...
        assert_eq!(registry.shed_idle(), 1);
        assert!(told(&silent) && !told(&oldest) && !told(&newer) && !told(&busy));
        // While it closes, no keep-alive connection is asked.
        assert_eq!(registry.shed_idle(), 0);
        drop(silent);
        // ...then the one idle the longest; one already asked is not asked again.
        assert_eq!(registry.shed_idle(), 1);
        assert!(told(&oldest) && !told(&newer) && !told(&busy));
        assert_eq!(registry.shed_idle(), 1);
        assert!(told(&newer) && !told(&busy));
        assert_eq!(registry.shed_idle(), 0, "a busy connection is never asked");
        drop(oldest);
        assert_eq!(registry.open(), 2);
    }

    #[test]
    fn the_sweeper_drops_what_timed_out_and_nothing_else() {
        let registry = Arc::new(Registry::new(16));
        let idle = registry.admit();
        let busy = registry.admit();
        let _request = busy.activity().busy();
        assert_eq!(registry.sweep(Duration::from_secs(60)), 0);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            registry.sweep(Duration::from_millis(20)),
            1,
            "only the idle one"
        );
        let dropped =
            |a: &Admitted| a.activity().signal.load(Ordering::Acquire) & signal::DROP != 0;
        assert!(dropped(&idle) && !dropped(&busy));
        registry.stop_all(Duration::from_millis(100));
        assert!(busy.activity().signal.load(Ordering::Acquire) & signal::STOP != 0);
        assert_eq!(
            sweep_period(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn accept_errors_back_off_and_reset() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::other("too many open files");
        assert_eq!(errors.failed(&e), Duration::from_millis(10));
        assert_eq!(errors.failed(&e), Duration::from_millis(20));
        for _ in 0..20 {
            errors.failed(&e);
        }
        assert_eq!(errors.failed(&e), Duration::from_secs(1));
        assert!(errors.unlogged > 0, "logged at most once a second");
        errors.succeeded();
        assert_eq!(errors.failed(&e), Duration::from_millis(10));
    }

    /// A connection asked to make room before its task first ran, with a whole request
    /// waiting on it, answers that request: the connection is read before the request to
    /// close is looked at. (Without that, tokio's random choice between the two dropped
    /// about half of them.)
    #[tokio::test]
    async fn a_request_already_waiting_is_answered_though_the_connection_was_asked_to_go() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        for _ in 0..20 {
            let registry = Arc::new(Registry::new(1));
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .expect("write");
            let admitted = registry.admit();
            assert_eq!(registry.shed_idle(), 1, "a silent idle connection is asked");
            let activity = admitted.activity().clone();
            let service = hyper::service::service_fn(move |_request| {
                let busy = activity.busy();
                async move {
                    drop(busy);
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"));
                    Ok::<_, std::convert::Infallible>(http::Response::new(body))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            tokio::spawn(serve(connection, admitted));
            let mut answer = Vec::new();
            let read = client.read_to_end(&mut answer);
            // The connection closes after the answer (it was asked to make room).
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("closed in time")
                .expect("read");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        }
    }

    #[test]
    fn the_cap_follows_the_fd_limit() {
        let max = default_max_connections();
        assert!((16..=DEFAULT_MAX_CONNECTIONS).contains(&max), "{max}");
    }
}
