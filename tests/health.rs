//! Health checks against the real binary: a Python worker whose event loop is stuck is
//! found by its health checks timing out, and replaced; status shows the restart. A stuck
//! worker whose server dies does not outlive it.

mod common;

use std::time::{Duration, Instant};

use common::{client, get_json, spawn_cli};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_stuck_event_loop_is_replaced() {
    let server = spawn_cli(&format!(
        "backends:\n  model:\n    python: 'versioned:Freezable'\n    working_dir: '{}'\n    health_check_period_s: 0.2\n    health_check_timeout_s: 0.3\nendpoints:\n  model: {{route: /model, backend: model}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    ));
    let http = client();
    let pid_of = |v: &Value| v["pid"].as_u64();
    let first: Value = get_json(&http, server.url("/model")).await;
    let stuck = pid_of(&first).expect("a pid");
    freeze(&http, &server).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let replaced = loop {
        let status: Value = get_json(&http, server.control_url("/api/status")).await;
        let replicas = &status["backends"]["model"]["replicas"];
        let running = replicas.as_array().and_then(|all| {
            all.iter()
                .find(|r| r["state"] == "RUNNING" && r["pid"].as_u64() != Some(stuck))
        });
        if let Some(replica) = running {
            break replica.clone();
        }
        assert!(Instant::now() < deadline, "never replaced: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replaced["restarts"], 1, "{replaced:#}");
    let answer: Value = get_json(&http, server.url("/model")).await;
    assert_ne!(pid_of(&answer), Some(stuck), "a new worker answers");
    let log = server.stderr.lock().expect("lock").clone();
    assert!(
        log.contains("checks failed in a row), replacing it"),
        "{log}"
    );
}

/// Blocks the event loop of the worker that answers next (`time.sleep(1000)`); the call
/// itself never answers.
async fn freeze(http: &reqwest::Client, server: &common::Process) {
    let frozen = http
        .get(server.url("/model"))
        .header("X-SERVE-CALL-METHOD", "freeze")
        .timeout(Duration::from_millis(300))
        .send();
    let _ = frozen.await;
}

/// Whether process `pid` still runs (a zombie, waiting for its new parent to reap it,
/// does not).
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        state.split_whitespace().next() != Some("Z")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_worker_ends_soon_after_its_server() {
    // Health checks off: only the server's end can stop this worker.
    let mut server = spawn_cli(&format!(
        "backends:\n  model:\n    python: 'versioned:Freezable'\n    working_dir: '{}'\n    health_check_period_s: 3600\nendpoints:\n  model: {{route: /model, backend: model}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    ));
    let http = client();
    let first: Value = get_json(&http, server.url("/model")).await;
    let pid = first["pid"].as_u64().expect("a pid");
    freeze(&http, &server).await;
    // The server dies without a word to its workers.
    server.child.kill().expect("SIGKILL the server");
    let _ = server.child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "worker {pid} outlived its server by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
