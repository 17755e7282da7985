//! The Python worker's idle spin (`FERROSERVE_WORKER_SPIN_US`): a worker spins through the
//! short gaps between close requests, stops spinning once its traffic stops, and a bad value
//! is reported while the worker still serves.

mod common;

use std::time::Duration;

use ferroserve::{AppConfig, BackendKind, Registry};
use serde_json::Value;

use common::process::cpu_time;
use common::{client, get_json, spawn_cli_with};

const MODULE: &str = "import os\n\n\nasync def pid(request):\n    return {\"pid\": os.getpid()}\n";

/// Three backends of the same function: one spinning for up to 20 ms (longer than any gap
/// the test leaves, even on a loaded machine), one that never spins, one with a bad value.
const APP: &str = "backends:
  spinning: {python: 'pid_of:pid', working_dir: ., env: {FERROSERVE_WORKER_SPIN_US: '20000'}}
  still: {python: 'pid_of:pid', working_dir: ., env: {FERROSERVE_WORKER_SPIN_US: '0'}}
  unsure: {python: 'pid_of:pid', working_dir: ., env: {FERROSERVE_WORKER_SPIN_US: fast}}
endpoints:
  spinning: {route: /spinning, backend: spinning}
  still: {route: /still, backend: still}
  unsure: {route: /unsure, backend: unsure}
";

/// The CPU its worker spent on `n` requests to `url`, one at a time, 1 ms apart; and its pid.
async fn cpu_of_close_requests(http: &reqwest::Client, url: &str, n: usize) -> (Duration, u32) {
    let pid_of = |answer: Value| answer["pid"].as_u64().expect("a pid") as u32;
    let pid = pid_of(get_json(http, url).await);
    let before = cpu_time(pid);
    for _ in 0..n {
        let answer = get_json(http, url).await;
        assert_eq!(pid_of(answer), pid, "one replica");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (cpu_time(pid).saturating_sub(before), pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_spins_between_close_requests_and_not_once_they_stop() {
    let server = spawn_cli_with(APP, &[("pid_of.py", MODULE)], &[]);
    let http = client();
    let (still, _) = cpu_of_close_requests(&http, &server.url("/still"), 300).await;
    let (spinning, pid) = cpu_of_close_requests(&http, &server.url("/spinning"), 300).await;
    // Each gap of a millisecond or more is spun through: 300 ms of CPU or so, where the
    // worker that sleeps in its event loop spends a few tens.
    assert!(
        spinning >= Duration::from_millis(150) && spinning >= still * 3,
        "spinning worker {spinning:?}, still worker {still:?}"
    );
    // The last spin (20 ms at most) is over; from now on the worker sleeps.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu_time(pid).saturating_sub(before);
    assert!(
        idle <= Duration::from_millis(30),
        "an idle worker spent {idle:?} of CPU in a second"
    );

    let answer = get_json(&http, server.url("/unsure")).await;
    assert!(answer["pid"].is_u64(), "{answer}");
    let log = server.stderr.lock().expect("lock").clone();
    assert!(
        log.contains("FERROSERVE_WORKER_SPIN_US='fast' is not a number of microseconds from 0 to 100000; using 200"),
        "{log}"
    );
}

#[test]
fn the_docs_spin_example_parses_and_turns_it_off() {
    let yaml = common::doc_yaml("python.md", "## The idle spin");
    let app = AppConfig::from_yaml(&yaml, "docs/python.md", &Registry::new())
        .expect("the example parses");
    let BackendKind::Python(python) = &app.spec.backends[0].kind else {
        panic!("a Python backend");
    };
    assert_eq!(python.env["FERROSERVE_WORKER_SPIN_US"], "0");
}
