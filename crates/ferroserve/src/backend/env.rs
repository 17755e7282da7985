//! What a replica gets from the server it runs in: where to report its death, and a caller for the handle calls its code makes.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::error::ServeError;
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
        }
    }
}
