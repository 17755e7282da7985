//! A shutdown that answers: requests still running when `graceful_shutdown_timeout_s` ends
//! get a 503 (not a silently closed connection), and workers get a SHUTDOWN frame, then a
//! kill.

mod common;

use std::time::{Duration, Instant};

use common::{client, fetch_json, spawn_cli};

fn app() -> String {
    format!(
        "http:\n  graceful_shutdown_timeout_s: 1\nbackends:\n  crashy:\n    python: crashy:Crashy\n    working_dir: {}\nendpoints:\n  crashy: {{route: /crashy, backend: crashy}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    )
}

fn process_exists(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_grace_get_503_and_workers_are_stopped() {
    let server = spawn_cli(&app());
    let http = client();
    let worker = fetch_json(http.get(server.url("/crashy")))
        .await
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .expect("the worker's pid");
    // A request that would take 5 s.
    let slow = {
        let request = http
            .get(server.url("/crashy"))
            .header("X-SERVE-CALL-METHOD", "slow");
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || server.terminate());

    let answer = slow
        .await
        .expect("no panic")
        .expect("an answer, not a closed connection");
    let answered_after = stopping.elapsed();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    assert_eq!(
        answer.text().await.expect("body"),
        "ferroserve is shutting down\n"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&answered_after),
        "answered {answered_after:?} after SIGTERM, with a 1 s grace"
    );

    let status = stopped.await.expect("no panic");
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(6),
        "exited {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert!(!process_exists(worker), "the worker {worker} was stopped");
}
