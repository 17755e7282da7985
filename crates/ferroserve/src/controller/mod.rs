//! The controller: owns the desired state, starts and stops replicas, and publishes snapshots.

mod snapshot;

pub(crate) use snapshot::{BackendState, EndpointState, Snapshot, SnapshotCell};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use indexmap::IndexMap;
use tokio::sync::Mutex;

use crate::backend::{BackendFactory, ReplicaContext};
use crate::config::{BackendConfig, EndpointConfig, Traffic};
use crate::error::ServeError;
use crate::proxy::RouteTable;
use crate::replica::{Death, Replica, ReplicaEnv};
use crate::router::{ReplicaSet, WaitQueue, WeightedChoice};

/// How long removed replicas may take to finish the requests they run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

struct BackendEntry {
    factory: BackendFactory,
    config: BackendConfig,
    replicas: Vec<Arc<Replica>>,
    queue: Arc<WaitQueue>,
    next_replica: u64,
    /// When its replicas died lately, for the restart backoff.
    deaths: Vec<Instant>,
}

/// How long after a death a restart waits: doubling with each death in the last minute.
fn restart_delay(deaths_last_minute: usize) -> Duration {
    let doublings = u32::try_from(deaths_last_minute.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(7);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(10))
}

#[derive(Default)]
struct State {
    version: u64,
    backends: IndexMap<String, BackendEntry>,
    endpoints: IndexMap<String, EndpointConfig>,
}

/// Owns the desired state; every change goes through it, one at a time, and ends in a
/// published snapshot. A supervisor task restarts replicas whose worker died.
pub(crate) struct Controller {
    state: Mutex<State>,
    cell: Arc<SnapshotCell>,
    env: ReplicaEnv,
}

impl Controller {
    pub(crate) fn new(cell: Arc<SnapshotCell>) -> Arc<Self> {
        let (deaths, mut died) = tokio::sync::mpsc::unbounded_channel();
        let controller = Arc::new(Self {
            state: Mutex::new(State::default()),
            env: ReplicaEnv {
                cell: Arc::downgrade(&cell),
                deaths,
            },
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
        controller
    }

    /// Takes a dead replica out of service at once, then starts a new one with backoff.
    async fn replace_dead(&self, death: Death) {
        let delay = {
            let mut state = self.state.lock().await;
            let Some(entry) = state.backends.get_mut(&*death.backend) else {
                return;
            };
            let Some(at) = entry
                .replicas
                .iter()
                .position(|r| r.id() == &*death.replica)
            else {
                return;
            };
            entry.replicas.remove(at);
            let now = Instant::now();
            entry
                .deaths
                .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            entry.deaths.push(now);
            let delay = restart_delay(entry.deaths.len());
            self.publish(&mut state);
            delay
        };
        let mut delay = delay;
        loop {
            tokio::time::sleep(delay).await;
            let mut state = self.state.lock().await;
            let Some(entry) = state.backends.get_mut(&*death.backend) else {
                return;
            };
            if entry.replicas.len() >= entry.config.num_replicas {
                return;
            }
            let init_args = entry.config.init_args.clone();
            match Self::start_replicas(&death.backend, entry, 1, &init_args, &self.env).await {
                Ok(fresh) => {
                    tracing::info!(
                        backend = &*death.backend,
                        replica = fresh[0].id(),
                        "replica restarted"
                    );
                    entry.replicas.extend(fresh);
                    let queue = entry.queue.clone();
                    self.publish(&mut state);
                    queue.wake_all();
                    return;
                }
                Err(e) => {
                    tracing::error!(backend = &*death.backend, "restart failed: {e}");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn start_replicas(
        name: &str,
        entry: &mut BackendEntry,
        count: usize,
        init_args: &serde_json::Value,
        env: &ReplicaEnv,
    ) -> Result<Vec<Arc<Replica>>, ServeError> {
        let mut started = Vec::with_capacity(count);
        for _ in 0..count {
            entry.next_replica += 1;
            let ctx = ReplicaContext {
                backend: name.to_owned(),
                replica: format!("{name}#{}", entry.next_replica),
                init_args: init_args.clone(),
            };
            started.push(
                Replica::start(ctx, &entry.factory, &entry.config, entry.queue.clone(), env)
                    .await?,
            );
        }
        Ok(started)
    }

    /// Adds a backend and starts its replicas; nothing is published if one fails to start.
    pub(crate) async fn create_backend(
        &self,
        name: &str,
        factory: BackendFactory,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let mut state = self.state.lock().await;
        if state.backends.contains_key(name) {
            return Err(ServeError::Conflict(format!(
                "backend `{name}` already exists"
            )));
        }
        let mut entry = BackendEntry {
            factory,
            replicas: Vec::new(),
            queue: Arc::new(WaitQueue::default()),
            next_replica: 0,
            deaths: Vec::new(),
            config,
        };
        let (count, init_args) = (entry.config.num_replicas, entry.config.init_args.clone());
        entry.replicas =
            Self::start_replicas(name, &mut entry, count, &init_args, &self.env).await?;
        tracing::info!(
            backend = name,
            replicas = entry.replicas.len(),
            "backend started"
        );
        state.backends.insert(name.to_owned(), entry);
        self.publish(&mut state);
        Ok(())
    }

    /// Changes a backend's config while it serves: scales replicas up or down, hands a new
    /// `user_config` to every replica, replaces the replicas when `init_args` change.
    pub(crate) async fn update_backend_config(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let mut state = self.state.lock().await;
        let entry = state
            .backends
            .get_mut(name)
            .ok_or_else(|| ServeError::BackendNotFound(name.to_owned()))?;
        let old = std::mem::replace(&mut entry.config, config);
        let mut removed = Vec::new();
        let same_instances = old.init_args == entry.config.init_args
            && old.max_batch_size == entry.config.max_batch_size
            && old.batch_wait_timeout_ms == entry.config.batch_wait_timeout_ms;
        let result = if same_instances {
            Self::rescale(name, entry, &old, &mut removed, &self.env).await
        } else {
            let (count, init_args) = (entry.config.num_replicas, entry.config.init_args.clone());
            match Self::start_replicas(name, entry, count, &init_args, &self.env).await {
                Ok(fresh) => {
                    removed = std::mem::replace(&mut entry.replicas, fresh);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            entry.config = old;
            entry.replicas.append(&mut removed);
            return Err(e);
        }
        tracing::info!(
            backend = name,
            replicas = entry.replicas.len(),
            "backend config updated"
        );
        let queue = entry.queue.clone();
        self.publish(&mut state);
        queue.wake_all();
        drain(removed);
        Ok(())
    }

    async fn rescale(
        name: &str,
        entry: &mut BackendEntry,
        old: &BackendConfig,
        removed: &mut Vec<Arc<Replica>>,
        env: &ReplicaEnv,
    ) -> Result<(), ServeError> {
        let wanted = entry.config.num_replicas;
        if wanted < entry.replicas.len() {
            removed.extend(entry.replicas.drain(wanted..));
        }
        if old.user_config != entry.config.user_config {
            for replica in &entry.replicas {
                replica.reconfigure(&entry.config.user_config).await?;
            }
        }
        if wanted > entry.replicas.len() {
            let (count, init_args) = (
                wanted - entry.replicas.len(),
                entry.config.init_args.clone(),
            );
            let fresh = Self::start_replicas(name, entry, count, &init_args, env).await?;
            entry.replicas.extend(fresh);
        }
        Ok(())
    }

    /// Removes a backend; refused while an endpoint sends it traffic.
    pub(crate) async fn delete_backend(&self, name: &str) -> Result<(), ServeError> {
        let mut state = self.state.lock().await;
        if !state.backends.contains_key(name) {
            return Err(ServeError::BackendNotFound(name.to_owned()));
        }
        let users: Vec<&str> = state
            .endpoints
            .iter()
            .filter(|(_, e)| e.traffic.uses(name) || e.shadow.contains_key(name))
            .map(|(n, _)| n.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ServeError::Conflict(format!(
                "backend `{name}` is used by endpoint(s) {}; delete them or change their traffic first",
                users.join(", ")
            )));
        }
        let entry = state.backends.shift_remove(name);
        self.publish(&mut state);
        if let Some(entry) = entry {
            entry.queue.wake_all();
            drain(entry.replicas);
        }
        Ok(())
    }

    fn check_backends<'a>(
        state: &State,
        backends: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ServeError> {
        for backend in backends {
            if !state.backends.contains_key(backend) {
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
    pub(crate) async fn create_endpoint(
        &self,
        name: &str,
        mut config: EndpointConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let mut state = self.state.lock().await;
        if state.endpoints.contains_key(name) {
            return Err(ServeError::Conflict(format!(
                "endpoint `{name}` already exists"
            )));
        }
        if let Some(route) = &config.route
            && let Some((other, _)) = state
                .endpoints
                .iter()
                .find(|(_, e)| e.route.as_ref() == Some(route))
        {
            return Err(ServeError::Conflict(format!(
                "route `{route}` is already served by endpoint `{other}`"
            )));
        }
        Self::check_backends(&state, Self::endpoint_backends(&config))?;
        state.endpoints.insert(name.to_owned(), config);
        self.publish(&mut state);
        Ok(())
    }

    /// Removes an endpoint (its backends keep running).
    pub(crate) async fn delete_endpoint(&self, name: &str) -> Result<(), ServeError> {
        let mut state = self.state.lock().await;
        if state.endpoints.shift_remove(name).is_none() {
            return Err(ServeError::EndpointNotFound(name.to_owned()));
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Replaces an endpoint's traffic weights while it serves.
    pub(crate) async fn set_traffic(&self, name: &str, traffic: Traffic) -> Result<(), ServeError> {
        traffic.validate()?;
        let mut state = self.state.lock().await;
        Self::check_backends(&state, traffic.weights().map(|(b, _)| b))?;
        let endpoint = state
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
    pub(crate) async fn shadow_traffic(
        &self,
        name: &str,
        backend: &str,
        proportion: f64,
    ) -> Result<(), ServeError> {
        let mut state = self.state.lock().await;
        Self::check_backends(&state, [backend])?;
        let endpoint = state
            .endpoints
            .get_mut(name)
            .ok_or_else(|| ServeError::EndpointNotFound(name.to_owned()))?;
        crate::config::validate_shadow(&endpoint.traffic, backend, proportion)?;
        if proportion == 0.0 {
            endpoint.shadow.shift_remove(backend);
        } else {
            endpoint.shadow.insert(backend.to_owned(), proportion);
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Stops every replica once its requests are done.
    pub(crate) async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        state.endpoints.clear();
        let backends = std::mem::take(&mut state.backends);
        self.publish(&mut state);
        for (_, entry) in backends {
            entry.queue.wake_all();
            drain(entry.replicas);
        }
    }

    /// Builds the snapshot of `state` and swaps it in.
    fn publish(&self, state: &mut State) {
        state.version += 1;
        let backends: HashMap<String, Arc<BackendState>> = state
            .backends
            .iter()
            .map(|(name, entry)| {
                let backend = BackendState {
                    name: name.as_str().into(),
                    config: entry.config.clone(),
                    replicas: ReplicaSet::new(
                        entry.replicas.clone(),
                        entry.config.effective_max_concurrent_queries(),
                    ),
                    queue: entry.queue.clone(),
                };
                (name.clone(), Arc::new(backend))
            })
            .collect();
        let mut endpoints = HashMap::with_capacity(state.endpoints.len());
        let mut routes = RouteTable::default();
        let mut routes_json = serde_json::Map::new();
        for (name, config) in &state.endpoints {
            let traffic =
                WeightedChoice::new(config.traffic.weights().filter_map(|(backend, weight)| {
                    backends.get(backend).map(|b| (weight, b.clone()))
                }));
            let allow = config
                .methods
                .iter()
                .map(http::Method::as_str)
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
            });
            if let Some(route) = &config.route {
                routes.insert(route, endpoint.clone());
                routes_json.insert(route.clone(), serde_json::Value::from(name.as_str()));
            }
            endpoints.insert(name.clone(), endpoint);
        }
        let routes_json = serde_json::to_vec(&routes_json).unwrap_or_else(|_| b"{}".to_vec());
        self.cell.publish(Snapshot {
            version: state.version,
            endpoints,
            backends,
            routes,
            routes_json: Bytes::from(routes_json),
        });
        tracing::debug!(version = state.version, "snapshot published");
    }
}

/// Lets removed replicas finish what they run, then drops them.
fn drain(replicas: Vec<Arc<Replica>>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_with_repeated_deaths() {
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(4), Duration::from_millis(800));
        assert_eq!(restart_delay(100), Duration::from_secs(10));
    }
}
