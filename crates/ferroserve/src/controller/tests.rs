//! The controller without HTTP: changes that do not wait for each other, restarts and health checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::backends::restart_delay;
use super::*;
use crate::backend::{Backend, Death};
use crate::config::EndpointConfig;
use crate::error::BackendError;
use crate::handle::Caller;
use crate::request::Request;
use crate::response::Response;

fn controller() -> Arc<Controller> {
    let cell = Arc::new(SnapshotCell::default());
    let caller = Caller::new(&cell);
    Controller::new(cell, caller)
}

fn ok() -> BackendFactory {
    BackendFactory::function(|_req| async { Ok(Response::from("ok")) })
}

/// The ids of `backend`'s replicas in the published snapshot.
fn published(controller: &Controller, backend: &str) -> Vec<String> {
    let snapshot = controller.cell.load();
    snapshot.backends.get(backend).map_or_else(Vec::new, |b| {
        b.replicas
            .replicas()
            .iter()
            .map(|r| r.id().to_owned())
            .collect()
    })
}

/// Waits up to `limit` for `done`.
async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[test]
fn restarts_back_off_with_repeated_deaths() {
    assert_eq!(restart_delay(1), Duration::from_millis(100));
    assert_eq!(restart_delay(2), Duration::from_millis(200));
    assert_eq!(restart_delay(4), Duration::from_millis(800));
    assert_eq!(restart_delay(100), Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_delays_no_other_change() {
    let controller = controller();
    controller
        .create_backend("fast", ok(), BackendConfig::default(), None)
        .await
        .expect("fast backend");
    controller
        .create_endpoint("api", EndpointConfig::backend("fast"))
        .expect("endpoint");
    let slow = BackendFactory::new(|ctx| {
        std::thread::sleep(Duration::from_secs(5));
        Ok(crate::builtin::Echo::new(ctx))
    });
    let starting = {
        let controller = controller.clone();
        tokio::spawn(async move {
            controller
                .create_backend("slow", slow, BackendConfig::default(), None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    controller
        .set_traffic("api", Traffic::single("fast"))
        .expect("set_traffic");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "set_traffic waited"
    );

    let started = Instant::now();
    controller
        .update_backend_config("fast", BackendConfig::default().num_replicas(2))
        .await
        .expect("scale up");
    assert!(started.elapsed() < Duration::from_secs(1), "update waited");

    // A replica of another backend dies: it is restarted while `slow` still starts.
    let started = Instant::now();
    controller
        .env
        .deaths
        .send(Death {
            backend: "fast".into(),
            replica: "fast#1".into(),
        })
        .expect("the supervisor listens");
    let restarted = within(Duration::from_secs(1), || {
        published(&controller, "fast") == ["fast#2", "fast#3"]
    })
    .await;
    assert!(
        restarted,
        "restart waited: {:?}",
        published(&controller, "fast")
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let started = Instant::now();
    controller.delete_endpoint("api").expect("delete_endpoint");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "delete_endpoint waited"
    );

    let started = Instant::now();
    controller.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shutdown waited"
    );
    assert!(published(&controller, "fast").is_empty());

    // The slow start ends after the shutdown: refused, its replica stopped, nothing served.
    let outcome = starting.await.expect("no panic");
    assert!(
        matches!(outcome, Err(ServeError::ShuttingDown)),
        "{outcome:?}"
    );
    assert!(controller.cell.load().backends.is_empty());
}

#[tokio::test]
async fn a_name_being_created_is_taken() {
    let controller = controller();
    let slow = BackendFactory::new(|ctx| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(crate::builtin::Echo::new(ctx))
    });
    let first = {
        let controller = controller.clone();
        tokio::spawn(async move {
            controller
                .create_backend("b", slow, BackendConfig::default(), None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = controller
        .create_backend("b", ok(), BackendConfig::default(), None)
        .await;
    assert!(matches!(second, Err(ServeError::Conflict(_))), "{second:?}");
    first.await.expect("no panic").expect("the first one wins");
    assert_eq!(published(&controller, "b"), ["b#1"]);
}

/// Healthy until told otherwise.
struct Flaky(Arc<AtomicBool>);

impl Backend for Flaky {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        Ok(Response::from("ok"))
    }

    async fn check_health(&self) -> Result<(), BackendError> {
        if self.0.load(Ordering::SeqCst) {
            Err(BackendError::msg("lost its GPU"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn unhealthy_replicas_are_replaced() {
    let controller = controller();
    let sick = Arc::new(AtomicBool::new(false));
    let flags = sick.clone();
    // Only the first replica falls ill; its replacement stays well.
    let made = Arc::new(AtomicBool::new(false));
    let factory = BackendFactory::new(move |_ctx| {
        let first = !made.swap(true, Ordering::SeqCst);
        Ok(Flaky(if first {
            flags.clone()
        } else {
            Arc::new(AtomicBool::new(false))
        }))
    });
    controller
        .create_backend(
            "model",
            factory,
            BackendConfig::default().health_checks(0.05, 1.0),
            None,
        )
        .await
        .expect("backend");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        published(&controller, "model"),
        ["model#1"],
        "healthy: kept"
    );
    sick.store(true, Ordering::SeqCst);
    let replaced = within(Duration::from_secs(5), || {
        published(&controller, "model") == ["model#2"]
    })
    .await;
    assert!(replaced, "{:?}", published(&controller, "model"));
    controller.shutdown();
}

/// A backend whose replicas fail their first health check when `broken` is set.
fn maybe_broken(broken: Arc<AtomicBool>) -> BackendFactory {
    BackendFactory::new(move |_ctx| {
        Ok(Flaky(Arc::new(AtomicBool::new(
            broken.load(Ordering::SeqCst),
        ))))
    })
}

fn planned(name: &str, kind: &str, factory: BackendFactory, config: BackendConfig) -> Planned {
    Planned {
        name: name.to_owned(),
        kind: crate::config::BackendKind::Rust(kind.to_owned()),
        factory,
        config,
    }
}

fn endpoints(pairs: &[(&str, &str)]) -> IndexMap<String, EndpointConfig> {
    pairs
        .iter()
        .map(|(name, backend)| {
            let route = format!("/{name}");
            (
                (*name).to_owned(),
                EndpointConfig::backend(*backend).route(route),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_changes_and_removes_and_is_idempotent() {
    let controller = controller();
    let two = BackendConfig::default().num_replicas(2);
    let failures = controller
        .apply(
            vec![
                planned("a", "a", ok(), two.clone()),
                planned("b", "b", ok(), BackendConfig::default()),
            ],
            endpoints(&[("a", "a"), ("b", "b")]),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(published(&controller, "a"), ["a#1", "a#2"]);
    let names: Vec<String> = controller
        .desired_spec()
        .backends
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(
        names,
        ["a", "b"],
        "the app's order, whichever started first"
    );
    let version = controller.cell.load().version;
    // The same app again: nothing changes, nothing is published.
    let failures = controller
        .apply(
            vec![
                planned("a", "a", ok(), two.clone()),
                planned("b", "b", ok(), BackendConfig::default()),
            ],
            endpoints(&[("a", "a"), ("b", "b")]),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(controller.cell.load().version, version);
    // `b` and its endpoint are no longer listed; `a` scales to 3 in place.
    let failures = controller
        .apply(
            vec![planned("a", "a", ok(), two.num_replicas(3))],
            endpoints(&[("a", "a")]),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(published(&controller, "a"), ["a#1", "a#2", "a#3"]);
    assert!(published(&controller, "b").is_empty());
    let status = controller.status();
    assert_eq!(status.status, "RUNNING");
    assert!(status.ready, "{:?}", status.not_ready);
    assert_eq!(status.backends["a"].status, status::BackendStatus::Healthy);
    assert_eq!(status.backends["a"].replicas.len(), 3);
    assert!(!status.endpoints.contains_key("b"));
    let spec = controller.desired_spec();
    assert_eq!(spec.backends.len(), 1);
    assert_eq!(spec.endpoints.len(), 1);
    controller.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_replicas_one_at_a_time_and_a_broken_one_rolls_back() {
    let controller = controller();
    let broken = Arc::new(AtomicBool::new(false));
    let config = BackendConfig::default().num_replicas(2);
    let failures = controller
        .apply(
            vec![planned(
                "m",
                "m",
                maybe_broken(broken.clone()),
                config.clone(),
            )],
            endpoints(&[("m", "m")]),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(published(&controller, "m"), ["m#1", "m#2"]);
    // A new version: new replicas before old ones go, never fewer than 2 serving.
    let watcher = {
        let controller = controller.clone();
        tokio::spawn(async move {
            let mut fewest = usize::MAX;
            for _ in 0..200 {
                fewest = fewest.min(published(&controller, "m").len());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            fewest
        })
    };
    let failures = controller
        .apply(
            vec![planned(
                "m",
                "m",
                maybe_broken(broken.clone()),
                config.clone().version("2"),
            )],
            endpoints(&[("m", "m")]),
        )
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(published(&controller, "m"), ["m#3", "m#4"]);
    assert!(
        watcher.await.expect("no panic") >= 2,
        "never fewer than 2 serving"
    );
    assert_eq!(
        controller.desired_spec().backends[0]
            .config
            .version
            .as_deref(),
        Some("2")
    );
    // A version whose replicas fail their first health check: rolled back.
    broken.store(true, Ordering::SeqCst);
    let failures = controller
        .apply(
            vec![planned(
                "m",
                "m",
                maybe_broken(broken.clone()),
                config.clone().version("3"),
            )],
            endpoints(&[("m", "m")]),
        )
        .await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].1.to_string().contains("rolled back"),
        "{}",
        failures[0].1
    );
    assert_eq!(
        published(&controller, "m"),
        ["m#3", "m#4"],
        "the old version serves"
    );
    let status = controller.status();
    assert_eq!(
        status.backends["m"].status,
        status::BackendStatus::DeployFailed
    );
    assert!(
        status.backends["m"].message.contains("lost its GPU"),
        "{}",
        status.backends["m"].message
    );
    assert_eq!(status.status, "DEPLOY_FAILED");
    assert_eq!(
        controller.desired_spec().backends[0]
            .config
            .version
            .as_deref(),
        Some("2"),
        "the desired state is still the version that serves"
    );
    controller.shutdown();
}
