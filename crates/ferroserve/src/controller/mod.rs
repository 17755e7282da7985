//! The controller: owns the desired state, makes the actual state (running replicas) follow it, and publishes snapshots.
//!
//! Every change is decided under one short lock that is never held across an await: a
//! replica that takes a minute to start delays nothing but the change of its own backend
//! (changes of one backend run one at a time, behind that backend's own lock).

mod apply;
pub(crate) mod autoscale;
mod backends;
mod health;
mod remote;
mod report;
mod rolling;
mod scaling;
pub(crate) mod status;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::backend::{BackendFactory, EndpointCaller, ReplicaEnv};
use crate::config::{BackendConfig, BackendKind, EndpointConfig, Traffic, validate_shadow};
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::router::{BackendState, ReplicaSet, Snapshot, SnapshotCell, WaitQueue};
use status::{BackendStatus, ReplicaInfo, ReplicaState};

pub(crate) use apply::Planned;

/// What should be served: set by the API, never by a replica starting or dying.
#[derive(Default)]
struct Desired {
    backends: IndexMap<String, DesiredBackend>,
    endpoints: IndexMap<String, EndpointConfig>,
}

/// One backend as it should be.
struct DesiredBackend {
    factory: BackendFactory,
    config: BackendConfig,
    /// What made the factory, when it can be written down (not a Rust closure).
    kind: Option<BackendKind>,
}

/// What runs for one backend.
struct Running {
    /// Tells this backend apart from an earlier one of the same name.
    generation: u64,
    replicas: Vec<Arc<dyn Replica>>,
    queue: Arc<WaitQueue>,
    /// The number of the last replica started (ids are `name#N`).
    next_replica: u64,
    /// When its replicas died lately, for the restart backoff.
    deaths: Vec<Instant>,
    /// Held while a change of this backend starts or reconfigures replicas, so that the
    /// changes of one backend run one at a time (and those of others at once).
    changing: Arc<tokio::sync::Mutex<()>>,
    /// What is known of each replica: those serving, and those starting, stopping or
    /// recovering.
    info: IndexMap<Arc<str>, ReplicaInfo>,
    /// Set while a change runs (`UPDATING`) and after one failed (`DEPLOY_FAILED`), with
    /// why; otherwise the status follows from the replica count.
    condition: Option<(BackendStatus, String)>,
    /// When its replicas' health was last checked.
    last_checked: Option<Instant>,
    /// Its checks are running.
    checking: bool,
    /// Restarts that failed in a row.
    failed_restarts: u32,
}

impl Running {
    fn new(generation: u64, replicas: Vec<Arc<dyn Replica>>, next_replica: u64) -> Self {
        Self {
            generation,
            replicas,
            queue: Arc::new(WaitQueue::default()),
            next_replica,
            deaths: Vec::new(),
            changing: Arc::default(),
            info: IndexMap::new(),
            condition: None,
            last_checked: None,
            checking: false,
            failed_restarts: 0,
        }
    }

    /// Sets the state of the replica `id`, if it is known.
    fn mark(&mut self, id: &str, state: ReplicaState) {
        if let Some(info) = self.info.get_mut(id) {
            info.state = state;
        }
    }
}

#[derive(Default)]
struct State {
    version: u64,
    generations: u64,
    stopped: bool,
    desired: Desired,
    actual: HashMap<String, Running>,
    /// Backends whose first replicas are starting: their names are taken.
    creating: HashSet<String>,
    /// Backends whose creation failed, with why (until they are created or given again).
    failed: IndexMap<String, String>,
    /// Replicas starting for backends being created, by backend.
    starting: HashMap<String, IndexMap<Arc<str>, ReplicaInfo>>,
    /// While set, a request for a route no endpoint has is answered 503 (the app is still
    /// being deployed), not 404.
    held: bool,
    /// Applies under way.
    applying: usize,
    /// The server is stopping.
    draining: bool,
    /// Each backend's replicas on other nodes (`set_remote`), routed to after its own.
    remote: HashMap<String, Vec<Arc<dyn Replica>>>,
    /// The autoscaling policy of each autoscaled backend.
    scalers: HashMap<String, autoscale::Autoscaler>,
    /// Backends whose replica count an autoscaler is changing now.
    scaling: HashSet<String>,
    /// A node of a cluster: the cluster's leader scales autoscaled backends on the load
    /// of every node, and each node runs the share it is given.
    scaled_by_cluster: bool,
}

/// How long replicas of a deleted backend may take to finish the requests they run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Owns the desired state, starts and stops replicas to match it, and publishes each
/// change as a snapshot. A supervisor task replaces replicas whose worker died.
pub(crate) struct Controller {
    state: Mutex<State>,
    cell: Arc<SnapshotCell>,
    env: ReplicaEnv,
    /// Itself, for the tasks it spawns (draining replicas).
    me: Weak<Controller>,
    /// One apply at a time.
    applies: tokio::sync::Mutex<()>,
    /// What the request path counts, by endpoint and backend.
    metrics: Arc<Metrics>,
}

impl Controller {
    /// A controller publishing to `cell`; replicas make their handle calls through `caller`.
    pub(crate) fn new(cell: Arc<SnapshotCell>, caller: Arc<dyn EndpointCaller>) -> Arc<Self> {
        let (deaths, mut died) = tokio::sync::mpsc::unbounded_channel();
        let metrics: Arc<Metrics> = Arc::default();
        let controller = Arc::new_cyclic(|me| Self {
            state: Mutex::new(State::default()),
            env: ReplicaEnv {
                deaths,
                caller,
                logs: Arc::default(),
                metrics: metrics.clone(),
            },
            cell,
            me: me.clone(),
            applies: tokio::sync::Mutex::new(()),
            metrics,
        });
        let supervised = Arc::downgrade(&controller);
        tokio::spawn(async move {
            while let Some(death) = died.recv().await {
                let Some(controller) = supervised.upgrade() else {
                    return;
                };
                tokio::spawn(async move { controller.replace_dead(death).await });
            }
        });
        tokio::spawn(scaling::drive(Arc::downgrade(&controller)));
        let checked = Arc::downgrade(&controller);
        tokio::spawn(async move {
            let mut tick = health::MAX_TICK;
            loop {
                tokio::time::sleep(tick).await;
                let Some(controller) = checked.upgrade() else {
                    return;
                };
                controller.check_health();
                tick = controller.health_tick();
            }
        });
        controller
    }

    /// What the request path counts.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The state, for a change that does not await while it holds it.
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change leaves the state whole before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_backends<'a>(
        state: &State,
        backends: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ServeError> {
        for backend in backends {
            if !state.desired.backends.contains_key(backend) {
                return Err(ServeError::BackendNotFound(backend.to_owned()));
            }
        }
        Ok(())
    }

    fn endpoint_backends(config: &EndpointConfig) -> impl Iterator<Item = &str> {
        config
            .traffic
            .weights()
            .map(|(b, _)| b)
            .chain(config.shadow.keys().map(String::as_str))
    }

    /// Adds an endpoint.
    pub(crate) fn create_endpoint(
        &self,
        name: &str,
        mut config: EndpointConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let mut state = self.lock();
        if state.stopped {
            return Err(ServeError::ShuttingDown);
        }
        if state.desired.endpoints.contains_key(name) {
            return Err(ServeError::Conflict(format!(
                "endpoint `{name}` already exists"
            )));
        }
        if let Some(route) = &config.route
            && let Some((other, _)) = state
                .desired
                .endpoints
                .iter()
                .find(|(_, e)| e.route.as_ref() == Some(route))
        {
            return Err(ServeError::Conflict(format!(
                "route `{route}` is already served by endpoint `{other}`"
            )));
        }
        Self::check_backends(&state, Self::endpoint_backends(&config))?;
        state.desired.endpoints.insert(name.to_owned(), config);
        self.publish(&mut state);
        Ok(())
    }

    /// Removes an endpoint (its backends keep running).
    pub(crate) fn delete_endpoint(&self, name: &str) -> Result<(), ServeError> {
        let mut state = self.lock();
        if state.desired.endpoints.shift_remove(name).is_none() {
            return Err(ServeError::EndpointNotFound(name.to_owned()));
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Replaces an endpoint's traffic weights while it serves.
    pub(crate) fn set_traffic(&self, name: &str, traffic: Traffic) -> Result<(), ServeError> {
        traffic.validate()?;
        let mut state = self.lock();
        Self::check_backends(&state, traffic.weights().map(|(b, _)| b))?;
        let endpoint = state
            .desired
            .endpoints
            .get_mut(name)
            .ok_or_else(|| ServeError::EndpointNotFound(name.to_owned()))?;
        for backend in endpoint.shadow.keys() {
            if traffic.uses(backend) {
                return Err(ServeError::invalid(
                    format!("traffic.{backend}"),
                    "the backend shadows this endpoint; remove the shadow first",
                ));
            }
        }
        endpoint.traffic = traffic;
        self.publish(&mut state);
        Ok(())
    }

    /// Sends a copy of `proportion` of an endpoint's requests to `backend` as well (0 stops).
    pub(crate) fn shadow_traffic(
        &self,
        name: &str,
        backend: &str,
        proportion: f64,
    ) -> Result<(), ServeError> {
        let mut state = self.lock();
        Self::check_backends(&state, [backend])?;
        let endpoint = state
            .desired
            .endpoints
            .get_mut(name)
            .ok_or_else(|| ServeError::EndpointNotFound(name.to_owned()))?;
        validate_shadow(&endpoint.traffic, backend, proportion)?;
        if proportion == 0.0 {
            endpoint.shadow.shift_remove(backend);
        } else {
            endpoint.shadow.insert(backend.to_owned(), proportion);
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Whether the server stopped (after [`Controller::shutdown`]).
    pub(crate) fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Marks the server as stopping: `/-/healthz` and `/-/ready` answer 503 from now on.
    pub(crate) fn drain_all(&self) {
        let mut state = self.lock();
        state.draining = true;
        self.publish(&mut state);
    }

    /// Serves nothing more, and hands back every replica, for the caller to stop. Replicas
    /// still starting are stopped as soon as they are up; nothing waits for them.
    pub(crate) fn shutdown(&self) -> Vec<Arc<dyn Replica>> {
        let mut state = self.lock();
        state.stopped = true;
        state.held = false;
        state.desired = Desired::default();
        let running = std::mem::take(&mut state.actual);
        self.publish(&mut state);
        drop(state);
        let mut replicas = Vec::new();
        for (_, backend) in running {
            backend.queue.wake_all();
            replicas.extend(backend.replicas);
        }
        replicas
    }

    /// Builds the snapshot of `state` and swaps it in.
    fn publish(&self, state: &mut State) {
        state.version += 1;
        let backends = state
            .actual
            .iter()
            .filter_map(|(name, running)| {
                let desired = state.desired.backends.get(name)?;
                // This node's replicas first, then those on other nodes.
                let mut replicas = running.replicas.clone();
                let local = replicas.len();
                if let Some(remote) = state.remote.get(name) {
                    replicas.extend(remote.iter().cloned());
                }
                let replicas = ReplicaSet::with_remote(
                    replicas,
                    local,
                    desired.config.effective_max_concurrent_queries(),
                    running.queue.clone(),
                );
                let backend = BackendState {
                    name: name.as_str().into(),
                    config: desired.config.clone(),
                    replicas,
                    stats: self.metrics.backend(name),
                };
                Some((name.clone(), Arc::new(backend)))
            })
            .collect();
        let mut snapshot = Snapshot::build(
            state.version,
            backends,
            &state.desired.endpoints,
            &self.metrics,
        );
        snapshot.held = state.held;
        snapshot.draining = state.draining;
        self.cell.publish(snapshot);
        tracing::debug!(version = state.version, "snapshot published");
    }
}

impl Controller {
    /// Takes `replicas` of backend `name` out of service: they are marked `STOPPING`, let
    /// finish what they run for up to the backend's `graceful_shutdown_timeout_s`, then
    /// dropped (a worker is sent SHUTDOWN, then killed) and forgotten.
    fn retire(&self, name: &str, replicas: Vec<Arc<dyn Replica>>, within: Duration) {
        if replicas.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            if let Some(running) = state.actual.get_mut(name) {
                for replica in &replicas {
                    running.mark(replica.id(), ReplicaState::Stopping);
                }
            }
        }
        let (me, name) = (self.me.clone(), name.to_owned());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + within;
            let mut ids = Vec::with_capacity(replicas.len());
            for replica in replicas {
                // Once only we hold it, no snapshot or request can reach it any more.
                while Arc::strong_count(&replica) > 1 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ids.push(Arc::<str>::from(replica.id()));
                tracing::debug!(replica = replica.id(), "replica stopped");
            }
            if let Some(controller) = me.upgrade() {
                let mut state = controller.lock();
                if let Some(running) = state.actual.get_mut(&name) {
                    for id in ids {
                        if running
                            .info
                            .get(&id)
                            .is_some_and(|i| i.state == ReplicaState::Stopping)
                        {
                            running.info.shift_remove(&id);
                        }
                    }
                }
            }
        });
    }
}

/// Lets replicas no backend knows any more finish what they run, then drops them.
fn drain(replicas: Vec<Arc<dyn Replica>>) {
    if replicas.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for replica in replicas {
            while Arc::strong_count(&replica) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tracing::debug!(replica = replica.id(), "replica stopped");
        }
    });
}
