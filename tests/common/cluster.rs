//! Ferroserve nodes in cluster mode for the tests: `ferroserve start --cluster` on
//! 127.0.0.1, .2, .3, …, each with its own ports, over a test etcd; status and waits.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Process, ferroserve_bin, spawn_listening, write_config};

/// Starts node `name` on `ip` (127.0.0.N) in the cluster at `etcd_url`, with `app` as the
/// app file (saved only if the cluster has none).
pub fn start_node(etcd_url: &str, name: &str, ip: &str, app: &str, extra: &[&str]) -> Process {
    let (dir, path) = write_config(app);
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "start",
        path.as_str(),
        "--host",
        ip,
        "--port",
        "0",
        "--control-host",
        ip,
        "--cluster",
        etcd_url,
        "--node-name",
        name,
        "--advertise",
        ip,
        "--peer-port",
        "0",
    ];
    args.extend_from_slice(extra);
    spawn_listening(&ferroserve_bin(), &args, &[], Some(dir))
}

/// The control token of test nodes that listen off loopback.
pub const TEST_TOKEN: &str = "cluster-test-token";

/// `GET /api/status` of `node`, or `None` if it does not answer.
pub async fn status(node: &Process) -> Option<Value> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client builds");
    // With the token of nodes whose control API is off loopback (the others ignore it).
    let answer = http
        .get(node.control_url("/api/status"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}

/// Waits up to 10 s until GET `url` answers 200, failing with `what` otherwise.
pub async fn wait_serves(url: String, what: &str) {
    let http = super::client();
    wait_until(Duration::from_secs(10), what, || async {
        let answer = http.get(&url).send().await;
        answer.is_ok_and(|a| a.status() == 200)
    })
    .await;
}

/// Polls until `check` holds, or fails naming `what` after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node that `node`'s status says leads, if it says one does and it is itself.
pub async fn is_leader(node: &Process) -> bool {
    status(node)
        .await
        .is_some_and(|s| s["cluster"]["is_leader"] == Value::Bool(true))
}

/// How many replicas of `backend` `node` runs (`RUNNING`), per its status.
pub async fn running_replicas(node: &Process, backend: &str) -> Option<u64> {
    let s = status(node).await?;
    s["backends"][backend]["running_replicas"].as_u64()
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered 2xx.
    pub ok: usize,
    /// The others: when (since the start) and what.
    pub failed: Vec<(Duration, String)>,
}

/// `concurrency` clients sending GETs round the `urls`, each with a 10 s timeout, until
/// stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts the clients.
    pub fn start(urls: Vec<String>, concurrency: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client builds");
        let tasks = (0..concurrency)
            .map(|i| {
                let (stop, http, urls) = (stop.clone(), http.clone(), urls.clone());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    let mut n = i;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let url = &urls[n % urls.len()];
                        n += 1;
                        match http.get(url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                report.ok += 1;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let text = r.text().await.unwrap_or_default();
                                report
                                    .failed
                                    .push((started.elapsed(), format!("{url}: {status} {text}")));
                            }
                            Err(e) => report
                                .failed
                                .push((started.elapsed(), format!("{url}: {e}"))),
                        }
                    }
                    report
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients and adds up what they saw.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for task in self.tasks {
            let report = task.await.expect("a load task ends");
            all.ok += report.ok;
            all.failed.extend(report.failed);
        }
        all.failed.sort_by_key(|(at, _)| *at);
        all
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to `node`.
pub fn signal(node: &Process, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &node.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// The total of `backend`'s running replicas over `nodes`.
pub async fn total_running(nodes: &[&Process], backend: &str) -> u64 {
    let mut total = 0;
    for node in nodes {
        total += running_replicas(node, backend).await.unwrap_or(0);
    }
    total
}
