//! Cancellation reaches the worker: a call whose caller left (timed out, or hung up) is
//! cancelled in the worker, and a call that cannot be interrupted keeps its replica slot
//! until it returns, so a worker never runs more calls than its limit.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, PythonBackend, Serve};
use futures_util::future::join_all;
use serde_json::Value;

use common::{base_url, client, fetch_json, serve, status_and_text};

async fn cancellable(config: BackendConfig, endpoint: EndpointConfig) -> Serve {
    let serve = serve().await;
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    let backend =
        BackendFactory::python(PythonBackend::new("cancellable:Cancellable").working_dir(dir));
    serve
        .create_backend("c", backend, config)
        .await
        .expect("backend");
    serve
        .create_endpoint("c", endpoint)
        .await
        .expect("endpoint");
    serve
}

async fn stats(serve: &Serve) -> Value {
    let stats = client()
        .get(format!("{}/c", base_url(serve)))
        .header("X-SERVE-CALL-METHOD", "stats");
    fetch_json(stats).await
}

/// Waits up to 5 s for the worker's stats to satisfy `done`.
async fn eventually(serve: &Serve, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = stats(serve).await;
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_abandoned_calls_leave_no_task_behind() {
    let endpoint = EndpointConfig::backend("c")
        .route("/c")
        .request_timeout(Duration::from_millis(200));
    let serve = cancellable(BackendConfig::default(), endpoint).await;
    let baseline = stats(&serve).await["tasks"].as_u64().expect("tasks");
    let url = format!("{}/c", base_url(&serve));
    // 50 time out on the endpoint's request_timeout_s: 504 with the reason.
    let timed_out = join_all(
        (0..50).map(|_| status_and_text(client().get(&url).header("X-SERVE-CALL-METHOD", "hang"))),
    )
    .await;
    for (status, body) in &timed_out {
        assert_eq!(*status, 504);
        assert_eq!(body, "no answer within the 0.2s request_timeout_s allows\n");
    }
    // 50 callers hang up before the answer.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let hung_up = join_all((0..50).map(|_| {
        impatient
            .get(&url)
            .header("X-SERVE-CALL-METHOD", "hang")
            .send()
    }))
    .await;
    assert!(hung_up.iter().all(Result::is_err), "every caller gave up");
    let after = eventually(&serve, |s| s["cancelled"] == 100).await;
    assert_eq!(
        after["cancelled"], 100,
        "every call was cancelled in the worker: {after}"
    );
    assert_eq!(
        after["tasks"], baseline,
        "the worker's tasks are back to {baseline}: {after}"
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_be_interrupted_keeps_its_slot() {
    let config = BackendConfig::default().max_concurrent_queries(2);
    let serve = cancellable(config, EndpointConfig::backend("c").route("/c")).await;
    let url = format!("{}/c", base_url(&serve));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    // Six callers of a plain method that takes 0.5 s, each giving up after 0.1 s.
    let gave_up = join_all((0..6).map(|_| {
        impatient
            .get(&url)
            .header("X-SERVE-CALL-METHOD", "busy")
            .send()
    }))
    .await;
    assert!(gave_up.iter().all(Result::is_err));
    // The two calls the worker took run on, and hold both slots until they return: the
    // four others never reached it, although their callers left before either returned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = stats(&serve).await;
    assert_eq!(
        after["started"], 2,
        "the worker ran no more than its limit: {after}"
    );
    // The slots are free again afterwards.
    let (status, body) =
        status_and_text(client().get(&url).header("X-SERVE-CALL-METHOD", "busy")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "done"));
    serve.shutdown().await;
}
