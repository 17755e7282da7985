//! Ferroserve: serve any model or code behind HTTP and in-process handles, with replicas,
//! traffic splitting and bounded queues, from one fast binary.
//!
//! The vocabulary is Ray Serve's: a **backend** is user code plus its [`BackendConfig`];
//! it runs as one or more **replicas**; an **endpoint** has an optional HTTP route and a
//! **traffic** policy over backends; a [`Handle`] calls an endpoint from code through the
//! same router as HTTP.
//!
//! ```no_run
//! use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, HttpOptions, Response, Serve};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ferroserve::ServeError> {
//!     let serve = Serve::start(HttpOptions::default()).await?;
//!     let hello = BackendFactory::function(|_req| async { Ok(Response::from("hello\n")) });
//!     serve.create_backend("hello", hello, BackendConfig::default()).await?;
//!     serve.create_endpoint("hello", EndpointConfig::backend("hello").route("/hello")).await?;
//!     ferroserve::shutdown_signal().await;
//!     serve.shutdown().await;
//!     Ok(())
//! }
//! ```

#![warn(clippy::print_stdout, clippy::print_stderr)]

// Layers, bottom up: a module imports only those above it in this list (see
// docs/ARCHITECTURE.md; `module-cycles` checks it in CI).
// Core types.
pub mod error;
mod fnv;
mod form;
// What the request path counts (lock-free), for /metrics and the dashboard.
pub mod layer;
mod metrics;
pub mod request;
pub mod response;
pub mod tensor;
// Pure data: the app's configuration and desired state, and where it is kept.
pub mod config;
pub mod store;
// User code behind one seam.
pub mod backend;
pub mod builtin;
// The read model.
mod snapshot;
// Replicas, and the request path over them.
mod replica;
mod router;
// Ingress: HTTP and code.
mod handle;
mod proxy;
// Desired state to running replicas.
mod controller;
// Everything together.
mod serve;
// Many nodes on etcd: registration, election, placement, each node's share.
#[cfg(feature = "cluster")]
pub mod cluster;
// Operating it: the control API.
pub mod control;

pub use backend::{Backend, BackendFactory, Methods, Registry, ReplicaContext};
pub use builtin::builtins;
pub use config::{
    AccessLog, AppConfig, AppSpec, AutoscalingConfig, BackendConfig, BackendKind, BackendSpec,
    ConfigError, CorsOptions, EndpointConfig, EndpointSpec, HttpOptions, Middleware,
    ModelRepository, OnnxBackend, PythonBackend, RegisteredNames, ServedModel, Traffic,
};
pub use control::{ControlOptions, ControlServer};
pub use controller::status::{
    AppStatus, BackendReport, BackendStatus, EndpointReport, HealthCheck, ReplicaState,
    ReplicaStatus,
};
pub use error::{BackendError, BodyError, ErrorKind, ServeError};
pub use form::{Form, FormFile};
pub use handle::{Handle, ResponseRef, wait};
pub use layer::{
    BoxError, BoxRequestBody, CustomLayer, IntoProxyResponse, ProxyBody, ProxyLayer, ProxyService,
};
pub use request::{Arg, CallOptions, HttpParts, Origin, Request};
pub use response::Response;
pub use serve::{ClusterLink, RemoteTarget, Serve, check_app, shutdown_signal};
pub use store::{FileStore, StateStore};

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;

/// The Rust examples of the README and of `docs/`, compiled (and run) as doctests.
#[cfg(doctest)]
pub mod doc_examples {
    #[doc = include_str!("../../../README.md")]
    pub struct Readme;
    #[doc = include_str!("../../../docs/endpoints-and-traffic.md")]
    pub struct EndpointsAndTraffic;
    #[doc = include_str!("../../../docs/methods.md")]
    pub struct Methods;
    #[doc = include_str!("../../../docs/requests-and-responses.md")]
    pub struct RequestsAndResponses;
    #[doc = include_str!("../../../docs/async-and-batching.md")]
    pub struct AsyncAndBatching;
    #[doc = include_str!("../../../docs/middlewares.md")]
    pub struct Middlewares;
    #[doc = include_str!("../../../docs/handles.md")]
    pub struct Handles;
    #[doc = include_str!("../../../docs/streaming.md")]
    pub struct Streaming;
}
