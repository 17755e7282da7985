//! `Serve`: the running instance — the imperative API over the controller, the HTTP proxy and handles.

mod cluster;
mod observe;
mod peer;

pub use peer::RemoteTarget;

pub use cluster::ClusterLink;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::Mutex;

use crate::backend::logs::LogLine;
use crate::backend::{BackendFactory, Registry};
use crate::config::{
    AppConfig, AppSpec, BackendConfig, BackendKind, ConfigError, EndpointConfig, HttpOptions,
    Traffic,
};
use crate::controller::status::AppStatus;
use crate::controller::{Controller, Planned};
use crate::error::ServeError;
use crate::handle::{Caller, Handle};
use crate::metrics::History;
use crate::proxy::HttpServer;
use crate::replica::factory_of;
use crate::router::SnapshotCell;
use crate::store::StateStore;

/// How long a shutdown waits for replicas to stop (a worker gets 2 s, then a kill).
const REPLICA_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A running Ferroserve instance.
///
/// ```no_run
/// use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, HttpOptions, Response, Serve};
///
/// # async fn demo() -> Result<(), ferroserve::ServeError> {
/// let serve = Serve::start(HttpOptions::new("127.0.0.1", 8000)).await?;
/// serve
///     .create_backend(
///         "hello",
///         BackendFactory::function(|_req| async { Ok(Response::from("hello")) }),
///         BackendConfig::default().num_replicas(2),
///     )
///     .await?;
/// serve.create_endpoint("hello", EndpointConfig::backend("hello").route("/hello")).await?;
/// let answer = serve.get_handle("hello")?.remote(()).await?;
/// assert_eq!(answer.body_text().unwrap(), "hello");
/// serve.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Serve {
    cell: Arc<SnapshotCell>,
    controller: Arc<Controller>,
    /// Where the desired app is saved after every change, if anywhere.
    store: std::sync::OnceLock<Arc<dyn StateStore>>,
    /// Taken by the first shutdown.
    http: Mutex<Option<HttpServer>>,
    local_addr: Option<SocketAddr>,
    /// The last changes, for the dashboard.
    history: History,
    /// The cluster this node is part of, if any: deploys go there.
    cluster: std::sync::OnceLock<Arc<dyn ClusterLink>>,
    /// The peer listener and the connections to other nodes (cluster mode).
    peers: peer::Peers,
}

impl Serve {
    /// Starts Ferroserve with its HTTP proxy on `http.host:http.port` (port 0 picks one).
    pub async fn start(http: HttpOptions) -> Result<Self, ServeError> {
        let mut serve = Self::without_http();
        serve.peers = peer::Peers::new(Some(&http));
        let server = HttpServer::start(&http, serve.cell.clone()).await?;
        serve.local_addr = Some(server.local_addr());
        serve.http = Mutex::new(Some(server));
        Ok(serve)
    }

    /// Starts Ferroserve without HTTP: endpoints are reachable through handles only.
    pub fn without_http() -> Self {
        let cell = Arc::new(SnapshotCell::default());
        let controller = Controller::new(cell.clone(), Caller::new(&cell));
        tokio::spawn(observe::sample_every_second(
            Arc::downgrade(&cell),
            Arc::downgrade(controller.metrics()),
        ));
        Self {
            controller,
            cell,
            store: std::sync::OnceLock::new(),
            http: Mutex::new(None),
            local_addr: None,
            history: History::default(),
            cluster: std::sync::OnceLock::new(),
            peers: peer::Peers::new(None),
        }
    }

    /// Saves the desired app to `store` after every change from now on (and once now).
    /// The first store set is kept.
    pub fn persist_to(&self, store: Arc<dyn StateStore>) {
        let _ = self.store.set(store);
        self.save();
    }

    /// Saves the desired app, if a store is set; a failure is logged (the change stands).
    /// Once the server stops, nothing is saved: what it empties is not the app.
    fn save(&self) {
        if self.controller.is_stopped() {
            return;
        }
        if let Some(store) = self.store.get()
            && let Err(e) = store.save(&self.app())
        {
            tracing::error!("cannot save the app to {}: {e}", store.describe());
        }
    }

    /// Saves the desired app after a change that succeeded, and records the change (or
    /// its failure) in the history as `what` says it.
    fn saved<T>(
        &self,
        outcome: Result<T, ServeError>,
        what: impl FnOnce() -> String,
    ) -> Result<T, ServeError> {
        match &outcome {
            Ok(_) => {
                self.save();
                self.history.record(what());
            }
            Err(e) => self.history.record(format!("{} failed: {e}", what())),
        }
        outcome
    }

    /// Calls endpoints as handles do (for the control API's calls from scripts).
    pub(crate) fn caller(&self) -> Arc<dyn crate::backend::EndpointCaller> {
        Caller::new(&self.cell)
    }

    /// The address the HTTP proxy listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Adds a backend and starts its `num_replicas` replicas.
    pub async fn create_backend(
        &self,
        name: &str,
        factory: BackendFactory,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.create(name, factory, config, None).await
    }

    /// Adds a backend of `kind` (which the saved app records) made by `factory`.
    pub async fn create_backend_of_kind(
        &self,
        name: &str,
        kind: BackendKind,
        factory: BackendFactory,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.create(name, factory, config, Some(kind)).await
    }

    async fn create(
        &self,
        name: &str,
        factory: BackendFactory,
        config: BackendConfig,
        kind: Option<BackendKind>,
    ) -> Result<(), ServeError> {
        self.local_change()?;
        config.validate()?;
        let what = format!("create backend `{name}` ({} replicas)", config.num_replicas);
        let (controller, name) = (self.controller.clone(), name.to_owned());
        let created = to_completion(async move {
            controller
                .create_backend(&name, factory, config, kind)
                .await
        })
        .await;
        self.saved(created, || what)
    }

    /// Changes backend `name` to `kind` and `config`: in place when only the replica count,
    /// `user_config` or limits change, else by a rolling update (new replicas start before
    /// old ones stop; a new version that fails is rolled back).
    pub async fn update_backend(
        &self,
        name: &str,
        kind: BackendKind,
        factory: BackendFactory,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.local_change()?;
        config.validate()?;
        let what = format!("update backend `{name}` ({} replicas)", config.num_replicas);
        let (controller, name) = (self.controller.clone(), name.to_owned());
        let updated = to_completion(async move {
            controller
                .update_backend(&name, factory, config, Some(kind))
                .await
        })
        .await;
        self.saved(updated, || what)
    }

    /// Changes a backend's config while it serves, as a deploy would. The replica count,
    /// `user_config` and the concurrency limits change in place; a change of `init_args`,
    /// batching (`max_batch_size`, `batch_wait_timeout_ms`) or `version` **replaces every
    /// replica** by a rolling update (new replicas start before old ones stop; if they
    /// cannot start, the backend is rolled back and this returns the error). `config` is
    /// the whole config: a field left at its default is set to it.
    pub async fn update_backend_config(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.local_change()?;
        config.validate()?;
        let what = format!(
            "change backend `{name}`: {} replicas, at most {} requests each",
            config.num_replicas,
            config.effective_max_concurrent_queries()
        );
        let (controller, name) = (self.controller.clone(), name.to_owned());
        let updated =
            to_completion(async move { controller.update_backend_config(&name, config).await })
                .await;
        self.saved(updated, || what)
    }

    /// Removes a backend; refused while an endpoint uses it.
    pub async fn delete_backend(&self, name: &str) -> Result<(), ServeError> {
        self.local_change()?;
        self.saved(self.controller.delete_backend(name), || {
            format!("delete backend `{name}`")
        })
    }

    /// Adds an endpoint.
    pub async fn create_endpoint(
        &self,
        name: &str,
        config: EndpointConfig,
    ) -> Result<(), ServeError> {
        self.local_change()?;
        let what = format!(
            "create endpoint `{name}`{}",
            config
                .route
                .as_deref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default()
        );
        self.saved(self.controller.create_endpoint(name, config), || what)
    }

    /// Removes an endpoint.
    pub async fn delete_endpoint(&self, name: &str) -> Result<(), ServeError> {
        self.local_change()?;
        self.saved(self.controller.delete_endpoint(name), || {
            format!("delete endpoint `{name}`")
        })
    }

    /// Changes an endpoint's traffic weights while it serves: requests from then on follow
    /// the new weights; those already sent finish where they went.
    pub async fn set_traffic(&self, endpoint: &str, traffic: Traffic) -> Result<(), ServeError> {
        self.local_change()?;
        let weights: Vec<String> = traffic
            .weights()
            .map(|(backend, weight)| format!("{backend} {weight}"))
            .collect();
        let what = format!("traffic of endpoint `{endpoint}`: {}", weights.join(", "));
        self.saved(self.controller.set_traffic(endpoint, traffic), || what)
    }

    /// Sends a copy of `proportion` (0 to 1) of `endpoint`'s requests to `backend` as well;
    /// its answers are dropped, its failures and slowness never reach the caller. 0 stops.
    pub async fn shadow_traffic(
        &self,
        endpoint: &str,
        backend: &str,
        proportion: f64,
    ) -> Result<(), ServeError> {
        self.local_change()?;
        self.saved(
            self.controller
                .shadow_traffic(endpoint, backend, proportion),
            || format!("shadow of endpoint `{endpoint}`: {backend} {proportion}"),
        )
    }

    /// The backends served now, by name.
    pub fn list_backends(&self) -> BTreeMap<String, BackendConfig> {
        let snapshot = self.cell.load();
        snapshot
            .backends
            .iter()
            .map(|(name, b)| (name.clone(), b.config.clone()))
            .collect()
    }

    /// The endpoints served now, by name.
    pub fn list_endpoints(&self) -> BTreeMap<String, EndpointConfig> {
        let snapshot = self.cell.load();
        snapshot
            .endpoints
            .iter()
            .map(|(name, e)| (name.clone(), e.config.clone()))
            .collect()
    }

    /// A handle to `endpoint`; an error if no endpoint has that name.
    pub fn get_handle(&self, endpoint: &str) -> Result<Handle, ServeError> {
        if !self.cell.load().endpoints.contains_key(endpoint) {
            return Err(ServeError::EndpointNotFound(endpoint.to_owned()));
        }
        Ok(Handle::new(self.cell.clone(), endpoint))
    }

    /// Makes the app what `app` says; `rust:` backends come from `registry`. New backends
    /// are created, changed ones updated (in place, or by a rolling update when their code,
    /// `init_args`, batching or `version` changed), and backends and endpoints no longer
    /// listed are removed. Deploying the same app again changes nothing.
    ///
    /// What fails keeps what ran before; the first failure is returned, naming the file,
    /// the line and the key.
    pub async fn deploy(&self, app: &AppConfig, registry: &Registry) -> Result<(), ConfigError> {
        if let Some(link) = self.cluster.get() {
            return self.deploy_to_cluster(link.clone(), app, registry).await;
        }
        self.deploy_share(app, registry, None).await
    }

    /// Makes the app what `app` says, on this node; with `share`, each backend runs the
    /// number of replicas it gives (its placement in a cluster) instead of `num_replicas`.
    async fn deploy_share(
        &self,
        app: &AppConfig,
        registry: &Registry,
        share: Option<&std::collections::BTreeMap<String, usize>>,
    ) -> Result<(), ConfigError> {
        let planned = app
            .spec
            .backends
            .iter()
            .map(|spec| {
                Ok(Planned {
                    name: spec.name.clone(),
                    kind: spec.kind.clone(),
                    factory: resolve(app, spec, registry)?,
                    config: match share {
                        Some(share) => spec
                            .config
                            .clone()
                            .num_replicas(share.get(&spec.name).copied().unwrap_or(0)),
                        None => spec.config.clone(),
                    },
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let endpoints = app
            .spec
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.config.clone()))
            .collect();
        let controller = self.controller.clone();
        let failures = to_completion(async move { Ok(controller.apply(planned, endpoints).await) })
            .await
            .unwrap_or_else(|e| vec![("app".to_owned(), e)]);
        self.save();
        let what = format!(
            "deploy {} ({} backends, {} endpoints)",
            app.file,
            app.spec.backends.len(),
            app.spec.endpoints.len()
        );
        let Some((name, error)) = failures.into_iter().next() else {
            self.history.record(what);
            return Ok(());
        };
        self.history.record(format!(
            "{what} failed: backend or endpoint `{name}`: {error}"
        ));
        let (line, key) = match (
            app.spec.backends.iter().find(|b| b.name == name),
            app.spec.endpoints.iter().find(|e| e.name == name),
        ) {
            (Some(b), _) => (b.line, format!("backends.{name}")),
            (None, Some(e)) => (e.line, format!("endpoints.{name}")),
            (None, None) => (0, name),
        };
        Err(located(app, line, key, error.to_string()))
    }

    /// Deploys `app` in a task of its own; status shows `DEPLOYING` from the moment this
    /// returns until it is done. What [`Serve::deploy`] would return is logged.
    pub fn deploy_in_background(self: &Arc<Self>, app: AppConfig, registry: Registry) {
        let serve = self.clone();
        let queued = self.controller.queue_apply();
        tokio::spawn(async move {
            let outcome = serve.deploy(&app, &registry).await;
            drop(queued);
            match outcome {
                Ok(()) => tracing::info!(file = app.file, "app deployed"),
                Err(e) => tracing::error!("deploy failed; what ran before serves: {e}"),
            }
        });
    }

    /// Desired and actual state: each backend's status and replicas, each endpoint, and
    /// readiness (what the control API's `GET /api/status` returns).
    pub fn status(&self) -> AppStatus {
        let mut status = self.node_status();
        status.cluster = self.cluster_status();
        status
    }

    /// This node's backends and endpoints, without the cluster's part (what the cluster
    /// reports of this node, and the gauges of `/metrics`).
    pub(crate) fn node_status(&self) -> AppStatus {
        self.controller.status()
    }

    /// The last `tail` lines the worker of `replica` printed (`echo#0`), oldest first; an
    /// empty list for a replica without captured output; `None` for an unknown replica.
    pub(crate) fn replica_logs(&self, replica: &str, tail: usize) -> Option<Vec<LogLine>> {
        self.controller.replica_logs(replica, tail)
    }

    /// The deployed app, as it would be written to a file (Rust closures given to
    /// [`Serve::create_backend`] are left out: they cannot be written down).
    pub fn app(&self) -> AppSpec {
        // A node of a cluster runs its share; the app is the cluster's.
        if let Some(app) = self.cluster.get().and_then(|link| link.app()) {
            return app;
        }
        self.controller.desired_spec()
    }

    /// While `deploying`, a request for a route no endpoint serves yet is answered 503 with
    /// `Retry-After` (the app is on its way), not 404, and `/-/ready` answers 503.
    pub fn set_deploying(&self, deploying: bool) {
        self.controller.hold(deploying);
    }

    /// Stops accepting connections, finishes the requests in flight, then stops every
    /// replica. It does not wait for replicas still starting: they are stopped once up.
    /// After it, changes fail with [`ServeError::ShuttingDown`].
    pub async fn shutdown(&self) {
        let http = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.controller.drain_all();
        if let Some(http) = http {
            http.shutdown().await;
        }
        self.peers.shutdown().await;
        let replicas = self.controller.shutdown();
        let stopped = futures_util::future::join_all(replicas.iter().map(|r| r.stop()));
        if tokio::time::timeout(REPLICA_STOP_TIMEOUT, stopped)
            .await
            .is_err()
        {
            tracing::warn!("replicas still stopping after {REPLICA_STOP_TIMEOUT:?}");
        }
    }
}

/// Runs a change to completion on a task of its own: a caller that stops waiting (a client
/// that disconnects, a dropped future) does not leave it half done.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, ServeError>> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::spawn(change)
        .await
        .map_err(|e| ServeError::Internal(format!("a change did not finish: {e}")))?
}

/// Runs every check `ferroserve run` runs before it starts a replica: the HTTP options and
/// middlewares, each backend's factory (a `rust:` name must be in `registry`), and, with
/// `import_python`, each Python backend's module and attribute, imported in a short-lived
/// interpreter. The error names the file, the line and the key.
pub fn check_app(
    app: &AppConfig,
    registry: &Registry,
    import_python: bool,
) -> Result<(), ConfigError> {
    if let Err(e) = crate::proxy::check(&app.http) {
        let (key, message) = match e {
            ServeError::InvalidConfig { key, message } => (key, message),
            other => ("http".to_owned(), other.to_string()),
        };
        return Err(located(app, 0, key, message));
    }
    for spec in &app.spec.backends {
        let key = format!("backends.{}", spec.name);
        let factory = resolve(app, spec, registry)?;
        let python = matches!(spec.kind, crate::config::BackendKind::Python(_));
        if import_python || !python {
            let key = if python { format!("{key}.python") } else { key };
            factory
                .check()
                .map_err(|message| located(app, spec.line, key, message))?;
        }
    }
    Ok(())
}

/// `message` as the config error of `key` at `line` of `app`'s file.
fn located(app: &AppConfig, line: usize, key: String, message: String) -> ConfigError {
    ConfigError {
        file: app.file.clone(),
        line,
        key,
        message,
    }
}

/// The factory of `spec`'s kind, or the config error naming it.
fn resolve(
    app: &AppConfig,
    spec: &crate::config::BackendSpec,
    registry: &Registry,
) -> Result<BackendFactory, ConfigError> {
    factory_of(&spec.kind, registry).ok_or_else(|| {
        let missing = ServeError::BackendNotFound(spec.name.clone());
        located(
            app,
            spec.line,
            format!("backends.{}", spec.name),
            missing.to_string(),
        )
    })
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = interrupt => {},
            () = terminate => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
