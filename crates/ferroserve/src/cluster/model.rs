//! What the cluster keeps in etcd besides the app: each node's record, the leader's placement, and each node's report of the replicas it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A live node, as it registers itself under its lease (`nodes/NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its unique name.
    pub name: String,
    /// Where other nodes call its replicas.
    pub peer: SocketAddr,
    /// Where its HTTP proxy listens, if it has one.
    #[serde(default)]
    pub proxy: Option<SocketAddr>,
    /// CPUs it offers replicas.
    pub cpus: f64,
    /// Memory it offers replicas, in bytes.
    pub memory_bytes: u64,
    /// GPUs it offers replicas.
    pub gpus: f64,
}

/// Where every backend's replicas run: written by the leader (`placement`), for one
/// revision of the app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The etcd revision of the app it places (the app key's `mod_revision`).
    pub app_revision: i64,
    /// The node that wrote it.
    pub leader: String,
    /// By backend: how many replicas each node runs.
    pub backends: BTreeMap<String, BTreeMap<String, usize>>,
    /// By backend: replicas no node has room for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unplaced: BTreeMap<String, usize>,
}

impl Placement {
    /// How many replicas of each backend `node` runs.
    pub fn share_of(&self, node: &str) -> BTreeMap<String, usize> {
        self.backends
            .iter()
            .map(|(backend, nodes)| (backend.clone(), nodes.get(node).copied().unwrap_or(0)))
            .collect()
    }
}

/// What a node runs, as it reports it under its lease (`replicas/NAME`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The app revision it applied last.
    pub app_revision: i64,
    /// By backend: the ids of its replicas that serve.
    pub replicas: BTreeMap<String, Vec<String>>,
    /// By autoscaled backend: requests running on its replicas here plus those queued at
    /// its router here, which the leader adds up over the nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub load: BTreeMap<String, usize>,
}
