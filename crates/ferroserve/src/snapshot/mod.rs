//! The read model: versioned snapshots of what is served (routes, endpoints and their traffic, backends), the cell that swaps them atomically, and how one is built from the desired endpoints.
//!
//! The controller writes it; the proxy, handles and the router read it without a lock. It
//! does not know what a backend runs on: each backend carries an `R` (the router's replica
//! set), so this layer sits below replicas and the router.

mod routes;
mod traffic;

pub(crate) use routes::RouteTable;
pub(crate) use traffic::WeightedChoice;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use http::{HeaderValue, Method};
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::config::{BackendConfig, EndpointConfig};
use crate::metrics::{BackendStats, EndpointStats, Metrics};

/// One backend as a snapshot publishes it: its name, its config, and what it runs on.
pub(crate) struct BackendState<R> {
    pub(crate) name: Arc<str>,
    pub(crate) config: BackendConfig,
    /// Its replicas, as the router picks among them.
    pub(crate) replicas: R,
    /// What it counts (shared by every snapshot of the backend).
    pub(crate) stats: Arc<BackendStats>,
}

/// One endpoint as a snapshot publishes it, its backends resolved.
pub(crate) struct EndpointState<R> {
    pub(crate) name: Arc<str>,
    pub(crate) config: EndpointConfig,
    /// The `Allow` header value for 405 answers.
    pub(crate) allow: HeaderValue,
    pub(crate) traffic: WeightedChoice<Arc<BackendState<R>>>,
    /// Shadow backends and the share of requests each gets a copy of.
    pub(crate) shadows: Box<[(f64, Arc<BackendState<R>>)]>,
    /// When a failover was last logged, in seconds since the Unix epoch.
    failover_logged: AtomicU64,
    /// What it counts (shared by every snapshot of the endpoint).
    pub(crate) stats: Arc<EndpointStats>,
}

impl<R> EndpointState<R> {
    /// Runs `log` for a failover at most once a second per endpoint (and snapshot).
    pub(crate) fn failover_seen(&self, log: impl FnOnce()) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.failover_logged.swap(now, Ordering::Relaxed) != now {
            log();
        }
    }

    /// Whether the route allows this HTTP method.
    pub(crate) fn allows(&self, method: &Method) -> bool {
        self.config.methods.iter().any(|m| m == method)
    }
}

/// Everything the proxy and the routers need to serve, at one version.
pub(crate) struct Snapshot<R> {
    pub(crate) version: u64,
    pub(crate) endpoints: HashMap<String, Arc<EndpointState<R>>>,
    pub(crate) backends: HashMap<String, Arc<BackendState<R>>>,
    pub(crate) routes: RouteTable<Arc<EndpointState<R>>>,
    /// `GET /-/routes`, rendered once per version.
    pub(crate) routes_json: Bytes,
    /// The app is still being deployed: a route no endpoint has yet gets 503, not 404.
    pub(crate) held: bool,
    /// The server is stopping: liveness and readiness answer 503.
    pub(crate) draining: bool,
    /// Where HTTP requests that match no route are counted.
    pub(crate) unrouted: Arc<EndpointStats>,
}

impl<R> Default for Snapshot<R> {
    fn default() -> Self {
        Self {
            version: 0,
            endpoints: HashMap::new(),
            backends: HashMap::new(),
            routes: RouteTable::default(),
            routes_json: Bytes::from_static(b"{}"),
            held: false,
            draining: false,
            unrouted: EndpointStats::detached(),
        }
    }
}

impl<R> Snapshot<R> {
    /// The snapshot at `version` serving `endpoints` from `backends`; traffic to a backend
    /// that is not there is left out. Each endpoint's stats come from `metrics`.
    pub(crate) fn build(
        version: u64,
        backends: HashMap<String, Arc<BackendState<R>>>,
        endpoints: &IndexMap<String, EndpointConfig>,
        metrics: &Metrics,
    ) -> Self {
        let mut states = HashMap::with_capacity(endpoints.len());
        let mut routes = RouteTable::default();
        let mut routes_json = serde_json::Map::new();
        for (name, config) in endpoints {
            let traffic =
                WeightedChoice::new(config.traffic.weights().filter_map(|(backend, weight)| {
                    backends.get(backend).map(|b| (weight, b.clone()))
                }));
            let allow = config
                .methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let shadows = config
                .shadow
                .iter()
                .filter_map(|(backend, share)| backends.get(backend).map(|b| (*share, b.clone())))
                .collect();
            let endpoint = Arc::new(EndpointState {
                shadows,
                name: name.as_str().into(),
                allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("GET")),
                config: config.clone(),
                traffic,
                failover_logged: AtomicU64::new(0),
                stats: metrics.endpoint(name, config.route.as_deref()),
            });
            if let Some(route) = &config.route {
                routes.insert(route, endpoint.clone());
                routes_json.insert(route.clone(), serde_json::Value::from(name.as_str()));
            }
            states.insert(name.clone(), endpoint);
        }
        let routes_json = serde_json::to_vec(&routes_json).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            version,
            endpoints: states,
            backends,
            routes,
            routes_json: Bytes::from(routes_json),
            held: false,
            draining: false,
            unrouted: metrics.unrouted.clone(),
        }
    }
}

/// The current snapshot: readers load it without a lock; the controller swaps in new ones.
pub(crate) struct SnapshotCell<R> {
    current: ArcSwap<Snapshot<R>>,
    version: watch::Sender<u64>,
}

impl<R> Default for SnapshotCell<R> {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::Sender::new(0),
        }
    }
}

impl<R> SnapshotCell<R> {
    /// The current snapshot, for a short look.
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot<R>>> {
        self.current.load()
    }

    /// The current snapshot, to hold across awaits.
    pub(crate) fn load_full(&self) -> Arc<Snapshot<R>> {
        self.current.load_full()
    }

    /// Swaps in `snapshot`; requests already running keep the one they loaded.
    pub(crate) fn publish(&self, snapshot: Snapshot<R>) {
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
        let cell = SnapshotCell::<()>::default();
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
        let cell = Arc::new(SnapshotCell::<()>::default());
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

#[cfg(test)]
mod build_tests {
    use super::*;
    use crate::config::Traffic;

    fn backend(name: &str) -> (String, Arc<BackendState<()>>) {
        let state = BackendState {
            name: name.into(),
            config: BackendConfig::default(),
            replicas: (),
            stats: BackendStats::detached(name),
        };
        (name.to_owned(), Arc::new(state))
    }

    #[test]
    fn endpoints_resolve_their_backends_and_routes() {
        let backends: HashMap<_, _> = [backend("a"), backend("b")].into_iter().collect();
        let mut endpoints = IndexMap::new();
        let traffic = Traffic::new([("a", 0.5), ("gone", 0.5)]).expect("weights");
        endpoints.insert(
            "api".to_owned(),
            EndpointConfig::traffic(traffic)
                .route("/api")
                .methods([Method::GET, Method::POST])
                .shadow("b", 0.1),
        );
        endpoints.insert("inner".to_owned(), EndpointConfig::backend("b"));
        let snapshot = Snapshot::build(3, backends, &endpoints, &Metrics::default());
        assert_eq!(snapshot.version, 3);
        assert_eq!(snapshot.routes_json, r#"{"/api":"api"}"#);
        let api = snapshot.routes.lookup("/api/x").expect("routed");
        assert_eq!(&*api.name, "api");
        assert_eq!(api.allow, "GET, POST");
        assert!(api.allows(&Method::POST) && !api.allows(&Method::PUT));
        assert_eq!(
            &*api.traffic.choose().name,
            "a",
            "a missing backend gets no traffic"
        );
        assert_eq!(api.shadows.len(), 1);
        assert!(snapshot.endpoints.contains_key("inner"));
    }
}
