//! Failures routed around: a dead worker is out of the replica set the moment its socket
//! breaks, and a backend with no live replica hands its traffic share to the endpoint's
//! other backends until it is back.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, PythonBackend, Serve, Traffic};
use http::StatusCode;

use common::{base_url, client, echo, fetch_json, serve, serve_backend, status_and_text};

fn crashy() -> BackendFactory {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    BackendFactory::python(PythonBackend::new("crashy:Crashy").working_dir(dir))
}

/// An endpoint `api` sending 90 % to a Rust `stable` backend and 10 % to a Python `canary`
/// with one replica; `canary` is also reachable alone on `/canary`.
async fn canary_app(failover: bool) -> Serve {
    let serve = serve().await;
    serve
        .create_backend("stable", echo(), BackendConfig::default())
        .await
        .expect("stable");
    serve_backend(
        &serve,
        "canary",
        crashy(),
        BackendConfig::default(),
        "/canary",
        &[],
    )
    .await;
    let traffic = Traffic::new([("stable", 0.9), ("canary", 0.1)]).expect("weights");
    let api = EndpointConfig::traffic(traffic)
        .route("/api")
        .failover(failover);
    serve.create_endpoint("api", api).await.expect("api");
    serve
}

/// Kills the canary's worker, then sends requests to `/api` for a second, 8 at a time;
/// the statuses that were not 2xx.
async fn kill_the_canary_and_count_failures(serve: &Serve) -> Vec<StatusCode> {
    let http = client();
    let base = base_url(serve);
    let killed = http
        .get(format!("{base}/canary"))
        .header("X-SERVE-CALL-METHOD", "exit");
    let (status, _) = status_and_text(killed).await;
    assert_eq!(status, 502, "the request that killed it was in flight");
    let deadline = Instant::now() + Duration::from_secs(1);
    let workers = (0..8).map(|_| {
        let (http, url) = (http.clone(), format!("{base}/api"));
        tokio::spawn(async move {
            let mut failed = Vec::new();
            while Instant::now() < deadline {
                let status = http.get(&url).send().await.expect("an answer").status();
                if !status.is_success() {
                    failed.push(status);
                }
            }
            failed
        })
    });
    let mut failed = Vec::new();
    for worker in workers {
        failed.extend(worker.await.expect("no panic"));
    }
    failed
}

#[tokio::test]
async fn a_dead_canary_hands_its_share_to_the_other_backend() {
    let serve = canary_app(true).await;
    let failed = kill_the_canary_and_count_failures(&serve).await;
    assert!(
        failed.is_empty(),
        "non-2xx while the canary restarted: {failed:?}"
    );
    // It comes back, and gets its share again.
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // 503 (no running replica) until its worker is back: a slow machine restarts a
        // Python worker in more than the second the load above took.
        let (status, text) =
            status_and_text(http.get(format!("{}/canary", base_url(&serve)))).await;
        let back = status == StatusCode::OK
            && serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|answer| answer.get("pid").is_some());
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary did not come back: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn without_failover_the_dead_canarys_share_fails() {
    let serve = canary_app(false).await;
    let failed = kill_the_canary_and_count_failures(&serve).await;
    assert!(
        !failed.is_empty() && failed.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{failed:?}"
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_fails_only_what_it_was_running() {
    let serve = serve().await;
    let config = BackendConfig::default().num_replicas(2);
    serve_backend(&serve, "crashy", crashy(), config, "/crashy", &[]).await;
    let url = format!("{}/crashy?slow=1", base_url(&serve));
    let http = client();
    // Find both workers' process ids: two slow calls at once run on both (one after the
    // other, calls go to the same replica).
    let mut pids = std::collections::BTreeSet::new();
    while pids.len() < 2 {
        let (a, b) = tokio::join!(fetch_json(http.get(&url)), fetch_json(http.get(&url)));
        for answer in [a, b] {
            pids.insert(answer["pid"].as_u64().expect("a pid"));
        }
    }
    let victim = *pids.iter().next().expect("a pid");
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = http.get(&url).send().await.expect("an answer").status();
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !status.is_success() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("no panic");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("kill -9 of one of 2 workers under 32 connections: {failed} of {sent} non-2xx");
    // At most what was in flight on the dead worker: fewer than the 32 connections, and
    // none of the new requests that arrived after its socket broke.
    assert!(failed < 32, "{failed} of {sent} failed");
    assert!(sent > 100, "the load ran: {sent}");
    serve.shutdown().await;
}
