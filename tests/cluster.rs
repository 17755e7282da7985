//! Cluster mode on a real 3-member etcd, with 3 `ferroserve start --cluster` nodes on
//! 127.0.0.1, .2 and .3: registration, one elected controller, placement across nodes,
//! and what happens when the controller's node dies.

mod common;

use std::time::Duration;

use common::cluster::{is_leader, running_replicas, start_node, status, wait_until};
use common::etcd::{EtcdCluster, etcd_or_skip};

const APP: &str = "
backends:
  echo:
    builtin: echo
    num_replicas: 3
endpoints:
  echo:
    backend: echo
    route: /echo
";

/// Three nodes on a fresh etcd, each serving its share (one replica) of the app.
async fn three_nodes(etcd: &EtcdCluster) -> Vec<common::Process> {
    let url = etcd.url();
    let nodes: Vec<_> = (1..=3)
        .map(|i| start_node(&url, &format!("n{i}"), &format!("127.0.0.{i}"), APP, &[]))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        while running_replicas(node, "echo").await != Some(1) {
            if std::time::Instant::now() > deadline {
                for node in &nodes {
                    eprintln!(
                        "--- {:?}\n{}",
                        status(node).await,
                        node.stderr.lock().expect("lock")
                    );
                }
                panic!("each node runs one replica: not within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_places_replicas_across_nodes_and_a_new_one_takes_over() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let etcd = EtcdCluster::start(bin, 3);
    let mut nodes = three_nodes(&etcd).await;
    let http = common::client();
    for node in &nodes {
        let answer = http.get(node.url("/echo")).send().await.expect("answers");
        assert_eq!(answer.status(), 200, "node {} serves", node.addr);
    }
    // Exactly one controller, and every node agrees on who.
    let mut leaders = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if is_leader(node).await {
            leaders.push(i);
        }
    }
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let leader = leaders[0];
    let named = status(&nodes[leader]).await.expect("status");
    let name = named["cluster"]["node"].clone();
    for node in &nodes {
        let s = status(node).await.expect("status");
        assert_eq!(s["cluster"]["leader"], name);
        assert_eq!(s["cluster"]["nodes"].as_object().map(|n| n.len()), Some(3));
    }

    // kill -9 the controller: another is elected within 5 s (the lease TTL is 3 s), and
    // the dead node's replica is placed on a live one.
    let _ = nodes[leader].child.kill();
    let _ = nodes[leader].child.wait();
    let dead = nodes.remove(leader);
    let took = wait_until(Duration::from_secs(5), "a new controller", || async {
        for node in &nodes {
            if is_leader(node).await {
                return true;
            }
        }
        false
    })
    .await;
    eprintln!("new controller after {took:?}");
    drop(dead);
    wait_until(Duration::from_secs(20), "3 replicas on 2 nodes", || async {
        let mut total = 0;
        for node in &nodes {
            total += running_replicas(node, "echo").await.unwrap_or(0);
        }
        total == 3
    })
    .await;
}
