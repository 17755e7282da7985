//! The cluster seam on `Serve`: listen for other nodes' calls, and route to replicas that run on other nodes (one shared HTTP/2 connection per node).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::Serve;
use crate::config::{BackendConfig, HttpOptions};
use crate::error::ServeError;
use crate::proxy::{PeerServer, serve_peers};
use crate::replica::{Ejections, PeerClient, PeerLimits, RemoteReplica, Replica};

/// A replica that runs on another node: the node's name, its peer address (where it
/// called [`Serve::listen_peers`]) and the replica's id there (`echo#2`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteTarget {
    /// The node's name (`a`): the replica shows as `a/echo#2` here.
    pub node: String,
    /// The node's peer listener.
    pub addr: SocketAddr,
    /// The replica's id on that node.
    pub replica: String,
}

/// What a node keeps for its peers: its listener, one client per other node, and each
/// backend's remote replicas with their shared ejections.
pub(super) struct Peers {
    limits: PeerLimits,
    server: Mutex<Option<PeerServer>>,
    clients: Mutex<HashMap<SocketAddr, Arc<PeerClient>>>,
    backends: Mutex<HashMap<String, RemoteBackend>>,
}

/// One backend's replicas on other nodes.
struct RemoteBackend {
    ejections: Arc<Ejections>,
    replicas: Vec<Arc<RemoteReplica>>,
}

impl Peers {
    /// Peers whose calls are bounded as the HTTP proxy's requests are (`http`'s
    /// `max_body_bytes` and `body_timeout_s`).
    pub(super) fn new(http: Option<&HttpOptions>) -> Self {
        let mut limits = PeerLimits::default();
        if let Some(http) = http {
            limits.max_call_bytes = http.max_body_bytes;
            limits.body_idle = http.body_timeout;
        }
        Self {
            limits,
            server: Mutex::new(None),
            clients: Mutex::default(),
            backends: Mutex::default(),
        }
    }

    /// Stops the peer listener, if one runs: calls in flight finish first.
    pub(super) async fn shutdown(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.shutdown().await;
        }
    }
}

impl Serve {
    /// Listens on `addr` (port 0 picks one) for calls from other nodes to this node's
    /// replicas, over HTTP/2 cleartext; returns the bound address. Stopped by
    /// [`Serve::shutdown`]. One listener per server.
    pub async fn listen_peers(&self, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
        let cannot = |reason: String| ServeError::CannotListen {
            addr: addr.to_string(),
            reason,
        };
        if self.controller.is_stopped() {
            return Err(ServeError::ShuttingDown);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| cannot(e.to_string()))?;
        let mut server = self
            .peers
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if server.is_some() {
            return Err(cannot("this server already listens for peers".to_owned()));
        }
        let started = serve_peers(listener, self.cell.clone(), self.peers.limits)?;
        let local = started.local_addr();
        *server = Some(started);
        tracing::info!(%local, "listening for calls from other nodes");
        Ok(local)
    }

    /// The backends that have (or had) replicas on other nodes set.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn remote_backends(&self) -> Vec<String> {
        self.peers
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Sets the replicas of `backend` that run on other nodes, in place of those set before
    /// (an empty list: none). Requests go to them when this node's own replicas of
    /// `backend` are all busy, or when it has none (see [`Serve::create_remote_backend`]).
    /// A replica given again keeps its count of calls and its ejection record; the
    /// connection to a node is shared by all its replicas, of every backend.
    pub fn set_remote_replicas(&self, backend: &str, replicas: Vec<RemoteTarget>) {
        let replicas: Vec<Arc<RemoteReplica>> = {
            let mut backends = self
                .peers
                .backends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut clients = self
                .peers
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = backends
                .entry(backend.to_owned())
                .or_insert_with(|| RemoteBackend {
                    ejections: Arc::default(),
                    replicas: Vec::new(),
                });
            let next: Vec<Arc<RemoteReplica>> = replicas
                .iter()
                .map(|target| {
                    let known = entry
                        .replicas
                        .iter()
                        .find(|r| r.is(&target.node, target.addr, &target.replica));
                    known.cloned().unwrap_or_else(|| {
                        let client = clients
                            .entry(target.addr)
                            .or_insert_with(|| {
                                Arc::new(PeerClient::new(target.addr, self.peers.limits))
                            })
                            .clone();
                        Arc::new(RemoteReplica::new(
                            backend,
                            &target.node,
                            &target.replica,
                            client,
                            entry.ejections.clone(),
                        ))
                    })
                })
                .collect();
            let unchanged = next.len() == entry.replicas.len()
                && next
                    .iter()
                    .zip(&entry.replicas)
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if unchanged {
                // The same replicas again (the cluster hands them over on every change of
                // its view): nothing to publish.
                if next.is_empty() {
                    backends.remove(backend);
                }
                return;
            }
            entry.ejections.set_replicas(next.len());
            entry.replicas.clone_from(&next);
            if next.is_empty() {
                backends.remove(backend);
            }
            // A node no replica is on any more: its connection closes.
            clients.retain(|_, client| Arc::strong_count(client) > 1);
            next
        };
        let replicas = replicas
            .into_iter()
            .map(|r| r as Arc<dyn Replica>)
            .collect();
        self.controller.set_remote(backend, replicas);
    }

    /// Adds a backend that runs only on other nodes: this node knows its config, routes
    /// its endpoints' requests to the replicas [`Serve::set_remote_replicas`] gives it, and
    /// starts none of its own. It is not part of the app this node saves.
    pub async fn create_remote_backend(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        self.controller.create_remote_backend(name, config)
    }
}
