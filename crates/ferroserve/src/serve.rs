//! `Serve`: the running instance — the imperative API over the controller, the HTTP proxy and handles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::Mutex;

use crate::backend::{BackendFactory, Registry};
use crate::config::{AppConfig, BackendConfig, ConfigError, EndpointConfig, HttpOptions, Traffic};
use crate::controller::Controller;
use crate::error::ServeError;
use crate::handle::{Caller, Handle};
use crate::proxy::HttpServer;
use crate::replica::factory_of;
use crate::router::SnapshotCell;

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
    /// Taken by the first shutdown.
    http: Mutex<Option<HttpServer>>,
    local_addr: Option<SocketAddr>,
}

impl Serve {
    /// Starts Ferroserve with its HTTP proxy on `http.host:http.port` (port 0 picks one).
    pub async fn start(http: HttpOptions) -> Result<Self, ServeError> {
        let mut serve = Self::without_http();
        let server = HttpServer::start(&http, serve.cell.clone()).await?;
        serve.local_addr = Some(server.local_addr());
        serve.http = Mutex::new(Some(server));
        Ok(serve)
    }

    /// Starts Ferroserve without HTTP: endpoints are reachable through handles only.
    pub fn without_http() -> Self {
        let cell = Arc::new(SnapshotCell::default());
        Self {
            controller: Controller::new(cell.clone(), Caller::new(&cell)),
            cell,
            http: Mutex::new(None),
            local_addr: None,
        }
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
        self.controller.create_backend(name, factory, config).await
    }

    /// Changes a backend's config while it serves (replicas, concurrency, `user_config`).
    pub async fn update_backend_config(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.controller.update_backend_config(name, config).await
    }

    /// Removes a backend; refused while an endpoint uses it.
    pub async fn delete_backend(&self, name: &str) -> Result<(), ServeError> {
        self.controller.delete_backend(name)
    }

    /// Adds an endpoint.
    pub async fn create_endpoint(
        &self,
        name: &str,
        config: EndpointConfig,
    ) -> Result<(), ServeError> {
        self.controller.create_endpoint(name, config)
    }

    /// Removes an endpoint.
    pub async fn delete_endpoint(&self, name: &str) -> Result<(), ServeError> {
        self.controller.delete_endpoint(name)
    }

    /// Changes an endpoint's traffic weights while it serves.
    pub async fn set_traffic(&self, endpoint: &str, traffic: Traffic) -> Result<(), ServeError> {
        self.controller.set_traffic(endpoint, traffic)
    }

    /// Sends a copy of `proportion` (0 to 1) of `endpoint`'s requests to `backend` as well;
    /// its answers are dropped, its failures and slowness never reach the caller. 0 stops.
    pub async fn shadow_traffic(
        &self,
        endpoint: &str,
        backend: &str,
        proportion: f64,
    ) -> Result<(), ServeError> {
        self.controller
            .shadow_traffic(endpoint, backend, proportion)
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

    /// Creates every backend and endpoint of `app`; `rust:` backends come from `registry`.
    ///
    /// A failure names the file, the line and the key of what failed.
    pub async fn deploy(&self, app: &AppConfig, registry: &Registry) -> Result<(), ConfigError> {
        let located =
            |line: usize, key: String, e: &ServeError| located(app, line, key, e.to_string());
        for spec in &app.spec.backends {
            let key = format!("backends.{}", spec.name);
            let factory = resolve(app, spec, registry)?;
            self.create_backend(&spec.name, factory, spec.config.clone())
                .await
                .map_err(|e| located(spec.line, key, &e))?;
        }
        for spec in &app.spec.endpoints {
            self.create_endpoint(&spec.name, spec.config.clone())
                .await
                .map_err(|e| located(spec.line, format!("endpoints.{}", spec.name), &e))?;
        }
        Ok(())
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
        if let Some(http) = http {
            http.shutdown().await;
        }
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
