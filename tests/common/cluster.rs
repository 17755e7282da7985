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

/// `GET /api/status` of `node`, or `None` if it does not answer.
pub async fn status(node: &Process) -> Option<Value> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client builds");
    let answer = http
        .get(node.control_url("/api/status"))
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
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
