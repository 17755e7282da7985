//! A local replica: a backend instance in this process (Rust) or behind a worker it owns (Python), its methods, and its batch queue.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::batch::{BatchPolicy, BatchQueue};
use super::{Replica, ReplicaCall, ReplicaName};
use crate::backend::{BackendFactory, DynBackend, Methods, ReplicaContext, ReplicaEnv, Slots};
use crate::config::BackendConfig;
use crate::error::ServeError;
use crate::request::Request;

/// One running instance of a backend, on this machine.
pub(crate) struct LocalReplica {
    /// Requests running on this replica now; never above the backend's
    /// `max_concurrent_queries`, counting the calls a worker still runs for callers that left.
    slots: Arc<Slots>,
    name: ReplicaName,
    methods: Methods,
    batch_methods: Methods,
    batches: Option<BatchQueue>,
    instance: Arc<dyn DynBackend>,
}

impl LocalReplica {
    /// Makes the instance with `factory` and gives it `user_config`.
    pub(crate) async fn start(
        ctx: ReplicaContext,
        factory: &BackendFactory,
        config: &BackendConfig,
        env: &ReplicaEnv,
    ) -> Result<Arc<Self>, ServeError> {
        let name = ReplicaName {
            backend: ctx.backend.as_str().into(),
            replica: ctx.replica.as_str().into(),
        };
        let start_failed = |message: String| ServeError::StartFailed {
            backend: ctx.backend.clone(),
            message: format!("replica `{}`: {message}", ctx.replica),
        };
        let slots = Arc::new(Slots::default());
        let made = factory
            .instantiate(&ctx, config, env, &slots)
            .await
            .map_err(start_failed)?;
        let instance = made.backend;
        let batch_methods = instance.batch_methods();
        let batches = (batch_methods != Methods::Only(Vec::new())).then(|| {
            let policy = BatchPolicy {
                max_batch_size: config.max_batch_size.unwrap_or(1),
                wait: std::time::Duration::from_millis(config.batch_wait_timeout_ms),
            };
            let stats = env.metrics.backend(&ctx.backend);
            BatchQueue::start(policy, instance.clone(), name.clone(), stats)
        });
        let replica = Arc::new(Self {
            slots,
            methods: instance.methods(),
            batch_methods,
            batches,
            name,
            instance,
        });
        if !config.user_config.is_null() && !made.configured {
            replica
                .reconfigure(&config.user_config)
                .await
                .map_err(|e| start_failed(e.to_string()))?;
        }
        Ok(replica)
    }
}

impl Replica for LocalReplica {
    fn id(&self) -> &str {
        &self.name.replica
    }

    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn call(&self, req: Request) -> ReplicaCall<'_> {
        // Start the user future before the first await, boxed, so the future returned here
        // holds a pointer rather than the request: the proxy's per-request future stays small
        // (see docs/BENCHMARKS.md).
        let method = req.method_name();
        match &self.batches {
            Some(batches) if self.batch_methods.contains(method) => {
                ReplicaCall::typed(Box::pin(batches.call(req)))
            }
            _ if self.methods.contains(method) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.instance.call(req))) {
                    Ok(future) => ReplicaCall::user(future, &self.name),
                    Err(payload) => ReplicaCall::refused(self.name.panicked(&*payload, "")),
                }
            }
            _ => ReplicaCall::refused(ServeError::MethodNotFound {
                backend: self.name.backend.to_string(),
                method: method.to_owned(),
            }),
        }
    }

    fn reconfigure<'a>(
        &'a self,
        user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ServeError>> {
        Box::pin(async move {
            match AssertUnwindSafe(self.instance.reconfigure(user_config))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(self.name.failed(&error, "reconfigure failed: ")),
                Err(payload) => Err(self.name.panicked(&*payload, "reconfigure panicked: ")),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        self.instance.stop()
    }

    fn pid(&self) -> Option<u32> {
        self.instance.pid()
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ServeError>> {
        Box::pin(async move {
            match AssertUnwindSafe(self.instance.check_health())
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(self.name.failed(&error, "health check failed: ")),
                Err(payload) => Err(self.name.panicked(&*payload, "health check panicked: ")),
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::request::Arg;
    use crate::response::Response;

    /// A replica of a backend answering "ok", for router tests.
    pub(crate) async fn ok_replica(id: &str) -> Arc<LocalReplica> {
        let factory = BackendFactory::function(|_req| async { Ok(Response::from("ok")) });
        let ctx = ReplicaContext {
            backend: "b".into(),
            replica: id.into(),
            init_args: serde_json::Value::Null,
        };
        LocalReplica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
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
        let replica = LocalReplica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
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
        let err = LocalReplica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
            &ReplicaEnv::detached(),
        )
        .await
        .err()
        .expect("start fails");
        assert!(err.to_string().contains("no model file"), "{err}");
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;
    use crate::backend::Backend;
    use crate::error::BackendError;
    use crate::response::Response;

    struct Sick;

    impl Backend for Sick {
        async fn call(&self, _req: Request) -> Result<Response, BackendError> {
            Ok(Response::from("ok"))
        }

        async fn check_health(&self) -> Result<(), BackendError> {
            Err(BackendError::msg("model file is gone"))
        }
    }

    async fn start(factory: BackendFactory) -> Arc<LocalReplica> {
        let ctx = ReplicaContext {
            backend: "b".into(),
            replica: "b#1".into(),
            init_args: serde_json::Value::Null,
        };
        LocalReplica::start(
            ctx,
            &factory,
            &BackendConfig::default(),
            &ReplicaEnv::detached(),
        )
        .await
        .expect("starts")
    }

    #[tokio::test]
    async fn backends_are_healthy_unless_they_say_otherwise() {
        let fine = start(BackendFactory::function(|_req| async {
            Ok(Response::from("ok"))
        }))
        .await;
        fine.check_health().await.expect("healthy by default");
        let sick = start(BackendFactory::new(|_ctx| Ok(Sick))).await;
        let err = sick.check_health().await.expect_err("unhealthy");
        assert_eq!(
            err.to_string(),
            "backend `b` (replica `b#1`) failed: health check failed: model file is gone"
        );
    }
}
