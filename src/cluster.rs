//! `--cluster`: the flags that make `start` (or `run`) a node of a cluster on etcd, and joining it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ferroserve::cluster::{ClusterNode, ClusterOptions, detect_resources, parse_cluster_url};
use ferroserve::{AppSpec, Registry, Serve};

/// How this server joins a cluster.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Join the cluster on these etcd endpoints: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
    #[arg(long, env = "FERROSERVE_CLUSTER", value_name = "URL")]
    cluster: Option<String>,
    /// This node's name, unique in the cluster (default: the host name).
    #[arg(long, env = "FERROSERVE_NODE_NAME", requires = "cluster")]
    node_name: Option<String>,
    /// The address other nodes reach this one on (needed when etcd is on other machines;
    /// 127.0.0.1 otherwise).
    #[arg(long, env = "FERROSERVE_ADVERTISE", requires = "cluster")]
    advertise: Option<IpAddr>,
    /// The port other nodes call this node's replicas on (0 picks a free one).
    #[arg(long, env = "FERROSERVE_PEER_PORT", default_value_t = 8300)]
    peer_port: u16,
    /// CPUs this node offers replicas (default: detected).
    #[arg(long, env = "FERROSERVE_CPUS", requires = "cluster")]
    cpus: Option<f64>,
    /// Memory this node offers replicas, in bytes (default: detected).
    #[arg(long, env = "FERROSERVE_MEMORY_BYTES", requires = "cluster")]
    memory_bytes: Option<u64>,
    /// GPUs this node offers replicas (default: detected).
    #[arg(long, env = "FERROSERVE_GPUS", requires = "cluster")]
    gpus: Option<f64>,
    /// Seconds a silent node (or controller) keeps its lease; the controller is replaced
    /// within about this long.
    #[arg(
        long,
        env = "FERROSERVE_LEASE_TTL_S",
        default_value_t = 3,
        requires = "cluster"
    )]
    lease_ttl_s: u64,
}

impl ClusterArgs {
    /// Whether `--cluster` was given.
    pub(crate) fn enabled(&self) -> bool {
        self.cluster.is_some()
    }
}

/// The host name, for a node given no name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// Starts this node's peer listener and joins the cluster, saving `app` as the cluster's
/// app if it has none.
pub(crate) async fn join(
    serve: &Arc<Serve>,
    registry: &Registry,
    args: &ClusterArgs,
    app: Option<AppSpec>,
) -> anyhow::Result<Option<ClusterNode>> {
    let Some(url) = &args.cluster else {
        return Ok(None);
    };
    let (endpoints, prefix) = parse_cluster_url(url).map_err(anyhow::Error::msg)?;
    // Other machines cannot call 127.0.0.1: a cluster beyond this machine needs the
    // address they reach this node on.
    let local_only = endpoints.iter().all(|e| {
        let host = e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h);
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    let advertise = match args.advertise {
        Some(ip) => ip,
        None if local_only => IpAddr::from([127, 0, 0, 1]),
        None => anyhow::bail!(
            "--advertise is needed with etcd on other machines: the address other nodes reach this one on (e.g. --advertise 10.0.0.5)"
        ),
    };
    let peer = serve
        .listen_peers(SocketAddr::new(advertise, args.peer_port))
        .await?;
    let (cpus, memory_bytes, gpus) = detect_resources();
    if !(1..=3600).contains(&args.lease_ttl_s) {
        anyhow::bail!("--lease-ttl-s must be between 1 and 3600");
    }
    let options = ClusterOptions {
        endpoints,
        prefix,
        node_name: args.node_name.clone().unwrap_or_else(host_name),
        peer,
        proxy: serve.local_addr(),
        cpus: args.cpus.unwrap_or(cpus),
        memory_bytes: args.memory_bytes.unwrap_or(memory_bytes),
        gpus: args.gpus.unwrap_or(gpus),
        lease_ttl: Duration::from_secs(args.lease_ttl_s),
    };
    println!(
        "ferroserve node {} joining {url}; peers call it on {peer}",
        options.node_name
    );
    let node = ClusterNode::join(serve, registry.clone(), options, app)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(node))
}
