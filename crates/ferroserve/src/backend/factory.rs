//! Backend factories: how each kind makes one replica's instance (the `Instantiate` seam), and the registry of factories by name.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Backend, DynBackend, ReplicaEnv, Slots};
use crate::config::{BackendConfig, RegisteredNames};
use crate::error::{BackendError, panic_message};
use crate::request::Request;
use crate::response::Response;

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

/// One replica's instance, as a kind makes it.
pub(crate) struct Instance {
    /// The instance, behind the one type every kind shares.
    pub(crate) backend: Arc<dyn DynBackend>,
    /// Whether it already has its `user_config` (a Python worker gets it with its start).
    pub(crate) configured: bool,
}

/// How one kind of backend makes a replica's instance: the seam a new kind plugs into
/// (in-process Rust below; the Python worker in `replica::python`).
pub(crate) trait Instantiate: Send + Sync + 'static {
    /// Makes the instance of the replica `ctx` names, or says why it could not. `slots` is
    /// the replica's count of running calls, for a kind whose calls can outlive their
    /// callers (a worker's).
    fn instantiate<'a>(
        &'a self,
        ctx: &'a ReplicaContext,
        config: &'a BackendConfig,
        env: &'a ReplicaEnv,
        slots: &'a Arc<Slots>,
    ) -> BoxFuture<'a, Result<Instance, String>>;

    /// Checks what can be checked without starting a replica (a Python module imports);
    /// blocking, for `ferroserve check`. The default finds nothing to check.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Makes one backend instance per replica: a Rust instance in process, or a Python worker
/// process.
#[derive(Clone)]
pub struct BackendFactory {
    kind: Arc<dyn Instantiate>,
}

type MakeFn = dyn Fn(&ReplicaContext) -> Result<Arc<dyn DynBackend>, BackendError> + Send + Sync;

/// The in-process Rust kind: a function run on a blocking thread.
struct RustFactory(Arc<MakeFn>);

impl Instantiate for RustFactory {
    fn instantiate<'a>(
        &'a self,
        ctx: &'a ReplicaContext,
        _config: &'a BackendConfig,
        _env: &'a ReplicaEnv,
        _slots: &'a Arc<Slots>,
    ) -> BoxFuture<'a, Result<Instance, String>> {
        let make = self.0.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let made = tokio::task::spawn_blocking(move || make(&ctx))
                .await
                .map_err(|e| match e.try_into_panic() {
                    Ok(payload) => format!("the factory panicked: {}", panic_message(&*payload)),
                    Err(e) => e.to_string(),
                })?;
            Ok(Instance {
                backend: made.map_err(|e| e.to_string())?,
                configured: false,
            })
        })
    }
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
        Self::of_kind(RustFactory(Arc::new(move |ctx| {
            Ok(Arc::new(make(ctx)?) as Arc<dyn DynBackend>)
        })))
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

    /// A factory of another kind.
    pub(crate) fn of_kind(kind: impl Instantiate) -> Self {
        Self {
            kind: Arc::new(kind),
        }
    }

    /// Checks what can be checked without starting a replica (blocking).
    pub(crate) fn check(&self) -> Result<(), String> {
        self.kind.check()
    }

    /// Makes the instance of one replica.
    pub(crate) async fn instantiate(
        &self,
        ctx: &ReplicaContext,
        config: &BackendConfig,
        env: &ReplicaEnv,
        slots: &Arc<Slots>,
    ) -> Result<Instance, String> {
        self.kind.instantiate(ctx, config, env, slots).await
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

impl RegisteredNames for Registry {
    fn is_registered(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    fn registered(&self) -> Vec<&str> {
        self.names().collect()
    }
}
