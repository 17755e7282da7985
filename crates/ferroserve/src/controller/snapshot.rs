//! Versioned snapshots of what is served (routes, traffic policies, replica sets) and the cell that swaps them atomically.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use http::{HeaderValue, Method};
use tokio::sync::watch;

use crate::config::{BackendConfig, EndpointConfig};
use crate::proxy::RouteTable;
use crate::router::{ReplicaSet, WaitQueue, WeightedChoice};

/// One backend as a snapshot publishes it.
pub(crate) struct BackendState {
    pub(crate) name: Arc<str>,
    pub(crate) config: BackendConfig,
    pub(crate) replicas: ReplicaSet,
    /// Shared by every snapshot of this backend, so waiters survive a swap.
    pub(crate) queue: Arc<WaitQueue>,
}

/// One endpoint as a snapshot publishes it, its backends resolved.
pub(crate) struct EndpointState {
    pub(crate) name: Arc<str>,
    pub(crate) config: EndpointConfig,
    /// The `Allow` header value for 405 answers.
    pub(crate) allow: HeaderValue,
    pub(crate) traffic: WeightedChoice<Arc<BackendState>>,
    /// Shadow backends and the share of requests each gets a copy of.
    pub(crate) shadows: Box<[(f64, Arc<BackendState>)]>,
}

impl EndpointState {
    /// Whether the route allows this HTTP method.
    pub(crate) fn allows(&self, method: &Method) -> bool {
        self.config.methods.iter().any(|m| m == method)
    }
}

/// Everything the proxy and the routers need to serve, at one version.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub(crate) version: u64,
    pub(crate) endpoints: HashMap<String, Arc<EndpointState>>,
    pub(crate) backends: HashMap<String, Arc<BackendState>>,
    pub(crate) routes: RouteTable<Arc<EndpointState>>,
    /// `GET /-/routes`, rendered once per version.
    pub(crate) routes_json: Bytes,
}

/// The current snapshot: readers load it without a lock; the controller swaps in new ones.
pub(crate) struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    version: watch::Sender<u64>,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                routes_json: Bytes::from_static(b"{}"),
                ..Snapshot::default()
            }),
            version: watch::Sender::new(0),
        }
    }
}

impl SnapshotCell {
    /// The current snapshot, for a short look.
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, to hold across awaits.
    pub(crate) fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in `snapshot`; requests already running keep the one they loaded.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        self.current.store(Arc::new(snapshot));
        self.version.send_replace(version);
    }

    /// Watches the published version.
    #[cfg(test)]
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_keep_their_snapshot_across_a_swap() {
        let cell = SnapshotCell::default();
        let mut versions = cell.subscribe();
        let held = cell.load_full();
        cell.publish(Snapshot {
            version: 7,
            ..Snapshot::default()
        });
        assert_eq!(held.version, 0, "a running request keeps what it loaded");
        assert_eq!(cell.load().version, 7, "new requests see the new version");
        versions.changed().await.expect("the sender is alive");
        assert_eq!(*versions.borrow(), 7);
    }

    #[test]
    fn swaps_race_with_readers_without_tearing() {
        let cell = Arc::new(SnapshotCell::default());
        let writer = {
            let cell = cell.clone();
            std::thread::spawn(move || {
                for version in 1..=2000 {
                    cell.publish(Snapshot {
                        version,
                        routes_json: Bytes::from(version.to_string()),
                        ..Snapshot::default()
                    });
                }
            })
        };
        let mut last = 0;
        while last < 2000 {
            let snapshot = cell.load();
            assert!(snapshot.version >= last, "versions never go back");
            if snapshot.version > 0 {
                assert_eq!(
                    snapshot.routes_json,
                    snapshot.version.to_string().as_bytes()
                );
            }
            last = snapshot.version;
        }
        writer.join().expect("writer finishes");
    }
}
