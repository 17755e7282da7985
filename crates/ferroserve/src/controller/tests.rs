//! The controller without HTTP: changes that do not wait for each other, restarts and health checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::backends::restart_delay;
use super::*;
use crate::backend::Backend;
use crate::config::EndpointConfig;
use crate::error::BackendError;
use crate::handle::Caller;
use crate::request::Request;
use crate::response::Response;

fn controller(health_period: Duration) -> Arc<Controller> {
    let cell = Arc::new(SnapshotCell::default());
    let caller = Caller::new(&cell);
    Controller::with_health_checks(cell, caller, health_period)
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
    let controller = controller(HEALTH_CHECK_PERIOD);
    controller
        .create_backend("fast", ok(), BackendConfig::default())
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
                .create_backend("slow", slow, BackendConfig::default())
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
    let controller = controller(HEALTH_CHECK_PERIOD);
    let slow = BackendFactory::new(|ctx| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(crate::builtin::Echo::new(ctx))
    });
    let first = {
        let controller = controller.clone();
        tokio::spawn(async move {
            controller
                .create_backend("b", slow, BackendConfig::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = controller
        .create_backend("b", ok(), BackendConfig::default())
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
    let controller = controller(Duration::from_millis(50));
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
        .create_backend("model", factory, BackendConfig::default())
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
