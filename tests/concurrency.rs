//! Async concurrency: one replica serves up to `max_concurrent_queries` awaiting requests at
//! once; `max_concurrent_queries: 1` gives one-at-a-time (actor) semantics.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::BackendConfig;
use futures_util::future::join_all;

use common::{Concurrency, base_url, client, serve, serve_backend, sleeper};

#[tokio::test]
async fn fifty_sleeping_requests_on_one_replica_finish_together() {
    let serve = serve().await;
    let counter = Arc::new(Concurrency::default());
    let config = BackendConfig::default();
    serve_backend(&serve, "sleepy", sleeper(&counter), config, "/sleepy", &[]).await;
    let url = format!("{}/sleepy?ms=100", base_url(&serve));
    let http = client();
    let started = Instant::now();
    let answers = join_all((0..50).map(|_| http.get(&url).send())).await;
    let elapsed = started.elapsed();
    for answer in answers {
        assert_eq!(answer.expect("request").status(), 200);
    }
    assert_eq!(counter.peak(), 50, "all 50 ran at once on the one replica");
    assert!(
        elapsed < Duration::from_millis(1000),
        "50 × 100 ms took {elapsed:?}, not ~100 ms"
    );

    // Through handles too.
    let handle = serve.get_handle("sleepy").expect("handle");
    let started = Instant::now();
    let answers = join_all((0..50).map(|_| handle.remote(100))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn one_concurrent_query_means_one_at_a_time() {
    let serve = serve().await;
    let counter = Arc::new(Concurrency::default());
    let config = BackendConfig::default().max_concurrent_queries(1);
    serve_backend(&serve, "actor", sleeper(&counter), config, None, &[]).await;
    let handle = serve.get_handle("actor").expect("handle");
    let started = Instant::now();
    let answers = join_all((0..5).map(|_| handle.remote(100))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "ran one after another: {:?}",
        started.elapsed()
    );
    assert_eq!(counter.peak(), 1);
    serve.shutdown().await;
}
