//! Cluster mode on etcd: nodes register under leases, one elected controller places replicas, and every node serves its share and routes to the others'.
//!
//! Each node runs the single-node server unchanged (its controller, proxy and routers) and
//! a [`ClusterNode`] beside it, which
//! - keeps a lease in etcd and its [`NodeInfo`] under it (`nodes/NAME`);
//! - campaigns for the `leader` key; the leader places every backend's replicas over the
//!   live nodes by their resources ([`place`]) and writes the placement in a transaction
//!   fenced on its own leader key;
//! - reads everything by get-then-watch into a [`View`], and makes its local app the
//!   desired app with its share of replicas, through the same apply as a deploy;
//! - reports its running replicas (`replicas/NAME`), which the other nodes call as remote
//!   replicas.
//!
//! When etcd or the controller is gone, every node keeps serving from its last view.

mod autoscale;
mod election;
mod etcd;
mod model;
mod node;
mod placement;
mod sync;
mod view;

pub use model::{NodeInfo, NodeReport, Placement};
pub use node::ClusterNode;
pub use placement::{Demand, place};

use std::net::SocketAddr;
use std::time::Duration;

/// How a node joins a cluster (the `--cluster`, `--node-name`, `--advertise` flags).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd's client endpoints, `host:port` each.
    pub endpoints: Vec<String>,
    /// The key prefix everything lives under (`/ferroserve` unless the URL has a path).
    pub prefix: String,
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// The address other nodes call this node's replicas on (its peer listener).
    pub peer: SocketAddr,
    /// The address of this node's HTTP proxy, as others may reach it (for status).
    pub proxy: Option<SocketAddr>,
    /// CPUs, memory (bytes) and GPUs this node offers replicas.
    pub cpus: f64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpus: f64,
    /// The lease's time to live: a node (or leader) silent this long is gone.
    pub lease_ttl: Duration,
}

/// The default lease TTL: a dead controller is replaced within about this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// Splits `etcd://h1:2379,h2:2379[/prefix]` into endpoints and a key prefix.
pub fn parse_cluster_url(url: &str) -> Result<(Vec<String>, String), String> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        format!("`{url}` is not an etcd URL: write etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")
    })?;
    let (hosts, prefix) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, format!("/{}", path.trim_end_matches('/'))),
        None => (rest, "/ferroserve".to_owned()),
    };
    if prefix == "/" || prefix.contains("//") {
        return Err(format!(
            "`{url}`: the key prefix `{prefix}` is empty or has `//`"
        ));
    }
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(format!("`{url}` names no etcd endpoint"));
    }
    for e in &endpoints {
        let port = e.rsplit_once(':').map(|(_, p)| p);
        if port.is_none_or(|p| p.parse::<u16>().is_err()) {
            return Err(format!("`{e}` in `{url}` is not HOST:PORT"));
        }
    }
    Ok((endpoints, prefix))
}

/// The CPUs, memory (bytes: `MemTotal`, or the container's cgroup limit if lower) and GPUs
/// (`/dev/nvidiaN`) of this machine, for a node given none.
pub fn detect_resources() -> (f64, u64, f64) {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024));
    // In a container, its memory limit (cgroup v2, then v1) if lower.
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    let memory = match limit {
        Some(limit) if limit > 0 && (memory == 0 || limit < memory) => limit,
        _ => memory,
    };
    let gpus = std::fs::read_dir("/dev").map_or(0, |dir| {
        dir.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    });
    (cpus, memory, gpus as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let (e, p) = parse_cluster_url("etcd://127.0.0.1:2379,h2:2379").expect("parses");
        assert_eq!(e, ["127.0.0.1:2379", "h2:2379"]);
        assert_eq!(p, "/ferroserve");
        let (_, p) = parse_cluster_url("etcd://h:1/team/a/").expect("parses");
        assert_eq!(p, "/team/a");
        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://h",
            "etcd://h:x",
            "etcd://h:1//a",
        ] {
            assert!(parse_cluster_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn detects_some_resources() {
        let (cpus, memory, gpus) = detect_resources();
        assert!(gpus >= 0.0);
        assert!(cpus >= 1.0);
        assert!(memory > 0);
    }
}
