//! The Backend trait user code implements, and the seam every backend kind plugs into: factories, the registry and what a replica gets from the server (its env, and the rings its worker's output is kept in).

mod env;
mod factory;
pub(crate) mod logs;

pub(crate) use env::{Death, EndpointCaller, ReplicaEnv, Slots};
pub use factory::{BackendFactory, Registry, ReplicaContext};
pub(crate) use factory::{Instance, Instantiate};

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::error::BackendError;
use crate::request::{DEFAULT_METHOD, Request};
use crate::response::Response;

/// Which methods a backend's replicas answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Any method name (the backend dispatches, or ignores the name).
    Any,
    /// Only these names; any other is refused with a 404 naming the method and the backend.
    Only(Vec<String>),
}

impl Methods {
    /// Only these method names.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self::Only(names.into_iter().map(Into::into).collect())
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// User code served by replicas.
///
/// The factory given to [`BackendFactory::new`] makes one instance per replica, so each
/// replica has its own state; a replica runs up to `max_concurrent_queries` calls at once,
/// so state that calls change lives behind a `Mutex` or an atomic.
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
/// use ferroserve::{Backend, BackendError, Methods, Request, Response};
///
/// /// The FAQ's `StatefulProcessor`.
/// struct StatefulProcessor { count: AtomicI64 }
///
/// impl Backend for StatefulProcessor {
///     async fn call(&self, req: Request) -> Result<Response, BackendError> {
///         match req.method_name() {
///             "other_method" => {
///                 let inc: i64 = req.json()?;
///                 self.count.fetch_add(inc, Ordering::SeqCst);
///                 Response::json(&true)
///             }
///             _ => Response::json(&serde_json::json!({"current": self.count.load(Ordering::SeqCst)})),
///         }
///     }
///
///     fn methods(&self) -> Methods {
///         Methods::only(["__call__", "other_method"])
///     }
/// }
/// ```
pub trait Backend: Send + Sync + 'static {
    /// Runs one request; [`Request::method_name`] says which method was asked for.
    fn call(&self, req: Request) -> impl Future<Output = Result<Response, BackendError>> + Send;

    /// Called with the backend's `user_config` when the replica starts and whenever it
    /// changes. The default does nothing.
    fn reconfigure(
        &self,
        user_config: &serde_json::Value,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = user_config;
        async { Ok(()) }
    }

    /// Whether the replica can serve: called by the controller's health checks. An error
    /// marks the replica unhealthy, and it is replaced. The default is always healthy.
    fn check_health(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Ok(()) }
    }

    /// The methods this backend answers; the default is `__call__` only.
    fn methods(&self) -> Methods {
        Methods::only([DEFAULT_METHOD])
    }

    /// The methods that take a batch: their requests go through the replica's batch queue
    /// and reach [`Backend::call_batch`], never [`Backend::call`]. The default is none.
    fn batch_methods(&self) -> Methods {
        Methods::Only(Vec::new())
    }

    /// Runs a batch of requests of one batch method (they all have the same
    /// [`Request::method_name`]) and answers each, in order: exactly one response per
    /// request. An error fails every request of the batch.
    fn call_batch(
        &self,
        requests: Vec<Request>,
    ) -> impl Future<Output = Result<Vec<Response>, BackendError>> + Send {
        let method = requests.first().map(|r| r.method_name().to_owned());
        async move {
            Err(BackendError::msg(format!(
                "method `{}` is declared a batch method but the backend has no call_batch",
                method.unwrap_or_default()
            )))
        }
    }
}

/// [`Backend`] with its futures boxed, so replicas can hold any backend behind one type.
pub(crate) trait DynBackend: Send + Sync + 'static {
    fn call(&self, req: Request) -> BoxFuture<'_, Result<Response, BackendError>>;
    fn reconfigure<'a>(
        &'a self,
        user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    fn check_health(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Stops it for good (a worker: a SHUTDOWN frame, then a kill) and waits until it has.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// The id of the process it runs in, when that is not this one.
    fn pid(&self) -> Option<u32> {
        None
    }
    fn methods(&self) -> Methods;
    fn batch_methods(&self) -> Methods;
    fn call_batch(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Result<Vec<Response>, BackendError>>;
}

impl<B: Backend> DynBackend for B {
    fn call(&self, req: Request) -> BoxFuture<'_, Result<Response, BackendError>> {
        Box::pin(Backend::call(self, req))
    }

    fn reconfigure<'a>(
        &'a self,
        user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(Backend::reconfigure(self, user_config))
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(Backend::check_health(self))
    }

    fn methods(&self) -> Methods {
        Backend::methods(self)
    }

    fn batch_methods(&self) -> Methods {
        Backend::batch_methods(self)
    }

    fn call_batch(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Result<Vec<Response>, BackendError>> {
        Box::pin(Backend::call_batch(self, requests))
    }
}
