//! The served app's configuration: HTTP options, backend and endpoint configs, their defaults and their validation.

mod keypath;
mod middleware;
mod yaml;

use std::sync::Arc;

use http::Method;
use indexmap::IndexMap;
use serde_json::Value;

use crate::error::ServeError;

pub(crate) use middleware::MiddlewareFile;
pub use middleware::{CorsOptions, CustomLayer, Middleware};
pub use yaml::{AppConfig, BackendKind, BackendSpec, ConfigError, EndpointSpec};

#[cfg(test)]
mod python_tests {
    use super::PythonBackend;

    #[test]
    fn targets_must_name_module_and_attribute() {
        assert!(PythonBackend::new("models:Classifier").validate().is_ok());
        assert!(
            PythonBackend::new("pkg.models:make_model")
                .validate()
                .is_ok()
        );
        assert!(PythonBackend::new("models").validate().is_err());
        assert!(PythonBackend::new("models:").validate().is_err());
        assert!(PythonBackend::new("mod els:X").validate().is_err());
    }
}

/// Default `http.host`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default `http.port`.
pub const DEFAULT_PORT: u16 = 8000;
/// Default `num_replicas`.
pub const DEFAULT_NUM_REPLICAS: usize = 1;
/// Default `max_concurrent_queries` (per replica).
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 100;
/// Default `max_queued_requests` (per backend).
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 1000;
/// Routes under this prefix belong to Ferroserve itself (`/-/routes`, `/-/healthz`).
pub const RESERVED_PREFIX: &str = "/-/";

/// Where the HTTP proxy listens, and what it wraps around every request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    /// The host or IP address to bind (default `127.0.0.1`).
    pub host: String,
    /// The TCP port to bind (default `8000`; `0` picks a free one).
    pub port: u16,
    /// Middlewares, outermost first.
    pub middlewares: Vec<Middleware>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            middlewares: Vec::new(),
        }
    }
}

impl HttpOptions {
    /// Options for `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            middlewares: Vec::new(),
        }
    }

    /// Adds a middleware inside those already added.
    #[must_use]
    pub fn middleware(mut self, middleware: Middleware) -> Self {
        self.middlewares.push(middleware);
        self
    }

    /// Adds any tower layer inside the middlewares already added. The layer sees
    /// `http::Request<ProxyBody>` and answers `http::Response` with any body; errors it
    /// returns become `500` responses.
    ///
    /// ```
    /// use ferroserve::HttpOptions;
    /// use std::time::Duration;
    /// let options = HttpOptions::new("127.0.0.1", 0)
    ///     .layer(tower_http::timeout::TimeoutLayer::with_status_code(
    ///         http::StatusCode::GATEWAY_TIMEOUT,
    ///         Duration::from_secs(5),
    ///     ));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: crate::proxy::middleware::ProxyLayer,
    {
        let layer = Arc::new(layer);
        self.middleware(Middleware::Custom(CustomLayer(Arc::new(move |inner| {
            crate::proxy::middleware::wrap(inner, &*layer)
        }))))
    }
}

/// A Python backend: a class or function (`module:attr`) that runs in one worker process
/// per replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonBackend {
    /// `module:attr`: a class (instantiated once per replica with `init_args`) or a function.
    pub target: String,
    /// Added to the import path, and the worker's working directory.
    pub working_dir: Option<std::path::PathBuf>,
    /// The interpreter; default `$FERROSERVE_PYTHON`, else `python3` on `PATH`.
    pub python_executable: Option<String>,
    /// Extra environment variables for the worker.
    pub env: std::collections::BTreeMap<String, String>,
    /// How long a worker may take to import and start before it is killed and reported.
    pub start_timeout: std::time::Duration,
}

/// Default time a Python worker may take to start.
pub const DEFAULT_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl PythonBackend {
    /// The class or function `module:attr`, with the defaults.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            working_dir: None,
            python_executable: None,
            env: std::collections::BTreeMap::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    /// Sets the directory the code lives in.
    #[must_use]
    pub fn working_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the interpreter.
    #[must_use]
    pub fn python_executable(mut self, python: impl Into<String>) -> Self {
        self.python_executable = Some(python.into());
        self
    }

    /// Adds an environment variable for the worker.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the start timeout.
    #[must_use]
    pub fn start_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Checks the target's form (`module:attr`).
    pub fn validate(&self) -> Result<(), String> {
        let (module, attr) = self.target.split_once(':').unwrap_or(("", ""));
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if !ident(module) || !ident(attr) {
            return Err(format!(
                "`{}` is not of the form module:attr (e.g. models:Classifier)",
                self.target
            ));
        }
        Ok(())
    }
}

/// How a backend is run: replica count, concurrency, queueing and the values given to user code.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// How many replicas run (at least 1).
    pub num_replicas: usize,
    /// How many requests one replica runs at once (at least 1). `None` means 100, or twice
    /// `max_batch_size` when that is larger, so batching backends can fill their batches.
    pub max_concurrent_queries: Option<usize>,
    /// How many requests may wait when every replica is full; past it callers get 503.
    pub max_queued_requests: usize,
    /// Given to each replica's `reconfigure` at start and whenever it changes.
    pub user_config: Value,
    /// Given to the backend's factory when each replica is made.
    pub init_args: Value,
    /// The most requests one batch call gets (for the methods a backend declares as batch
    /// methods); `None` gives them batches of one.
    pub max_batch_size: Option<usize>,
    /// How long a queued request waits for a batch to fill, in milliseconds (0: run with
    /// what is queued now).
    pub batch_wait_timeout_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            num_replicas: DEFAULT_NUM_REPLICAS,
            max_concurrent_queries: None,
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            user_config: Value::Null,
            init_args: Value::Null,
            max_batch_size: None,
            batch_wait_timeout_ms: 0,
        }
    }
}

impl BackendConfig {
    /// Sets `num_replicas`.
    #[must_use]
    pub fn num_replicas(mut self, n: usize) -> Self {
        self.num_replicas = n;
        self
    }

    /// Sets `max_concurrent_queries`.
    #[must_use]
    pub fn max_concurrent_queries(mut self, n: usize) -> Self {
        self.max_concurrent_queries = Some(n);
        self
    }

    /// Sets `max_batch_size`.
    #[must_use]
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = Some(n);
        self
    }

    /// Sets `batch_wait_timeout_ms`.
    #[must_use]
    pub fn batch_wait_timeout_ms(mut self, ms: u64) -> Self {
        self.batch_wait_timeout_ms = ms;
        self
    }

    /// The concurrency cap in force: `max_concurrent_queries`, or its default of 100 (at
    /// least twice `max_batch_size`).
    pub fn effective_max_concurrent_queries(&self) -> usize {
        self.max_concurrent_queries.unwrap_or_else(|| {
            DEFAULT_MAX_CONCURRENT_QUERIES.max(2 * self.max_batch_size.unwrap_or(0))
        })
    }

    /// Sets `max_queued_requests`.
    #[must_use]
    pub fn max_queued_requests(mut self, n: usize) -> Self {
        self.max_queued_requests = n;
        self
    }

    /// Sets `user_config`.
    #[must_use]
    pub fn user_config(mut self, value: Value) -> Self {
        self.user_config = value;
        self
    }

    /// Sets `init_args`.
    #[must_use]
    pub fn init_args(mut self, value: Value) -> Self {
        self.init_args = value;
        self
    }

    /// Checks every value; the error's key is the field name (e.g. `num_replicas`).
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.num_replicas == 0 {
            return Err(ServeError::invalid(
                "num_replicas",
                "must be at least 1 (delete the backend to stop serving it)",
            ));
        }
        if self.max_concurrent_queries == Some(0) {
            return Err(ServeError::invalid(
                "max_concurrent_queries",
                "must be at least 1",
            ));
        }
        if self.max_batch_size == Some(0) {
            return Err(ServeError::invalid(
                "max_batch_size",
                "must be at least 1 (leave it out to turn batching off)",
            ));
        }
        if let (Some(cap), Some(batch)) = (self.max_concurrent_queries, self.max_batch_size)
            && cap < batch
        {
            // Each request waiting for a batch holds one of the replica's slots, so a cap
            // below the batch size would silently keep every batch smaller than asked.
            return Err(ServeError::invalid(
                "max_concurrent_queries",
                format!(
                    "{cap} is below max_batch_size ({batch}), so batches could never fill; \
                     set it to at least {} (twice the batch size) or leave it out",
                    2 * batch
                ),
            ));
        }
        Ok(())
    }
}

/// An endpoint's traffic policy: weights over backends, each at least 0, summing to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    weights: IndexMap<String, f64>,
}

impl Traffic {
    /// All traffic to one backend.
    pub fn single(backend: impl Into<String>) -> Self {
        let mut weights = IndexMap::new();
        weights.insert(backend.into(), 1.0);
        Self { weights }
    }

    /// Weights over backends; fails unless each is ≥ 0 and they sum to 1.
    ///
    /// ```
    /// use ferroserve::Traffic;
    /// assert!(Traffic::new([("v1", 0.9), ("v2", 0.1)]).is_ok());
    /// assert!(Traffic::new([("v1", 0.9), ("v2", 0.2)]).is_err());
    /// ```
    pub fn new<I, S>(weights: I) -> Result<Self, ServeError>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        let traffic = Self {
            weights: weights.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        };
        traffic.validate()?;
        Ok(traffic)
    }

    /// Checks the weights; the error's key is `traffic` or `traffic.NAME`.
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.weights.is_empty() {
            return Err(ServeError::invalid("traffic", "names no backend"));
        }
        for (name, weight) in &self.weights {
            if !weight.is_finite() || *weight < 0.0 {
                return Err(ServeError::invalid(
                    format!("traffic.{name}"),
                    format!("weight {weight} must be a number ≥ 0"),
                ));
            }
        }
        let sum: f64 = self.weights.values().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(ServeError::invalid(
                "traffic",
                format!("weights sum to {sum}, not 1"),
            ));
        }
        Ok(())
    }

    /// The backends and their weights, in the order given.
    pub fn weights(&self) -> impl Iterator<Item = (&str, f64)> {
        self.weights.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether `backend` is one of the backends.
    pub fn uses(&self, backend: &str) -> bool {
        self.weights.contains_key(backend)
    }
}

/// An endpoint: an optional HTTP route with allowed methods, and a traffic policy.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// The HTTP route (a path prefix); without one the endpoint is reachable only by handles.
    pub route: Option<String>,
    /// The HTTP methods allowed on the route (default `GET`).
    pub methods: Vec<Method>,
    /// Which backends serve it, by weight.
    pub traffic: Traffic,
    /// Backends that also get a copy of a share (0 to 1) of the requests; their answers are
    /// dropped, and their failures and slowness never reach the caller.
    pub shadow: IndexMap<String, f64>,
}

impl EndpointConfig {
    /// An endpoint served by one backend, without a route, allowing `GET`.
    pub fn backend(name: impl Into<String>) -> Self {
        Self::traffic(Traffic::single(name))
    }

    /// An endpoint served by weighted backends, without a route, allowing `GET`.
    pub fn traffic(traffic: Traffic) -> Self {
        Self {
            route: None,
            methods: vec![Method::GET],
            traffic,
            shadow: IndexMap::new(),
        }
    }

    /// Sets the HTTP route.
    #[must_use]
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the allowed HTTP methods.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Checks route, methods and traffic, and normalises the route.
    pub fn validate(&mut self) -> Result<(), ServeError> {
        if let Some(route) = &self.route {
            self.route = Some(normalize_route(route).map_err(|m| ServeError::invalid("route", m))?);
        }
        if self.methods.is_empty() {
            return Err(ServeError::invalid("methods", "allows no HTTP method"));
        }
        self.traffic.validate()?;
        for (backend, proportion) in &self.shadow {
            validate_shadow(&self.traffic, backend, *proportion)?;
        }
        Ok(())
    }

    /// Adds a shadow backend getting a copy of `proportion` of the requests.
    #[must_use]
    pub fn shadow(mut self, backend: impl Into<String>, proportion: f64) -> Self {
        self.shadow.insert(backend.into(), proportion);
        self
    }
}

/// Checks one shadow backend; the error's key is `shadow.NAME`.
pub(crate) fn validate_shadow(
    traffic: &Traffic,
    backend: &str,
    proportion: f64,
) -> Result<(), ServeError> {
    if !(0.0..=1.0).contains(&proportion) {
        return Err(ServeError::invalid(
            format!("shadow.{backend}"),
            format!("proportion {proportion} must be between 0 and 1"),
        ));
    }
    if traffic.uses(backend) {
        return Err(ServeError::invalid(
            format!("shadow.{backend}"),
            "a backend that serves the endpoint's traffic cannot also shadow it",
        ));
    }
    Ok(())
}

/// Checks a route and strips a trailing `/` (except for `/` itself).
pub(crate) fn normalize_route(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err(format!("route `{route}` must start with `/`"));
    }
    if route.contains(['?', '#']) || route.chars().any(char::is_whitespace) {
        return Err(format!(
            "route `{route}` must be a plain path (no query, fragment or spaces)"
        ));
    }
    if route == "/-" || route.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "route `{route}` is under `{RESERVED_PREFIX}`, which Ferroserve keeps for itself"
        ));
    }
    let trimmed = route.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// Parses an HTTP method name (case-insensitive).
pub(crate) fn parse_method(name: &str) -> Result<Method, String> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{name}` is not an HTTP method"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_checked_and_normalised() {
        assert_eq!(normalize_route("/api/").as_deref(), Ok("/api"));
        assert_eq!(normalize_route("/").as_deref(), Ok("/"));
        assert!(normalize_route("api").is_err());
        assert!(normalize_route("/-/routes").is_err());
        assert!(normalize_route("/a?b").is_err());
    }

    #[test]
    fn traffic_weights_must_sum_to_one() {
        assert!(Traffic::new([("a", 0.5), ("b", 0.5)]).is_ok());
        let err = Traffic::new([("a", 0.5), ("b", 0.6)]).expect_err("sum 1.1");
        assert!(err.to_string().contains("sum to 1.1"), "{err}");
        assert!(Traffic::new([("a", -0.5), ("b", 1.5)]).is_err());
        assert!(Traffic::new(Vec::<(String, f64)>::new()).is_err());
    }

    #[test]
    fn backend_config_refuses_zero_replicas() {
        let err = BackendConfig::default()
            .num_replicas(0)
            .validate()
            .expect_err("zero replicas");
        assert!(err.to_string().contains("num_replicas"), "{err}");
    }

    #[test]
    fn batching_gets_room_to_fill_its_batches() {
        let config = BackendConfig::default().max_batch_size(64);
        assert_eq!(config.effective_max_concurrent_queries(), 128);
        assert_eq!(
            BackendConfig::default().effective_max_concurrent_queries(),
            100
        );
        let err = BackendConfig::default()
            .max_batch_size(16)
            .max_concurrent_queries(8)
            .validate()
            .expect_err("the cap keeps batches small");
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(
            BackendConfig::default()
                .max_batch_size(16)
                .max_concurrent_queries(16)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!(parse_method("post"), Ok(Method::POST));
        assert!(parse_method("GE T").is_err());
    }
}
