//! The Backend trait user code implements, the factories that make one instance per replica, and the registry of factories by name.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::BackendError;
use crate::request::{DEFAULT_METHOD, Request};
use crate::response::Response;

/// A boxed future, as the type-erased backend returns it.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// What a factory knows about the replica it makes.
#[derive(Debug, Clone)]
pub struct ReplicaContext {
    /// The backend's name.
    pub backend: String,
    /// The replica's id, unique within the backend (e.g. `echo#2`).
    pub replica: String,
    /// The backend's `init_args` (`null` when not given).
    pub init_args: serde_json::Value,
}

type MakeFn = dyn Fn(&ReplicaContext) -> Result<Arc<dyn DynBackend>, BackendError> + Send + Sync;

/// Makes one backend instance per replica: a Rust instance in process, or a Python worker
/// process.
#[derive(Clone)]
pub struct BackendFactory {
    kind: FactoryKind,
}

#[derive(Clone)]
pub(crate) enum FactoryKind {
    Rust(Arc<MakeFn>),
    Python(Arc<crate::config::PythonBackend>),
}

impl BackendFactory {
    /// A factory from a function that makes an instance from the replica's context.
    ///
    /// It runs on a blocking thread, so it may load a model from disk.
    pub fn new<B, F>(make: F) -> Self
    where
        B: Backend,
        F: Fn(&ReplicaContext) -> Result<B, BackendError> + Send + Sync + 'static,
    {
        Self {
            kind: FactoryKind::Rust(Arc::new(move |ctx| {
                Ok(Arc::new(make(ctx)?) as Arc<dyn DynBackend>)
            })),
        }
    }

    /// A Python class or function, run in one worker process per replica.
    ///
    /// ```
    /// use ferroserve::{BackendFactory, PythonBackend};
    /// let factory = BackendFactory::python(PythonBackend::new("models:Classifier").working_dir("models/"));
    /// # let _ = factory;
    /// ```
    pub fn python(backend: crate::config::PythonBackend) -> Self {
        Self {
            kind: FactoryKind::Python(Arc::new(backend)),
        }
    }

    /// A stateless backend from an async function of the request (`__call__` only).
    ///
    /// ```
    /// use ferroserve::{BackendFactory, Request, Response};
    /// let hello = BackendFactory::function(|_req: Request| async { Ok(Response::from("hello")) });
    /// # let _ = hello;
    /// ```
    pub fn function<F, Fut>(f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, BackendError>> + Send + 'static,
    {
        let f = Arc::new(f);
        Self::new(move |_ctx| Ok(FnBackend { f: f.clone() }))
    }

    pub(crate) fn kind(&self) -> &FactoryKind {
        &self.kind
    }
}

impl fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackendFactory")
    }
}

struct FnBackend<F> {
    f: Arc<F>,
}

impl<F, Fut> Backend for FnBackend<F>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, BackendError>> + Send + 'static,
{
    fn call(&self, req: Request) -> impl Future<Output = Result<Response, BackendError>> + Send {
        (self.f)(req)
    }
}

/// Backend factories by name: what `rust: NAME` (and `builtin: NAME`) in YAML refers to.
///
/// ```
/// use ferroserve::{BackendFactory, Registry, Response};
/// let mut registry = Registry::new();
/// registry.register("hello", BackendFactory::function(|_req| async { Ok(Response::from("hi")) }));
/// assert!(registry.get("hello").is_some());
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["hello"]);
/// ```
#[derive(Clone, Default, Debug)]
pub struct Registry {
    factories: BTreeMap<String, BackendFactory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`, replacing any earlier one.
    pub fn register(&mut self, name: impl Into<String>, factory: BackendFactory) -> &mut Self {
        self.factories.insert(name.into(), factory);
        self
    }

    /// The factory registered under `name`.
    pub fn get(&self, name: &str) -> Option<&BackendFactory> {
        self.factories.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}
