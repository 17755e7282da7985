//! The controller never holds a change back behind a replica that is slow to start: other
//! changes, requests and a shutdown go on at once (the desired state is apart from the
//! replicas that are starting).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, ServeError, Traffic};

use common::{base_url, client, serve, serve_echo};

/// Asserts that `change` took well under a second.
fn quick(what: &str, started: Instant) {
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_takes_5_s_to_start_delays_no_other_change() {
    let serve = Arc::new(serve().await);
    serve_echo(&serve, "echo", "/echo", &[http::Method::GET]).await;
    let slow = BackendFactory::new(|ctx| {
        std::thread::sleep(Duration::from_secs(5));
        Ok(ferroserve::builtin::Echo::new(ctx))
    });
    let starting = {
        let serve = serve.clone();
        tokio::spawn(async move {
            serve
                .create_backend("slow", slow, BackendConfig::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let http = client();
    let r = http
        .get(format!("{}/echo", base_url(&serve)))
        .send()
        .await
        .expect("served meanwhile");
    assert_eq!(r.status(), 200);
    quick("a request", started);

    let started = Instant::now();
    serve
        .update_backend_config("echo", BackendConfig::default().num_replicas(2))
        .await
        .expect("scale up");
    quick("update_backend_config", started);

    let started = Instant::now();
    serve
        .set_traffic("echo", Traffic::single("echo"))
        .await
        .expect("set_traffic");
    quick("set_traffic", started);

    let started = Instant::now();
    serve
        .create_endpoint("other", EndpointConfig::backend("echo"))
        .await
        .expect("create_endpoint");
    serve
        .delete_endpoint("other")
        .await
        .expect("delete_endpoint");
    quick("create_endpoint and delete_endpoint", started);

    let started = Instant::now();
    serve.shutdown().await;
    quick("shutdown", started);

    // The slow start finishes into a stopped server: refused, and nothing is served.
    let outcome = starting.await.expect("no panic");
    assert!(
        matches!(outcome, Err(ServeError::ShuttingDown)),
        "{outcome:?}"
    );
    assert!(serve.list_backends().is_empty());
    let refused = serve
        .create_backend(
            "late",
            BackendFactory::function(|_req| async { Ok("x".into()) }),
            BackendConfig::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(ServeError::ShuttingDown)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_start_side_by_side() {
    // Each replica takes 600 ms to make: two one after the other would take 1.2 s.
    let serve = serve().await;
    let slow = BackendFactory::new(|ctx| {
        std::thread::sleep(Duration::from_millis(600));
        Ok(ferroserve::builtin::Echo::new(ctx))
    });
    let started = Instant::now();
    serve
        .create_backend("slow", slow, BackendConfig::default().num_replicas(2))
        .await
        .expect("starts");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1100),
        "2 replicas took {took:?}"
    );
    assert_eq!(serve.status().backends["slow"].running_replicas, 2);
    serve.shutdown().await;
}
