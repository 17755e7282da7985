//! Zero failed requests through every kind of update, including failed ones: the real
//! binary, `ferroserve start` and `ferroserve deploy`, a Python backend, and a client at
//! concurrency 16 throughout — (a) scale 2 → 4 → 1, (e) a `user_config` change, (b) a new
//! version, (c) a new version that fails to import, (d) one whose health check fails. Also
//! `ferroserve status`, `config` and `shutdown`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{client, ferroserve_bin, spawn_listening};
use serde_json::Value;

fn app(num_replicas: usize, target: &str, version: &str, greeting: &str) -> String {
    format!(
        "backends:\n  model:\n    python: '{target}'\n    working_dir: '{}'\n    num_replicas: {num_replicas}\n    init_args: ['{version}']\n    user_config: {{greeting: {greeting}}}\n    health_check_period_s: 0.5\nendpoints:\n  model: {{route: /model, backend: model}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    )
}

/// `ferroserve deploy` of `yaml` against `control`: its exit code and stderr.
async fn deploy(control: &str, yaml: String) -> (Option<i32>, String) {
    let control = control.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.yaml");
        std::fs::write(&path, yaml).expect("written");
        let out = std::process::Command::new(ferroserve_bin())
            .args(["deploy", path.to_str().expect("utf-8"), "--timeout-s", "60"])
            .env("FERROSERVE_ADDRESS", &control)
            .output()
            .expect("ferroserve deploy runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("no panic")
}

/// The model's status each time it changed, polled every 10 ms until `stop`.
fn watch_status(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut seen: Vec<String> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(response) = http.get(&url).send().await
                && let Ok(status) = response.json::<Value>().await
            {
                let now = status["backends"]["model"]["status"]
                    .as_str()
                    .unwrap_or("absent")
                    .to_owned();
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    })
}

/// What one step of the run saw: its name, failed requests, and the status transitions.
struct Step {
    name: &'static str,
    failures: Vec<String>,
    transitions: Vec<String>,
    versions: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_update_keeps_serving_with_zero_failed_requests() {
    let server = spawn_listening(&ferroserve_bin(), &["start", "--port", "0"], &[], None);
    let control = server.control_url("");
    let status_url = server.control_url("/api/status");
    let http = client();
    let (code, stderr) = deploy(&control, app(2, "versioned:Model", "1", "hello")).await;
    assert_eq!(code, Some(0), "{stderr}");

    // Sixteen clients for the whole run; each outcome is tagged with the step it fell in.
    let step = Arc::new(std::sync::Mutex::new("start"));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::<(
        &'static str,
        Result<Value, String>,
    )>::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (http.clone(), server.url("/model"));
            let (step, stop, outcomes) = (step.clone(), stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.json::<Value>().await.map_err(|e| format!("body: {e}"))
                        }
                        Ok(r) => Err(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Err(format!("connection: {e}")),
                    };
                    let now = *step.lock().expect("lock");
                    outcomes.lock().expect("lock").push((now, outcome));
                }
            })
        })
        .collect();

    let steps: [(&'static str, String, bool); 6] = [
        (
            "(a) scale 2 -> 4",
            app(4, "versioned:Model", "1", "hello"),
            true,
        ),
        (
            "(a) scale 4 -> 1",
            app(1, "versioned:Model", "1", "hello"),
            true,
        ),
        (
            "(e) user_config",
            app(1, "versioned:Model", "1", "bonjour"),
            true,
        ),
        (
            "(b) new version",
            app(2, "versioned:Model", "2", "bonjour"),
            true,
        ),
        (
            "(c) fails to import",
            app(2, "broken_import:Model", "3", "bonjour"),
            false,
        ),
        (
            "(d) health check fails",
            app(2, "versioned:Sick", "3", "bonjour"),
            false,
        ),
    ];
    let mut report = Vec::new();
    for (name, yaml, succeeds) in steps {
        *step.lock().expect("lock") = name;
        let watching = Arc::new(AtomicBool::new(false));
        let watcher = watch_status(http.clone(), status_url.clone(), watching.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (code, stderr) = deploy(&control, yaml).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        watching.store(true, Ordering::Relaxed);
        let transitions = watcher.await.expect("no panic");
        if succeeds {
            assert_eq!(code, Some(0), "{name}: {stderr}");
        } else {
            assert_eq!(code, Some(1), "{name} must fail: {stderr}");
            assert!(
                stderr.contains("DEPLOY_FAILED") || stderr.contains("the deploy failed"),
                "{stderr}"
            );
            assert!(stderr.contains("rolled back"), "{name}: {stderr}");
        }
        let mine: Vec<_> = outcomes
            .lock()
            .expect("lock")
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, o)| o.clone())
            .collect();
        let mut versions: Vec<String> = mine
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|v| {
                format!(
                    "{}/{}",
                    v["version"].as_str().unwrap_or("?"),
                    v["greeting"].as_str().unwrap_or("?")
                )
            })
            .collect();
        versions.dedup();
        report.push(Step {
            name,
            failures: mine.into_iter().filter_map(Result::err).collect(),
            transitions,
            versions,
        });
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("no panic");
    }
    let total = outcomes.lock().expect("lock").len();
    let summary: Vec<String> = report
        .iter()
        .map(|s| {
            format!(
                "{}: {} failed; status {:?}; answered {:?}",
                s.name,
                s.failures.len(),
                s.transitions,
                s.versions
            )
        })
        .collect();
    println!("{total} requests\n{}", summary.join("\n"));
    for s in &report {
        assert!(
            s.failures.is_empty(),
            "{}: {:?}\n{}",
            s.name,
            &s.failures[..s.failures.len().min(5)],
            summary.join("\n")
        );
    }
    let by_name = |n: &str| report.iter().find(|s| s.name == n).expect("a step");
    let ends = |s: &Step, last: &str| s.transitions.last().map(String::as_str) == Some(last);
    assert!(
        by_name("(a) scale 2 -> 4")
            .transitions
            .contains(&"UPDATING".to_owned()),
        "{summary:?}"
    );
    assert!(ends(by_name("(a) scale 2 -> 4"), "HEALTHY"), "{summary:?}");
    assert!(ends(by_name("(b) new version"), "HEALTHY"), "{summary:?}");
    assert!(
        by_name("(b) new version")
            .versions
            .iter()
            .any(|v| v.starts_with("2/")),
        "{summary:?}"
    );
    assert!(
        by_name("(e) user_config")
            .versions
            .iter()
            .any(|v| v == "1/bonjour"),
        "{summary:?}"
    );
    for failing in ["(c) fails to import", "(d) health check fails"] {
        let s = by_name(failing);
        assert!(ends(s, "DEPLOY_FAILED"), "{summary:?}");
        assert!(
            s.versions.iter().all(|v| v.starts_with("2/")),
            "the old version serves: {summary:?}"
        );
    }

    // status, config and shutdown through the CLI.
    let cli = |args: &[&str]| {
        std::process::Command::new(ferroserve_bin())
            .args(args)
            .env("FERROSERVE_ADDRESS", &control)
            .output()
            .expect("runs")
    };
    let status = cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("DEPLOY_FAILED") && text.contains("model#"),
        "{text}"
    );
    let config = cli(&["config"]);
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(
        config.status.success() && text.contains("versioned:Model")
            || text.contains("target: versioned:Model"),
        "{text}"
    );
    let shutdown = cli(&["shutdown"]);
    assert!(
        shutdown.status.success(),
        "{}",
        String::from_utf8_lossy(&shutdown.stderr)
    );
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().expect("wait works").is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
