//! The dashboard's Cluster panel in a real browser: in cluster mode (a test etcd and two
//! nodes) the page of the node that does not lead must show the nodes, the leader and the
//! replicas as `/api/status` does. Screenshots go to `target/dashboard-screenshots/`.
//!
//! Without chromium (or node), or etcd, the test prints a SKIP line, unless
//! `FERROSERVE_REQUIRE_BROWSER=1` or `FERROSERVE_REQUIRE_ETCD=1` (CI) makes that a failure.

mod common;

use std::time::{Duration, Instant};

use common::browser::{browse, browser_ready, expected, rows, screenshots};
use common::cluster::{is_leader, start_node, wait_until};
use common::etcd::{EtcdCluster, etcd_or_skip};
use serde_json::Value;

/// The app of the cluster test: three replicas of `echo` (one CPU each) and one of `gpu`,
/// which asks for a GPU that no node has.
const CLUSTER_APP: &str = "\
backends:
  echo: {builtin: echo, num_replicas: 3, num_cpus: 1}
  gpu: {builtin: echo, num_replicas: 1, num_gpus: 1}
endpoints:
  echo: {route: /echo, backend: echo}
";

/// A CPU or GPU count as the page writes it: `2`, `0.5`.
fn amount(v: &Value) -> String {
    let v = (v.as_f64().unwrap_or(f64::NAN) * 10.0).round() / 10.0;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Whether `status`'s cluster has `nodes` nodes, each running the replicas placed on it,
/// and the app is placed and applied at its latest revision.
fn cluster_settled(status: &Value, nodes: usize) -> bool {
    let c = &status["cluster"];
    let Some(all) = c["nodes"].as_object() else {
        return false;
    };
    let placed = &c["placement"]["backends"];
    let runs_its_share = all.iter().all(|(name, node)| {
        placed.as_object().is_some_and(|backends| {
            backends.iter().all(|(backend, share)| {
                let want = share[name].as_u64().unwrap_or(0);
                let have = node["replicas"][backend].as_array().map(Vec::len);
                have == Some(want as usize)
            })
        })
    });
    status["status"] == "RUNNING"
        && all.len() == nodes
        && runs_its_share
        && c["app_revision"].as_i64().is_some()
        && c["applied_revision"] == c["app_revision"]
        && c["placement"]["app_revision"] == c["app_revision"]
}

/// `GET /api/status` of `node` once its cluster has settled (at most 30 s).
async fn settled_status(node: &common::Process, nodes: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = common::cluster::status(node).await.unwrap_or(Value::Null);
        if cluster_settled(&status, nodes) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never settled: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the page's node table should show for `status`'s cluster, by node: proxy, CPUs,
/// memory (GiB), GPUs, and the replicas it runs per backend (`echo 2 · other 1`).
fn expected_nodes(status: &Value) -> Vec<Vec<String>> {
    let nodes = status["cluster"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    nodes
        .iter()
        .map(|(name, node)| {
            let replicas = node["replicas"].as_object().cloned().unwrap_or_default();
            let counts: Vec<String> = replicas
                .iter()
                .filter_map(|(backend, ids)| {
                    let n = ids.as_array().map_or(0, Vec::len);
                    (n > 0).then(|| format!("{backend} {n}"))
                })
                .collect();
            let memory = node["memory_bytes"].as_f64().unwrap_or(f64::NAN) / (1u64 << 30) as f64;
            vec![
                name.clone(),
                node["proxy"].as_str().unwrap_or("?").to_owned(),
                amount(&node["cpus"]),
                format!("{memory:.1}"),
                amount(&node["gpus"]),
                counts.join(" · "),
            ]
        })
        .collect()
}

/// Cluster mode: a 1-member etcd and two nodes. The dashboard of the node that does not
/// lead shows the Cluster panel: both nodes with their resources and replicas as its
/// `/api/status` reports them, the leader marked, this node, the revisions, and the
/// replica that no node has room for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_the_page_shows_the_cluster() {
    if !browser_ready() {
        return;
    }
    let Some(bin) = etcd_or_skip("the dashboard's cluster panel") else {
        return;
    };
    let etcd = EtcdCluster::start(bin, 1);
    // n1, up first, leads; it has room for one replica of `echo`, n2 for two.
    let n1 = start_node(
        &etcd.url(),
        "n1",
        "127.0.0.1",
        CLUSTER_APP,
        &["--cpus", "1", "--gpus", "0", "--memory-bytes", "4294967296"],
    );
    wait_until(Duration::from_secs(15), "n1 leads", || is_leader(&n1)).await;
    let n2 = start_node(
        &etcd.url(),
        "n2",
        "127.0.0.2",
        CLUSTER_APP,
        &["--cpus", "2", "--gpus", "0", "--memory-bytes", "6442450944"],
    );
    let before = settled_status(&n2, 2).await;

    let shots = screenshots("cluster");
    let control = n2.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "--cluster", "2"]).await;
    let after = settled_status(&n2, 2).await;
    let nodes = expected_nodes(&before);
    assert_eq!(
        nodes,
        expected_nodes(&after),
        "the cluster changed meanwhile"
    );
    assert_eq!(before["cluster"]["leader"], after["cluster"]["leader"]);

    // The node table: both nodes, as /api/status reports them.
    let panel = &report["cluster"];
    let cols = ["name", "proxy", "cpus", "memory", "gpus", "replicas"];
    let shown: Vec<Vec<String>> = panel["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no Cluster panel: {report:#}"))
        .iter()
        .map(|row| {
            cols.iter()
                .map(|c| row[c].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .collect();
    assert_eq!(shown, nodes, "{report:#}");
    // The placement by resources: n1 runs one `echo`, n2 two; their memory in GiB.
    let column = |i: usize| -> Vec<&str> { shown.iter().map(|row| row[i].as_str()).collect() };
    assert_eq!(column(0), ["n1", "n2"]);
    assert_eq!(column(5), ["echo 1", "echo 2"]);
    assert_eq!(column(3), ["4.0", "6.0"]);

    // The leader, marked, and this node.
    let c = &before["cluster"];
    assert_eq!(c["leader"], "n1");
    assert_eq!(c["is_leader"], false);
    let facts = &panel["facts"];
    assert_eq!(facts["node"], "n2", "{report:#}");
    assert_eq!(facts["leader"], "n1", "{report:#}");
    assert_eq!(facts["registered"], "yes", "{report:#}");
    let revisions = format!("applied {} of {}", c["applied_revision"], c["app_revision"]);
    assert_eq!(facts["app revision"], revisions.as_str(), "{report:#}");
    let marked: Vec<(&str, bool, &Value)> = panel["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["name"].as_str().unwrap_or("?"),
                row["leader"] == true,
                &row["marks"],
            )
        })
        .collect();
    assert_eq!(
        marked,
        [
            ("n1", true, &serde_json::json!(["leader"])),
            ("n2", false, &serde_json::json!(["this node"])),
        ],
        "{report:#}"
    );
    assert!(
        panel["summary"]
            .as_str()
            .is_some_and(|s| s.contains("node n2") && s.contains("leader n1")),
        "{report:#}"
    );
    assert_eq!(panel["applyError"], Value::Null, "{report:#}");

    // The replica of `gpu` that no node has room for, as a warning.
    assert_eq!(c["placement"]["unplaced"]["gpu"], 1, "{before:#}");
    assert!(
        panel["unplaced"]
            .as_str()
            .is_some_and(|s| s.contains("1 replica of gpu")),
        "{report:#}"
    );

    // The rest of the page shows this node's own backends.
    let [_, backends, _] = expected(&before);
    assert_eq!(
        rows(&report, "backends", &["name", "status", "replicas"]),
        backends
    );
    assert!(shots.join("cluster.png").exists());
    drop((n1, n2, etcd));
}
