//! Cluster mode on a real 3-member etcd (127.0.0.1–3), with 3 `ferroserve start --cluster`
//! nodes on 127.0.0.1, .2 and .3, under load (16 clients): one elected controller, replicas
//! placed across nodes and called from any node, and the failures of issue 14 — the
//! controller's node killed or stopped, a node killed, one etcd member and all of etcd
//! killed. The scenarios run one at a time (a lock), each on its own etcd; the figures
//! they print go to docs/RELIABILITY.md.

mod common;

use std::time::{Duration, Instant};

use common::Process;
use common::cluster::{
    Load, is_leader, running_replicas, signal, start_node, status, total_running, wait_serves,
    wait_until,
};
use common::etcd::{EtcdCluster, etcd_or_skip};

/// One scenario at a time: each starts 3 etcd members and 3 nodes, and their timings are
/// the point.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `echo` with `replicas` replicas of one CPU each, at `/echo`.
fn app(replicas: usize) -> String {
    app_of(replicas, 1.0)
}

/// `echo` with `replicas` replicas of `cpus` CPUs each, at `/echo`.
fn app_of(replicas: usize, cpus: f64) -> String {
    format!(
        "
backends:
  echo:
    builtin: echo
    num_replicas: {replicas}
    num_cpus: {cpus}
endpoints:
  echo:
    backend: echo
    route: /echo
"
    )
}

/// Starts node `i` (1-based) on 127.0.0.i.
fn node(etcd: &EtcdCluster, i: usize, app: &str, extra: &[&str]) -> Process {
    start_node(
        &etcd.url(),
        &format!("n{i}"),
        &format!("127.0.0.{i}"),
        app,
        extra,
    )
}

/// The index of the node that leads, once exactly one says so.
async fn leader_of(nodes: &[&Process]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut leaders = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if is_leader(node).await {
                leaders.push(i);
            }
        }
        if leaders.len() == 1 {
            return leaders[0];
        }
        if Instant::now() > deadline {
            dump(nodes).await;
            panic!("not one leader: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints each node's log, for a failed wait.
async fn dump(nodes: &[&Process]) {
    for node in nodes {
        eprintln!(
            "--- {}: {:?}\n{}",
            node.addr,
            status(node).await.map(|s| s["cluster"].clone()),
            node.stderr.lock().expect("lock")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_dies_and_serving_never_stops() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdCluster::start(bin, 3);
    let app = app(2);
    // n1 offers no CPU: it runs no replica, and (first up) it is the controller.
    let mut n1 = node(&etcd, 1, &app, &["--cpus", "0"]);
    wait_until(Duration::from_secs(15), "n1 leads", || is_leader(&n1)).await;
    let n2 = node(&etcd, 2, &app, &[]);
    let n3 = node(&etcd, 3, &app, &[]);
    for n in [&n2, &n3] {
        wait_until(
            Duration::from_secs(30),
            "a replica on n2 and n3",
            || async { running_replicas(n, "echo").await == Some(1) },
        )
        .await;
    }
    // n1 has no replica of its own: its proxy calls n2's and n3's.
    wait_serves(n1.url("/echo"), "n1 routes to the others").await;

    let load = Load::start(vec![n2.url("/echo"), n3.url("/echo")], 16);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&n1, "KILL");
    let _ = n1.child.wait();
    let killed = Instant::now();
    let took = wait_until(Duration::from_secs(5), "a new controller", || async {
        is_leader(&n2).await || is_leader(&n3).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    eprintln!(
        "FIGURE kill -9 the controller: new controller after {:?}; {} requests ok, {} failed",
        killed.elapsed().min(took),
        report.ok,
        report.failed.len()
    );
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    assert!(report.ok > 100, "the load ran: {}", report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_replicas_come_back_elsewhere() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdCluster::start(bin, 3);
    // Half a CPU each: n2 and n3 (2 CPUs) hold 4 each. n1 offers none, so every request
    // it takes runs on another node.
    let app = app_of(3, 0.5);
    let n1 = node(&etcd, 1, &app, &["--cpus", "0"]);
    let mut n2 = node(&etcd, 2, &app, &[]);
    let n3 = node(&etcd, 3, &app, &[]);
    wait_until(
        Duration::from_secs(30),
        "3 replicas on n2 and n3",
        || async { total_running(&[&n2, &n3], "echo").await == 3 },
    )
    .await;
    wait_serves(n1.url("/echo"), "n1 routes to the others").await;
    let load = Load::start(vec![n1.url("/echo")], 16);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&n2, "KILL");
    let _ = n2.child.wait();
    let killed = Instant::now();
    let back = wait_until(Duration::from_secs(20), "3 replicas on n3", || async {
        running_replicas(&n3, "echo").await == Some(3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    eprintln!(
        "FIGURE kill -9 a node (every request remote): its replicas running elsewhere after {:?}; {} requests ok, {} failed",
        killed.elapsed().min(back),
        report.ok,
        report.failed.len()
    );
    // Only requests in flight on the dead node may fail: at most one per client. Calls
    // that could not be sent to it are tried on n3.
    assert!(report.failed.len() <= 16, "failed: {:?}", report.failed);
    assert!(report.ok > 100, "the load ran: {}", report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_goes_on_without_etcd_and_a_deploy_waits_for_it() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let mut etcd = EtcdCluster::start(bin, 3);
    // n1 offers no CPU: its share of the load runs on n2 and n3, over the peer hop.
    let app = app_of(3, 0.5);
    let nodes: Vec<Process> = (1..=3)
        .map(|i| node(&etcd, i, &app, if i == 1 { &["--cpus", "0"] } else { &[] }))
        .collect();
    let refs: Vec<&Process> = nodes.iter().collect();
    wait_until(Duration::from_secs(30), "3 replicas on n2 and n3", || {
        let refs = refs.clone();
        async move { total_running(&refs, "echo").await == 3 }
    })
    .await;
    wait_serves(nodes[0].url("/echo"), "n1 routes to the others").await;
    let urls = nodes.iter().map(|n| n.url("/echo")).collect();
    let load = Load::start(urls, 16);
    // One member down: nothing changes for the nodes.
    etcd.kill(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in &nodes {
        let s = status(n).await.expect("status");
        assert_eq!(s["cluster"]["registered"], true, "{s}");
    }
    // All of etcd down, for longer than the lease TTL: every node serves on.
    etcd.kill_all();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A deploy now waits for etcd, then applies.
    let changed = format!("{app}  again:\n    backend: echo\n    route: /again\n");
    let control = nodes[1].control_url("/api/app");
    let deploy = tokio::spawn(async move {
        common::client()
            .put(control)
            .header("content-type", "application/yaml")
            .body(changed)
            .send()
            .await
            .map(|a| a.status())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.finish().await;
    eprintln!(
        "FIGURE etcd: one member, then all killed for 7 s: {} requests ok, {} failed",
        during.ok,
        during.failed.len()
    );
    assert!(during.failed.is_empty(), "failed: {:?}", during.failed);
    assert!(during.ok > 100, "the load ran: {}", during.ok);
    let http = common::client();
    let before = http
        .get(nodes[0].url("/again"))
        .send()
        .await
        .expect("answers");
    assert_eq!(before.status(), 404, "not applied while etcd is down");
    let back = Instant::now();
    etcd.restart_all();
    let refs: Vec<&Process> = nodes.iter().collect();
    let applied = wait_until(
        Duration::from_secs(30),
        "the deploy applied everywhere",
        || {
            let (refs, http) = (refs.clone(), http.clone());
            async move {
                for n in refs {
                    let ok = http
                        .get(n.url("/again"))
                        .send()
                        .await
                        .is_ok_and(|a| a.status() == 200);
                    if !ok {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    eprintln!(
        "FIGURE etcd back: the waiting deploy served on every node after {:?}",
        back.elapsed().min(applied + Duration::from_secs(30))
    );
    let status = deploy.await.expect("deploy task").expect("deploy answered");
    assert!(status.is_success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_controller_is_deposed() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdCluster::start(bin, 3);
    let app = app(3);
    let nodes: Vec<Process> = (1..=3).map(|i| node(&etcd, i, &app, &[])).collect();
    let refs: Vec<&Process> = nodes.iter().collect();
    for n in &nodes {
        wait_until(Duration::from_secs(30), "a replica per node", || async {
            running_replicas(n, "echo").await == Some(1)
        })
        .await;
    }
    let old = leader_of(&refs).await;
    signal(&nodes[old], "STOP");
    let stopped = Instant::now();
    let others: Vec<&Process> = (0..3).filter(|&i| i != old).map(|i| &nodes[i]).collect();
    let took = wait_until(Duration::from_secs(8), "another controller", || {
        let others = others.clone();
        async move {
            for n in others {
                if is_leader(n).await {
                    return true;
                }
            }
            false
        }
    })
    .await;
    eprintln!("FIGURE SIGSTOP the controller: another elected after {took:?}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "not before its lease ran out"
    );
    signal(&nodes[old], "CONT");
    // Woken, it knows at once that its lease ran out, and leads no more.
    let woke = wait_until(
        Duration::from_secs(5),
        "the old controller steps down",
        || async {
            status(&nodes[old])
                .await
                .is_some_and(|s| s["cluster"]["is_leader"] == false)
        },
    )
    .await;
    eprintln!("FIGURE SIGCONT: the old controller says it does not lead after {woke:?}");
    let old_name = format!("n{}", old + 1);
    wait_until(
        Duration::from_secs(10),
        "all 3 agree on the new controller",
        || {
            let (refs, old_name) = (refs.clone(), old_name.clone());
            async move {
                let mut seen = Vec::new();
                for n in refs {
                    let Some(s) = status(n).await else {
                        return false;
                    };
                    seen.push(
                        s["cluster"]["leader"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                !seen[0].is_empty() && seen[0] != old_name && seen.iter().all(|l| *l == seen[0])
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_status_work_against_any_node() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdCluster::start(bin, 3);
    let nodes: Vec<Process> = (1..=3).map(|i| node(&etcd, i, &app(3), &[])).collect();
    for n in &nodes {
        wait_until(Duration::from_secs(30), "a replica per node", || async {
            running_replicas(n, "echo").await == Some(1)
        })
        .await;
    }
    // `ferroserve deploy` to n2: 6 replicas and a second route; it returns once n2 applied.
    let changed = format!(
        "{}  hello:\n    backend: hello\n    route: /hello\n",
        app(6).replace(
            "endpoints:",
            "  hello:\n    builtin: static\n    init_args: {body: hi}\nendpoints:"
        )
    );
    let (dir, path) = common::write_config(&changed);
    let deployed = std::process::Command::new(common::ferroserve_bin())
        .args(["deploy", path.to_str().expect("utf-8 path")])
        .env("FERROSERVE_ADDRESS", nodes[1].control_url(""))
        .current_dir(dir.path())
        .output()
        .expect("ferroserve deploy runs");
    assert!(
        deployed.status.success(),
        "deploy: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let refs: Vec<&Process> = nodes.iter().collect();
    wait_until(Duration::from_secs(30), "6 replicas, 2 per node", || {
        let refs = refs.clone();
        async move { total_running(&refs, "echo").await == 6 }
    })
    .await;
    let http = common::client();
    for n in &nodes {
        wait_until(Duration::from_secs(10), "/hello on every node", || async {
            let answer = http.get(n.url("/hello")).send().await;
            match answer {
                Ok(a) if a.status() == 200 => a.text().await.is_ok_and(|t| t == "hi"),
                _ => false,
            }
        })
        .await;
    }
    // `ferroserve status` on n3 shows the cluster: three nodes, and who leads.
    let shown = std::process::Command::new(common::ferroserve_bin())
        .arg("status")
        .env("FERROSERVE_ADDRESS", nodes[2].control_url(""))
        .output()
        .expect("ferroserve status runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains("cluster:") && text.contains("leader:"),
        "{text}"
    );
    for name in ["n1", "n2", "n3"] {
        assert!(text.contains(name), "{name} in {text}");
    }
    // A change of one backend would change one node only: refused, with why.
    let refused = http
        .put(nodes[0].control_url("/api/backends/echo"))
        .header("content-type", "application/yaml")
        .body("builtin: echo\nnum_replicas: 1\n")
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 409);
    let why = refused.text().await.expect("text");
    assert!(why.contains("cluster"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_follows_the_load_of_every_node() {
    let Some(bin) = etcd_or_skip("cluster") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdCluster::start(bin, 1);
    // Each call sleeps 100 ms: 8 callers keep 8 requests going, which at a target of 1
    // per replica calls for the 4 replicas allowed, whichever node the callers reach.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");
    let app = format!(
        "
backends:
  sleeper:
    python: sleepy:Sleeper
    working_dir: {dir}
    num_cpus: 0.5
    autoscaling_config:
      min_replicas: 1
      max_replicas: 4
      target_ongoing_requests: 1
      upscale_delay_s: 1
      downscale_delay_s: 2
      look_back_period_s: 2
endpoints:
  sleeper:
    backend: sleeper
    route: /sleep
"
    );
    let nodes: Vec<Process> = (1..=2).map(|i| node(&etcd, i, &app, &[])).collect();
    let refs: Vec<&Process> = nodes.iter().collect();
    wait_until(Duration::from_secs(30), "one replica", || {
        let refs = refs.clone();
        async move { total_running(&refs, "sleeper").await == 1 }
    })
    .await;
    for n in &nodes {
        wait_serves(n.url("/sleep"), "every node reaches the replica").await;
    }
    let load = Load::start(nodes.iter().map(|n| n.url("/sleep")).collect(), 8);
    let took = wait_until(Duration::from_secs(40), "4 replicas under load", || {
        let refs = refs.clone();
        async move { total_running(&refs, "sleeper").await == 4 }
    })
    .await;
    // Placed over both nodes, not 4 on each (every node's load is the cluster's).
    for n in &nodes {
        let here = running_replicas(n, "sleeper").await.unwrap_or(0);
        assert!((1..=3).contains(&here), "{here} replicas on one node");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        total_running(&refs, "sleeper").await,
        4,
        "it stays at 4 under load"
    );
    let report = load.finish().await;
    let calm = wait_until(Duration::from_secs(40), "back to 1 replica", || {
        let refs = refs.clone();
        async move { total_running(&refs, "sleeper").await == 1 }
    })
    .await;
    eprintln!(
        "cluster autoscaling: 1 -> 4 replicas in {took:?} under load, back to 1 in {calm:?}; {} requests, {} failed",
        report.ok,
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "{:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(report.ok > 100, "{} requests", report.ok);
}
