//! The served app's configuration: HTTP options, backend and endpoint configs, their defaults and their validation.

mod autoscaling;
mod backend;
mod endpoint;
mod keypath;
pub mod limits;
mod middleware;
mod onnx;
mod python;
pub mod repository;
mod spec;
mod yaml;

use crate::layer::{CustomLayer, ProxyLayer};

pub use autoscaling::AutoscalingConfig;
pub use backend::BackendConfig;
pub use endpoint::{EndpointConfig, Traffic};
pub(crate) use endpoint::{normalize_route, parse_method, validate_shadow};
pub(crate) use middleware::MiddlewareFile;
pub use middleware::{CorsOptions, Middleware};
pub use onnx::{MAX_ONNX_THREADS, OnnxBackend};
pub use python::{DEFAULT_START_TIMEOUT, PythonBackend};
pub use spec::{AppSpec, BackendKind, BackendSpec, EndpointSpec};
pub use yaml::{
    AppConfig, ConfigError, ModelRepository, REPOSITORY_BATCH_WAIT_TIMEOUT_MS,
    REPOSITORY_MAX_BATCH_SIZE, Rescan, ServedModel,
};

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
/// Default `http.max_body_bytes`: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default `http.header_timeout_s`.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default `http.graceful_shutdown_timeout_s`.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(30);
/// Default `http.body_timeout_s`.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest `http.max_connections`.
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// Where the HTTP proxy listens, and what it wraps around every request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    /// The host or IP address to bind (default `127.0.0.1`).
    pub host: String,
    /// The TCP port to bind (default `8000`; `0` picks a free one).
    pub port: u16,
    /// Middlewares, outermost first.
    pub middlewares: Vec<Middleware>,
    /// The largest request body, in bytes (default 64 MiB; an endpoint may set its own): a
    /// larger one is answered 413 as soon as its length says so or its bytes pass it.
    pub max_body_bytes: usize,
    /// How long a client has to send a request's whole head (default 10 s), counted from
    /// when the connection is ready for it: a slow head, and a keep-alive connection idle
    /// that long, are closed.
    pub header_timeout: std::time::Duration,
    /// The longest pause while a request body arrives (default 30 s); past it, `408`.
    pub body_timeout: std::time::Duration,
    /// The most connections open at once; `None` (the default) takes what the
    /// file-descriptor limit leaves. At the cap, the connections idle the longest are
    /// closed to make room, and new ones wait.
    pub max_connections: Option<usize>,
    /// At shutdown, how long requests in flight may take to finish (default 30 s); those
    /// still running then are answered `503`.
    pub graceful_shutdown_timeout: std::time::Duration,
    /// One line per request on stdout, as text or JSON (default off).
    pub access_log: AccessLog,
}

/// The access log's format: one line per HTTP request on stdout (route, endpoint,
/// backend, replica, status, latency, request id, trace id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// No access log.
    #[default]
    Off,
    /// `key=value` text.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for AccessLog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "`{other}` is not an access log format: off, text or json"
            )),
        }
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            middlewares: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: None,
            graceful_shutdown_timeout: DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
            access_log: AccessLog::Off,
        }
    }
}

impl HttpOptions {
    /// Options for `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            ..Self::default()
        }
    }

    /// Checks every value; the error's key is `http.FIELD`.
    pub fn validate(&self) -> Result<(), crate::error::ServeError> {
        fn invalid(key: &'static str) -> impl Fn(String) -> crate::error::ServeError {
            move |message| crate::error::ServeError::invalid(format!("http.{key}"), message)
        }
        limits::within(self.max_body_bytes, 1, usize::MAX).map_err(invalid("max_body_bytes"))?;
        limits::duration(self.header_timeout).map_err(invalid("header_timeout_s"))?;
        limits::duration(self.body_timeout).map_err(invalid("body_timeout_s"))?;
        limits::duration(self.graceful_shutdown_timeout)
            .map_err(invalid("graceful_shutdown_timeout_s"))?;
        if let Some(n) = self.max_connections {
            limits::within(n, 1, MAX_CONNECTIONS).map_err(invalid("max_connections"))?;
        }
        Ok(())
    }

    /// Sets `header_timeout`.
    #[must_use]
    pub fn header_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets `graceful_shutdown_timeout`.
    #[must_use]
    pub fn graceful_shutdown_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.graceful_shutdown_timeout = timeout;
        self
    }

    /// Sets `max_connections`.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Sets `max_body_bytes`.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
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
    pub fn layer(self, layer: impl ProxyLayer) -> Self {
        self.middleware(Middleware::Custom(CustomLayer::new(layer)))
    }
}

/// The names `builtin: NAME` may take: the stock backends of the `builtin` module.
pub const BUILTIN_BACKENDS: &[&str] = &["echo", "static"];

/// The names `rust: NAME` may take: the factories the embedding program registered
/// (a `Registry`). The loader checks names against it, and knows nothing else of it.
pub trait RegisteredNames {
    /// Whether `name` is registered.
    fn is_registered(&self, name: &str) -> bool;
    /// Every registered name, for error messages.
    fn registered(&self) -> Vec<&str>;
}

/// For tests: a registry of names in which only `model` is registered.
#[cfg(test)]
pub(crate) struct ModelOnly;

#[cfg(test)]
impl RegisteredNames for ModelOnly {
    fn is_registered(&self, name: &str) -> bool {
        name == "model"
    }

    fn registered(&self) -> Vec<&str> {
        vec!["model"]
    }
}
