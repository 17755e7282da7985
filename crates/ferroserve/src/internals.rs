//! Hot-path pieces behind the `internals` feature, for the criterion micro-benchmarks only; not a stable API.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{BackendFactory, ReplicaContext, ReplicaEnv};
use crate::error::ServeError;
use crate::proxy::convert;
use crate::replica::{LocalReplica, Replica};
use crate::request::Request;
use crate::response::Response;
use crate::router::{ReplicaSet, WaitQueue};
use crate::snapshot::{RouteTable, WeightedChoice};

/// A route table of endpoint indexes.
pub struct Routes(RouteTable<usize>);

impl Routes {
    /// A table of these routes; each maps to its index.
    pub fn new(routes: &[&str]) -> Self {
        let mut table = RouteTable::default();
        for (i, route) in routes.iter().enumerate() {
            table.insert(route, i);
        }
        Self(table)
    }

    /// The longest route matching `path`.
    pub fn lookup(&self, path: &str) -> Option<usize> {
        self.0.lookup(path).copied()
    }
}

/// A traffic policy over backend indexes.
pub struct Traffic(WeightedChoice<usize>);

impl Traffic {
    /// Backends `0..weights.len()` with these weights.
    pub fn new(weights: &[f64]) -> Self {
        Self(WeightedChoice::new(weights.iter().copied().zip(0..)))
    }

    /// Picks a backend.
    pub fn choose(&self) -> usize {
        *self.0.choose()
    }
}

/// A replica set of no-op replicas.
pub struct Replicas(ReplicaSet);

impl Replicas {
    /// `n` replicas, each running at most `max` requests.
    pub async fn new(n: usize, max: usize) -> Result<Self, ServeError> {
        let factory = BackendFactory::function(|_req| async { Ok(Response::static_text("ok")) });
        let mut replicas: Vec<Arc<dyn Replica>> = Vec::with_capacity(n);
        for i in 0..n {
            let ctx = ReplicaContext {
                backend: "bench".into(),
                replica: format!("bench#{i}"),
                init_args: serde_json::Value::Null,
            };
            let config = crate::config::BackendConfig::default();
            replicas
                .push(LocalReplica::start(ctx, &factory, &config, &ReplicaEnv::detached()).await?);
        }
        Ok(Self(ReplicaSet::new(
            replicas,
            max,
            Arc::new(WaitQueue::default()),
        )))
    }

    /// Takes a slot by two choices and frees it; false when all are full.
    pub fn acquire_release(&self) -> bool {
        self.0.try_acquire().is_some()
    }
}

/// Builds the request a replica sees from HTTP parts and a body.
pub fn request_from_http(parts: http::request::Parts, body: Bytes) -> Result<Request, ServeError> {
    convert::into_request(parts, body)
}

/// Turns a replica's answer into the HTTP response the proxy writes.
pub fn response_to_http(
    response: Response,
) -> http::Response<impl http_body::Body<Data = Bytes> + use<>> {
    convert::into_http(Ok(response))
}
