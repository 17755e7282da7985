//! The controller: owns the desired state, makes the actual state (running replicas) follow it, and publishes snapshots.
//!
//! Every change is decided under one short lock that is never held across an await: a
//! replica that takes a minute to start delays nothing but the change of its own backend
//! (changes of one backend run one at a time, behind that backend's own lock).

mod backends;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::backend::{BackendFactory, Death, EndpointCaller, ReplicaEnv};
use crate::config::{BackendConfig, EndpointConfig, Traffic, validate_shadow};
use crate::error::ServeError;
use crate::replica::Replica;
use crate::router::{BackendState, ReplicaSet, Snapshot, SnapshotCell, WaitQueue};

/// How long removed replicas may take to finish the requests they run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often every replica's health is checked (Ray's default `health_check_period_s`).
const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(10);
/// How long a health check may take before the replica counts as unhealthy (Ray's default
/// `health_check_timeout_s`).
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// Owns the desired state, starts and stops replicas to match it, and publishes each
/// change as a snapshot. A supervisor task replaces replicas whose worker died.
pub(crate) struct Controller {
    state: Mutex<State>,
    cell: Arc<SnapshotCell>,
    env: ReplicaEnv,
}

impl Controller {
    /// A controller publishing to `cell`; replicas make their handle calls through `caller`.
    pub(crate) fn new(cell: Arc<SnapshotCell>, caller: Arc<dyn EndpointCaller>) -> Arc<Self> {
        Self::with_health_checks(cell, caller, HEALTH_CHECK_PERIOD)
    }

    /// A controller that checks every replica's health each `period`.
    pub(crate) fn with_health_checks(
        cell: Arc<SnapshotCell>,
        caller: Arc<dyn EndpointCaller>,
        period: Duration,
    ) -> Arc<Self> {
        let (deaths, mut died) = tokio::sync::mpsc::unbounded_channel();
        let controller = Arc::new(Self {
            state: Mutex::new(State::default()),
            env: ReplicaEnv { deaths, caller },
            cell,
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
        let checked = Arc::downgrade(&controller);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(controller) = checked.upgrade() else {
                    return;
                };
                controller.check_health().await;
            }
        });
        controller
    }

    /// Checks every running replica once; those that fail or time out are replaced, as a
    /// replica whose worker died is.
    async fn check_health(&self) {
        let replicas: Vec<(String, Arc<dyn Replica>)> = {
            let state = self.lock();
            state
                .actual
                .iter()
                .flat_map(|(name, running)| {
                    running.replicas.iter().map(|r| (name.clone(), r.clone()))
                })
                .collect()
        };
        let checks = replicas.into_iter().map(|(backend, replica)| async move {
            let outcome = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, replica.check_health()).await;
            let why = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("its health check took longer than {HEALTH_CHECK_TIMEOUT:?}"),
            };
            tracing::error!(
                backend,
                replica = replica.id(),
                "unhealthy, replacing it: {why}"
            );
            let _ = self.env.deaths.send(Death {
                backend: backend.into(),
                replica: replica.id().into(),
            });
        });
        futures_util::future::join_all(checks).await;
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

    /// Serves nothing more, and hands back every replica, for the caller to stop. Replicas
    /// still starting are stopped as soon as they are up; nothing waits for them.
    pub(crate) fn shutdown(&self) -> Vec<Arc<dyn Replica>> {
        let mut state = self.lock();
        state.stopped = true;
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
                let replicas = ReplicaSet::new(
                    running.replicas.clone(),
                    desired.config.effective_max_concurrent_queries(),
                    running.queue.clone(),
                );
                let backend = BackendState {
                    name: name.as_str().into(),
                    config: desired.config.clone(),
                    replicas,
                };
                Some((name.clone(), Arc::new(backend)))
            })
            .collect();
        self.cell.publish(Snapshot::build(
            state.version,
            backends,
            &state.desired.endpoints,
        ));
        tracing::debug!(version = state.version, "snapshot published");
    }
}

/// Lets removed replicas finish what they run, then drops them.
fn drain(replicas: Vec<Arc<dyn Replica>>) {
    if replicas.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for replica in replicas {
            // Once only we hold it, no snapshot or request can reach it any more.
            while Arc::strong_count(&replica) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tracing::debug!(replica = replica.id(), "replica stopped");
        }
    });
}
