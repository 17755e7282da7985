//! A network partition of the controller's node (issue 14): the node runs in a network
//! namespace of its own, linked to the others by a veth pair, and nftables in the namespace
//! drops every packet. Its calls to etcd hang rather than fail; its local deadline (one
//! lease TTL after its last answered keep-alive) makes it step down, and another node is
//! elected. Needs root, `ip` and `nft`; skipped, saying why, without them (unless
//! `FERROSERVE_REQUIRE_PARTITION` is set, as in CI).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{is_leader, start_node, status, wait_until};
use common::etcd::{EtcdCluster, etcd_or_skip};
use common::netns::{Netns, can_partition};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_controller_steps_down_within_its_lease_ttl() {
    let Some(bin) = etcd_or_skip("cluster_partition") else {
        return;
    };
    if let Err(why) = can_partition() {
        assert!(
            std::env::var_os("FERROSERVE_REQUIRE_PARTITION").is_none(),
            "FERROSERVE_REQUIRE_PARTITION is set but a partition cannot be made: {why}"
        );
        common::skip(&format!("cluster_partition: {why}"));
        return;
    }
    let ns = Netns::create();
    let etcd = EtcdCluster::start_with(bin, 3, Some(&ns.outside));
    let through_link = etcd.members[0]
        .extra_client
        .expect("a client address on the link");

    // The node to partition, first up so that it leads; it reaches etcd over the link only.
    let (dir, path) = common::write_config(APP);
    let bin = common::ferroserve_bin();
    let url = format!("etcd://{through_link}");
    let mut args = ns.exec_prefix();
    args.extend(
        [
            bin.to_str().expect("utf-8 path"),
            "start",
            path.to_str().expect("utf-8 path"),
            "--host",
            &ns.inside,
            "--port",
            "0",
            "--control-host",
            &ns.inside,
            "--control-token",
            common::cluster::TEST_TOKEN,
            "--cluster",
            &url,
            "--node-name",
            "p",
            "--advertise",
            &ns.inside,
            "--peer-port",
            "0",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let victim = common::spawn_listening(Path::new("ip"), &args, &[], Some(dir));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_leader(&victim).await {
        assert!(
            Instant::now() < deadline,
            "the namespaced node does not lead: {:?}\n{}",
            status(&victim).await,
            victim.stderr.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others: Vec<_> = (2..=3)
        .map(|i| {
            start_node(
                &etcd.url(),
                &format!("n{i}"),
                &format!("127.0.0.{i}"),
                APP,
                &[],
            )
        })
        .collect();
    for n in &others {
        wait_until(Duration::from_secs(30), "3 nodes registered", || async {
            status(n).await.is_some_and(|s| {
                s["cluster"]["nodes"]
                    .as_object()
                    .is_some_and(|n| n.len() == 3)
            })
        })
        .await;
    }

    ns.partition();
    let cut = Instant::now();
    // Only what it logs from the cut on counts.
    let logged = victim.stderr.lock().expect("lock").len();
    let stepped =
        || victim.stderr.lock().expect("lock")[logged..].contains("no longer the controller");
    let mut stepped_down = None;
    let mut elected = None;
    while stepped_down.is_none() || elected.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "after {:?}: stepped down {stepped_down:?}, another elected {elected:?}",
            cut.elapsed()
        );
        if stepped_down.is_none() && stepped() {
            stepped_down = Some(cut.elapsed());
        }
        if elected.is_none() && (is_leader(&others[0]).await || is_leader(&others[1]).await) {
            elected = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stepped_down, elected) = (
        stepped_down.unwrap_or_default(),
        elected.unwrap_or_default(),
    );
    eprintln!(
        "FIGURE partition the controller: it stepped down after {stepped_down:?} (lease TTL 3 s); another was elected after {elected:?}"
    );
    assert!(
        stepped_down <= Duration::from_millis(3300),
        "it stepped down after {stepped_down:?}, more than its lease TTL (3 s)"
    );
    assert!(
        stepped_down <= elected,
        "another node led ({elected:?}) before the partitioned one stepped down ({stepped_down:?})"
    );

    // Healed, it registers again and follows the new controller.
    ns.heal();
    let new_leader = status(&others[0]).await.expect("status")["cluster"]["leader"].clone();
    wait_until(
        Duration::from_secs(15),
        "the healed node follows",
        || async {
            status(&victim).await.is_some_and(|s| {
                s["cluster"]["registered"] == true
                    && s["cluster"]["is_leader"] == false
                    && s["cluster"]["leader"] == new_leader
            })
        },
    )
    .await;
}
