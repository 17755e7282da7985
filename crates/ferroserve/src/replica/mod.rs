//! Replicas: one running instance of a backend, its in-flight count, and how one request runs on it.

mod batch;
mod python_runtime;
mod worker;

pub(crate) use worker::{Death, ReplicaEnv};

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;

use crate::backend::{BackendFactory, BoxFuture, DynBackend, FactoryKind, Methods, ReplicaContext};
use crate::config::BackendConfig;
use crate::error::{BackendError, ServeError};
use crate::request::Request;
use crate::response::Response;
use crate::router::WaitQueue;

/// The in-flight count, alone on its cache line: both cores write it on every request, and
/// the replica's other fields, read on every request, must not share the line (false
/// sharing measured at a few percent of throughput with one replica).
#[repr(align(64))]
struct InFlight(AtomicUsize);

/// One running instance of a backend.
pub(crate) struct Replica {
    /// Requests running on this replica now; never above the backend's `max_concurrent_queries`.
    in_flight: InFlight,
    /// The backend's wait queue, told when a slot frees.
    queue: Arc<WaitQueue>,
    name: ReplicaName,
    methods: Methods,
    batch_methods: Methods,
    batches: Option<batch::BatchQueue>,
    instance: Arc<dyn DynBackend>,
}

/// A request started on a replica: alone, or queued for a batch.
enum Started<'a> {
    One(BoxFuture<'a, Result<Response, crate::error::BackendError>>),
    Batch(BoxFuture<'a, Result<Response, ServeError>>),
}

/// Names one replica in the errors its callers get.
#[derive(Clone)]
pub(crate) struct ReplicaName {
    pub(crate) backend: Arc<str>,
    pub(crate) replica: Arc<str>,
}

impl ReplicaName {
    /// The caller's error for user code that returned `error` (`context` prefixes the
    /// message), or for a replica whose worker died.
    pub(crate) fn failed(&self, error: &BackendError, context: &str) -> ServeError {
        if error.died {
            return ServeError::ReplicaDied {
                backend: self.backend.to_string(),
                replica: self.replica.to_string(),
                message: error.message().to_owned(),
            };
        }
        ServeError::Backend {
            backend: self.backend.to_string(),
            replica: self.replica.to_string(),
            status: error.status(),
            message: format!("{context}{}", error.message()),
        }
    }

    /// The caller's error for user code that panicked.
    pub(crate) fn panicked(
        &self,
        payload: &(dyn std::any::Any + Send),
        context: &str,
    ) -> ServeError {
        ServeError::Panicked {
            backend: self.backend.to_string(),
            replica: self.replica.to_string(),
            message: format!("{context}{}", panic_message(payload)),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Replica {
    /// Makes the instance on a blocking thread and gives it `user_config`.
    pub(crate) async fn start(
        ctx: ReplicaContext,
        factory: &BackendFactory,
        config: &BackendConfig,
        queue: Arc<WaitQueue>,
        env: &ReplicaEnv,
    ) -> Result<Arc<Self>, ServeError> {
        let user_config = &config.user_config;
        let backend: Arc<str> = ctx.backend.as_str().into();
        let id: Arc<str> = ctx.replica.as_str().into();
        let start_failed = {
            let (backend, id) = (backend.clone(), id.clone());
            move |message: String| ServeError::StartFailed {
                backend: backend.to_string(),
                message: format!("replica `{id}`: {message}"),
            }
        };
        let (instance, configured) = match factory.kind() {
            FactoryKind::Rust(make) => {
                let make = make.clone();
                let instance = tokio::task::spawn_blocking(move || make(&ctx))
                    .await
                    .map_err(|e| match e.try_into_panic() {
                        Ok(payload) => start_failed(format!(
                            "the factory panicked: {}",
                            panic_message(&*payload)
                        )),
                        Err(e) => start_failed(e.to_string()),
                    })?
                    .map_err(|e| start_failed(e.to_string()))?;
                (instance, false)
            }
            // A worker gets its user_config with its INIT.
            FactoryKind::Python(spec) => (
                worker::WorkerBackend::start(spec, &ctx, config, env)
                    .await
                    .map_err(&start_failed)?,
                true,
            ),
        };
        let batch_methods = instance.batch_methods();
        let batches = (batch_methods != Methods::Only(Vec::new())).then(|| {
            let policy = batch::BatchPolicy {
                max_batch_size: config.max_batch_size.unwrap_or(1),
                wait: std::time::Duration::from_millis(config.batch_wait_timeout_ms),
            };
            batch::BatchQueue::start(
                policy,
                instance.clone(),
                ReplicaName {
                    backend: backend.clone(),
                    replica: id.clone(),
                },
            )
        });
        let replica = Arc::new(Self {
            in_flight: InFlight(AtomicUsize::new(0)),
            queue,
            methods: instance.methods(),
            batch_methods,
            batches,
            name: ReplicaName {
                backend,
                replica: id,
            },
            instance,
        });
        if !user_config.is_null() && !configured {
            replica
                .reconfigure(user_config)
                .await
                .map_err(|e| start_failed(e.to_string()))?;
        }
        Ok(replica)
    }

    /// The replica's id, unique within its backend.
    pub(crate) fn id(&self) -> &str {
        &self.name.replica
    }

    /// Requests running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.0.load(Ordering::Relaxed)
    }

    /// Takes a slot if fewer than `max` requests run.
    pub(crate) fn try_reserve(&self, max: usize) -> bool {
        if self.in_flight.0.fetch_add(1, Ordering::AcqRel) < max {
            true
        } else {
            self.in_flight.0.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    /// Gives a slot back and wakes one queued request.
    pub(crate) fn release(&self) {
        self.in_flight.0.fetch_sub(1, Ordering::AcqRel);
        self.queue.released();
    }

    /// Runs one request; user errors and panics become typed errors, never a crash.
    pub(crate) fn call(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<Response, ServeError>> + '_ {
        // Start the user future before the first await, boxed, so the future returned here
        // holds a pointer rather than the request: the proxy's per-request future stays small
        // (see docs/BENCHMARKS.md).
        let method = req.method_name();
        let started = match &self.batches {
            Some(batches) if self.batch_methods.contains(method) => {
                Ok(Started::Batch(Box::pin(batches.call(req))))
            }
            _ if self.methods.contains(method) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| self.instance.call(req)))
                    .map(Started::One)
                    .map_err(|payload| self.name.panicked(&*payload, ""))
            }
            _ => Err(ServeError::MethodNotFound {
                backend: self.name.backend.to_string(),
                method: method.to_owned(),
            }),
        };
        async move {
            let one = match started? {
                Started::One(one) => one,
                Started::Batch(batch) => return batch.await,
            };
            match AssertUnwindSafe(one).catch_unwind().await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(error)) => Err(self.name.failed(&error, "")),
                Err(payload) => Err(self.name.panicked(&*payload, "")),
            }
        }
    }

    /// Gives the replica a new `user_config`.
    pub(crate) async fn reconfigure(
        &self,
        user_config: &serde_json::Value,
    ) -> Result<(), ServeError> {
        match AssertUnwindSafe(self.instance.reconfigure(user_config))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ServeError::Backend {
                backend: self.name.backend.to_string(),
                replica: self.name.replica.to_string(),
                status: None,
                message: format!("reconfigure failed: {error}"),
            }),
            Err(payload) => Err(ServeError::Panicked {
                backend: self.name.backend.to_string(),
                replica: self.name.replica.to_string(),
                message: format!("reconfigure panicked: {}", panic_message(&*payload)),
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::request::Arg;
    use crate::response::Response;

    /// A replica of a backend answering "ok", for router tests.
    pub(crate) async fn ok_replica(id: &str, queue: Arc<WaitQueue>) -> Arc<Replica> {
        let factory = BackendFactory::function(|_req| async { Ok(Response::from("ok")) });
        let ctx = ReplicaContext {
            backend: "b".into(),
            replica: id.into(),
            init_args: serde_json::Value::Null,
        };
        Replica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
            queue,
            &ReplicaEnv::detached(),
        )
        .await
        .expect("replica starts")
    }

    #[tokio::test]
    async fn panics_become_errors_and_the_replica_keeps_serving() {
        let factory = BackendFactory::function(|req: Request| async move {
            if req.method_name() == "__call__" && req.text()? == "boom" {
                panic!("user code exploded");
            }
            Ok(Response::from("fine"))
        });
        let ctx = ReplicaContext {
            backend: "b".into(),
            replica: "b#1".into(),
            init_args: serde_json::Value::Null,
        };
        let replica = Replica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
            Arc::new(WaitQueue::default()),
            &ReplicaEnv::detached(),
        )
        .await
        .expect("starts");
        let err = replica
            .call(Request::from_arg(Arg::from("boom")))
            .await
            .expect_err("panics");
        assert!(err.to_string().contains("user code exploded"), "{err}");
        let ok = replica
            .call(Request::from_arg(Arg::from("x")))
            .await
            .expect("still serves");
        assert_eq!(ok.body_text().expect("text"), "fine");
        let err = replica
            .call(Request::from_arg(Arg::from("x")).with_method_name("nope"))
            .await
            .expect_err("unknown method");
        assert_eq!(err.to_string(), "backend `b` has no method `nope`");
    }

    #[tokio::test]
    async fn a_panicking_factory_fails_the_start() {
        let factory = BackendFactory::new(|_ctx| -> Result<crate::builtin::Echo, _> {
            panic!("no model file")
        });
        let ctx = ReplicaContext {
            backend: "b".into(),
            replica: "b#1".into(),
            init_args: serde_json::Value::Null,
        };
        let err = Replica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
            Arc::new(WaitQueue::default()),
            &ReplicaEnv::detached(),
        )
        .await
        .err()
        .expect("start fails");
        assert!(err.to_string().contains("no model file"), "{err}");
    }
}
