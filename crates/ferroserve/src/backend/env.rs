//! What a replica gets from the server it runs in: where to report its death, a caller for the handle calls its code makes, and where its worker's output goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::logs::WorkerLogs;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::request::{CallOptions, Request};
use crate::response::Response;

/// Calls an endpoint by name through the router, as a handle does: how a replica's own
/// handle calls (a Python worker's `get_handle`) reach other endpoints without the replica
/// knowing the router.
pub(crate) trait EndpointCaller: Send + Sync + 'static {
    /// Sends `req`, shaped by `options`, to `endpoint`.
    fn call(
        &self,
        endpoint: &str,
        req: Request,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<Response, ServeError>>;
}

/// How many calls a replica runs now: what the router reserves a slot against, and what a
/// worker keeps taken for a call whose caller gave up until the worker is done with it.
///
/// Alone on its cache line: both cores write it on every request, and a replica's other
/// fields, read on every request, must not share the line (false sharing measured at a few
/// percent of throughput with one replica).
/// Its liveness sits on the same line: the router reads both for every choice.
#[repr(align(64))]
#[derive(Debug, Default)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    /// Set once the replica can take no request (its worker's socket broke).
    dead: AtomicBool,
}

impl Slots {
    /// Calls running now.
    pub(crate) fn count(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }

    /// Takes a slot if fewer than `max` are taken.
    pub(crate) fn try_take(&self, max: usize) -> bool {
        if self.taken.fetch_add(1, Ordering::AcqRel) < max {
            true
        } else {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    /// Takes a slot whatever the count: for a call that runs on after its caller left.
    pub(crate) fn take(&self) {
        self.taken.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives a slot back.
    pub(crate) fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the replica can take a request.
    pub(crate) fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed)
    }

    /// The replica can take no more requests, from now on.
    pub(crate) fn mark_dead(&self) {
        self.dead.store(true, Ordering::Release);
    }
}

/// A replica whose worker died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    /// Its backend.
    pub(crate) backend: Arc<str>,
    /// Its id.
    pub(crate) replica: Arc<str>,
}

/// The server as a replica sees it.
#[derive(Clone)]
pub(crate) struct ReplicaEnv {
    /// Where a replica whose worker died says so, to be replaced.
    pub(crate) deaths: mpsc::UnboundedSender<Death>,
    /// What the replica's handle calls go through.
    pub(crate) caller: Arc<dyn EndpointCaller>,
    /// Where a worker's stdout and stderr lines are kept (and echoed).
    pub(crate) logs: Arc<WorkerLogs>,
    /// What the request path counts (a replica's batch queue adds its batches).
    pub(crate) metrics: Arc<Metrics>,
}

/// The caller of a replica that is not part of a server (tests, benchmarks): every call
/// fails as if the server were shutting down.
#[cfg(any(test, feature = "internals"))]
struct Detached;

#[cfg(any(test, feature = "internals"))]
impl EndpointCaller for Detached {
    fn call(
        &self,
        _endpoint: &str,
        _req: Request,
        _options: CallOptions,
    ) -> BoxFuture<'static, Result<Response, ServeError>> {
        Box::pin(async { Err(ServeError::ShuttingDown) })
    }
}

impl ReplicaEnv {
    /// An environment whose deaths nobody hears of and whose handle calls fail.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn detached() -> Self {
        Self {
            deaths: mpsc::unbounded_channel().0,
            caller: Arc::new(Detached),
            logs: Arc::default(),
            metrics: Arc::default(),
        }
    }
}
