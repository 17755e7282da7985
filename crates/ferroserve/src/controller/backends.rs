//! Backend changes: create, update (scale, reconfigure, replace), delete, and replacing dead replicas — each starts replicas without holding the controller's lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Controller, DesiredBackend, Running, drain};
use crate::backend::{BackendFactory, Death, ReplicaContext};
use crate::config::BackendConfig;
use crate::error::ServeError;
use crate::replica::{LocalReplica, Replica};
use crate::router::WaitQueue;

/// How long after a death a restart waits: doubling with each death in the last minute.
pub(super) fn restart_delay(deaths_last_minute: usize) -> Duration {
    let doublings = u32::try_from(deaths_last_minute.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(7);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(10))
}

/// What a change of one backend works from, read under the lock.
struct Current {
    generation: u64,
    factory: BackendFactory,
    config: BackendConfig,
    replicas: Vec<Arc<dyn Replica>>,
}

impl Controller {
    /// Starts replicas `first..first + count` of backend `name` (no lock held).
    async fn start_replicas(
        &self,
        name: &str,
        factory: &BackendFactory,
        config: &BackendConfig,
        first: u64,
        count: usize,
    ) -> Result<Vec<Arc<dyn Replica>>, ServeError> {
        let mut started: Vec<Arc<dyn Replica>> = Vec::with_capacity(count);
        for n in (first..).take(count) {
            let ctx = ReplicaContext {
                backend: name.to_owned(),
                replica: format!("{name}#{n}"),
                init_args: config.init_args.clone(),
            };
            started.push(LocalReplica::start(ctx, factory, config, &self.env).await?);
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
        {
            let mut state = self.lock();
            if state.stopped {
                return Err(ServeError::ShuttingDown);
            }
            if state.desired.backends.contains_key(name) || !state.creating.insert(name.to_owned())
            {
                return Err(ServeError::Conflict(format!(
                    "backend `{name}` already exists"
                )));
            }
        }
        let count = config.num_replicas;
        let started = self.start_replicas(name, &factory, &config, 1, count).await;
        let mut state = self.lock();
        state.creating.remove(name);
        let replicas = started?;
        if state.stopped {
            drop(state);
            drain(replicas);
            return Err(ServeError::ShuttingDown);
        }
        state.generations += 1;
        let running = Running {
            generation: state.generations,
            replicas,
            queue: Arc::new(WaitQueue::default()),
            next_replica: count as u64,
            deaths: Vec::new(),
            changing: Arc::default(),
        };
        tracing::info!(backend = name, replicas = count, "backend started");
        state.actual.insert(name.to_owned(), running);
        state
            .desired
            .backends
            .insert(name.to_owned(), DesiredBackend { factory, config });
        self.publish(&mut state);
        Ok(())
    }

    /// What backend `name` is now.
    fn current(&self, name: &str) -> Result<Current, ServeError> {
        let state = self.lock();
        let (Some(desired), Some(running)) =
            (state.desired.backends.get(name), state.actual.get(name))
        else {
            return Err(ServeError::BackendNotFound(name.to_owned()));
        };
        Ok(Current {
            generation: running.generation,
            factory: desired.factory.clone(),
            config: desired.config.clone(),
            replicas: running.replicas.clone(),
        })
    }

    /// Reserves `count` replica numbers of backend `name`; the first of them.
    fn reserve_numbers(&self, name: &str, count: usize) -> u64 {
        let mut state = self.lock();
        state.actual.get_mut(name).map_or(0, |running| {
            let first = running.next_replica + 1;
            running.next_replica += count as u64;
            first
        })
    }

    /// Changes a backend's config while it serves: scales replicas up or down, hands a new
    /// `user_config` to every replica, replaces the replicas when `init_args` or batching
    /// change. On failure nothing changes.
    pub(crate) async fn update_backend_config(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let changing = {
            let state = self.lock();
            let running = state
                .actual
                .get(name)
                .ok_or_else(|| ServeError::BackendNotFound(name.to_owned()))?;
            running.changing.clone()
        };
        let _one_change_at_a_time = changing.lock().await;
        let wanted = config.num_replicas;
        let current = self.current(name)?;
        let old = &current.config;
        let same_instances = old.init_args == config.init_args
            && old.max_batch_size == config.max_batch_size
            && old.batch_wait_timeout_ms == config.batch_wait_timeout_ms;
        let (fresh, removed) = if same_instances {
            let kept = &current.replicas[..wanted.min(current.replicas.len())];
            if old.user_config != config.user_config {
                for replica in kept {
                    replica.reconfigure(&config.user_config).await?;
                }
            }
            let missing = wanted.saturating_sub(current.replicas.len());
            let first = self.reserve_numbers(name, missing);
            let fresh = self
                .start_replicas(name, &current.factory, &config, first, missing)
                .await?;
            (fresh, current.replicas[kept.len()..].to_vec())
        } else {
            let first = self.reserve_numbers(name, wanted);
            let fresh = self
                .start_replicas(name, &current.factory, &config, first, wanted)
                .await?;
            (fresh, current.replicas.clone())
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        let generation = state.actual.get(name).map(|r| r.generation);
        let (Some(running), Some(desired)) = (
            state.actual.get_mut(name),
            state.desired.backends.get_mut(name),
        ) else {
            drop(guard);
            drain(fresh);
            return Err(ServeError::BackendNotFound(name.to_owned()));
        };
        if generation != Some(current.generation) {
            drop(guard);
            drain(fresh);
            return Err(ServeError::Conflict(format!(
                "backend `{name}` was replaced while its config changed"
            )));
        }
        // Replicas may have died meanwhile: remove the ones to remove, keep the rest.
        running
            .replicas
            .retain(|r| !removed.iter().any(|gone| Arc::ptr_eq(gone, r)));
        running.replicas.extend(fresh);
        desired.config = config;
        tracing::info!(
            backend = name,
            replicas = running.replicas.len(),
            "backend config updated"
        );
        let queue = running.queue.clone();
        self.publish(state);
        drop(guard);
        queue.wake_all();
        drain(removed);
        Ok(())
    }

    /// Removes a backend; refused while an endpoint sends it traffic.
    pub(crate) fn delete_backend(&self, name: &str) -> Result<(), ServeError> {
        let mut state = self.lock();
        if !state.desired.backends.contains_key(name) {
            return Err(ServeError::BackendNotFound(name.to_owned()));
        }
        let users: Vec<&str> = state
            .desired
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
        state.desired.backends.shift_remove(name);
        let running = state.actual.remove(name);
        self.publish(&mut state);
        drop(state);
        if let Some(running) = running {
            running.queue.wake_all();
            drain(running.replicas);
        }
        Ok(())
    }

    /// Takes a dead replica out of service at once, then starts a new one with backoff.
    pub(super) async fn replace_dead(&self, death: Death) {
        let name = &*death.backend;
        let (mut delay, generation, changing) = {
            let mut state = self.lock();
            let Some(running) = state.actual.get_mut(name) else {
                return;
            };
            let Some(at) = running
                .replicas
                .iter()
                .position(|r| r.id() == &*death.replica)
            else {
                return;
            };
            running.replicas.remove(at);
            let now = Instant::now();
            running
                .deaths
                .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            running.deaths.push(now);
            let found = (
                restart_delay(running.deaths.len()),
                running.generation,
                running.changing.clone(),
            );
            self.publish(&mut state);
            found
        };
        loop {
            tokio::time::sleep(delay).await;
            let _one_change_at_a_time = changing.lock().await;
            let Ok(current) = self.current(name) else {
                return;
            };
            if current.generation != generation
                || current.replicas.len() >= current.config.num_replicas
            {
                return;
            }
            let first = self.reserve_numbers(name, 1);
            let started = self
                .start_replicas(name, &current.factory, &current.config, first, 1)
                .await;
            match started {
                Ok(fresh) => {
                    let mut state = self.lock();
                    let Some(running) = state
                        .actual
                        .get_mut(name)
                        .filter(|r| r.generation == generation)
                    else {
                        drop(state);
                        drain(fresh);
                        return;
                    };
                    for replica in &fresh {
                        tracing::info!(backend = name, replica = replica.id(), "replica restarted");
                    }
                    running.replicas.extend(fresh);
                    let queue = running.queue.clone();
                    self.publish(&mut state);
                    drop(state);
                    queue.wake_all();
                    return;
                }
                Err(e) => {
                    tracing::error!(backend = name, "restart failed: {e}");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
