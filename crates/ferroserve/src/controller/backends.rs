//! Backend changes: create, update in place (scale, reconfigure, limits), delete, and replacing dead replicas — each starts replicas without holding the controller's lock.

use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::status::{BackendStatus, ReplicaInfo, ReplicaState};
use super::{Controller, DesiredBackend, Running, drain};
use crate::backend::{BackendFactory, Death, ReplicaContext};
use crate::config::{BackendConfig, BackendKind};
use crate::error::ServeError;
use crate::replica::{LocalReplica, Replica};

/// How long after a death a restart waits: doubling with each death in the last minute.
pub(super) fn restart_delay(deaths_last_minute: usize) -> Duration {
    let doublings = u32::try_from(deaths_last_minute.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(7);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(10))
}

/// What a change of one backend works from, read under the lock.
pub(super) struct Current {
    pub(super) generation: u64,
    pub(super) factory: BackendFactory,
    pub(super) config: BackendConfig,
    pub(super) kind: Option<BackendKind>,
    pub(super) replicas: Vec<Arc<dyn Replica>>,
}

impl Controller {
    /// Starts replicas `first..first + count` of backend `name` (no lock held), each
    /// passing one health check before it is handed back. They show as `STARTING` until
    /// the caller puts them in service; `restarts` is what they inherit.
    pub(super) async fn start_replicas(
        &self,
        name: &str,
        factory: &BackendFactory,
        config: &BackendConfig,
        first: u64,
        count: usize,
        restarts: u32,
    ) -> Result<Vec<Arc<dyn Replica>>, ServeError> {
        let ids: Vec<Arc<str>> = (first..)
            .take(count)
            .map(|n| format!("{name}#{n}").into())
            .collect();
        self.with_infos(name, |infos| {
            for id in &ids {
                infos.insert(id.clone(), ReplicaInfo::starting(restarts));
            }
        });
        // Started side by side (a Python replica spends its start importing), as many at
        // once as there are cores; each one is health-checked once before it counts.
        let one = |id: Arc<str>| async move {
            let ctx = ReplicaContext {
                backend: name.to_owned(),
                replica: id.to_string(),
                init_args: config.init_args.clone(),
            };
            let replica = LocalReplica::start(ctx, factory, config, &self.env).await?;
            self.metrics().backend(name).starts.add(1);
            let replica = replica as Arc<dyn Replica>;
            let checked =
                tokio::time::timeout(config.health_check_timeout(), replica.check_health()).await;
            let why = match checked {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "its first health check took longer than {:?}",
                    config.health_check_timeout()
                )),
            };
            let pid = replica.pid();
            self.with_infos(name, |infos| {
                if let Some(info) = infos.get_mut(&id) {
                    info.pid = pid;
                    info.checked(why.clone().map_or(Ok(()), Err));
                }
            });
            match why {
                None => Ok(replica),
                Some(message) => {
                    drain(vec![replica]);
                    Err(ServeError::StartFailed {
                        backend: name.to_owned(),
                        message: format!("replica `{id}`: {message}"),
                    })
                }
            }
        };
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let outcomes: Vec<Result<Arc<dyn Replica>, ServeError>> =
            futures_util::stream::iter(ids.iter().cloned().map(one))
                .buffered(at_once)
                .collect()
                .await;
        let mut started: Vec<Arc<dyn Replica>> = Vec::with_capacity(count);
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(replica) => started.push(replica),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            self.with_infos(name, |infos| {
                for id in &ids {
                    infos.shift_remove(id);
                }
            });
            drain(started);
            return Err(e);
        }
        Ok(started)
    }

    /// Runs `f` on the replica records of backend `name`: its running ones, or, while it
    /// is being created, those starting.
    fn with_infos(
        &self,
        name: &str,
        f: impl FnOnce(&mut indexmap::IndexMap<Arc<str>, ReplicaInfo>),
    ) {
        let mut state = self.lock();
        if let Some(running) = state.actual.get_mut(name) {
            f(&mut running.info);
        } else if let Some(infos) = state.starting.get_mut(name) {
            f(infos);
        }
    }

    /// Adds a backend and starts its replicas; nothing is published if one fails to start.
    pub(crate) async fn create_backend(
        &self,
        name: &str,
        factory: BackendFactory,
        config: BackendConfig,
        kind: Option<BackendKind>,
    ) -> Result<(), ServeError> {
        config.validate_share()?;
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
            state.failed.shift_remove(name);
            state
                .starting
                .insert(name.to_owned(), indexmap::IndexMap::new());
        }
        let count = config.num_replicas;
        let started = self
            .start_replicas(name, &factory, &config, 1, count, 0)
            .await;
        let mut state = self.lock();
        state.creating.remove(name);
        let mut infos = state.starting.remove(name).unwrap_or_default();
        let replicas = match started {
            Ok(replicas) => replicas,
            Err(e) => {
                state.failed.insert(name.to_owned(), e.to_string());
                return Err(e);
            }
        };
        if state.stopped {
            drop(state);
            drain(replicas);
            return Err(ServeError::ShuttingDown);
        }
        state.generations += 1;
        for info in infos.values_mut() {
            info.state = ReplicaState::Running;
        }
        let mut running = Running::new(state.generations, replicas, count as u64);
        running.info = infos;
        tracing::info!(backend = name, replicas = count, "backend started");
        state.actual.insert(name.to_owned(), running);
        state.desired.backends.insert(
            name.to_owned(),
            DesiredBackend {
                factory,
                config,
                kind,
            },
        );
        self.publish(&mut state);
        Ok(())
    }

    /// What backend `name` is now.
    pub(super) fn current(&self, name: &str) -> Result<Current, ServeError> {
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
            kind: desired.kind.clone(),
            replicas: running.replicas.clone(),
        })
    }

    /// Backend `name`'s desired config (any backend, Rust closures' too).
    pub(crate) fn backend_config(&self, name: &str) -> Result<BackendConfig, ServeError> {
        self.current(name).map(|current| current.config)
    }

    /// Reserves `count` replica numbers of backend `name`; the first of them.
    pub(super) fn reserve_numbers(&self, name: &str, count: usize) -> u64 {
        let mut state = self.lock();
        state.actual.get_mut(name).map_or(0, |running| {
            let first = running.next_replica + 1;
            running.next_replica += count as u64;
            first
        })
    }

    /// Sets or clears backend `name`'s condition (`UPDATING`, `DEPLOY_FAILED`).
    pub(super) fn set_condition(&self, name: &str, condition: Option<(BackendStatus, String)>) {
        if let Some(running) = self.lock().actual.get_mut(name) {
            running.condition = condition;
        }
    }

    /// Changes a backend's config while it serves, as its code stays the same: scales up or
    /// down (the least busy replicas go first), hands a new `user_config` to every replica,
    /// applies concurrency and queue limits at once. A change of `init_args`, batching or
    /// `version` replaces the replicas in a rolling update. On failure nothing changes.
    pub(crate) async fn update_backend_config(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        let (factory, kind) = {
            let current = self.current(name)?;
            (current.factory, current.kind)
        };
        self.update_backend(name, factory, config, kind).await
    }

    /// Changes backend `name` to `config`, made by `factory`: in place when only what can
    /// change in place differs, else (a new kind of code, such as another ONNX model file
    /// or version, `init_args`, batching or `version`) by a rolling update.
    pub(crate) async fn update_backend(
        &self,
        name: &str,
        factory: BackendFactory,
        config: BackendConfig,
        kind: Option<BackendKind>,
    ) -> Result<(), ServeError> {
        config.validate_share()?;
        let changing = {
            let state = self.lock();
            let running = state
                .actual
                .get(name)
                .ok_or_else(|| ServeError::BackendNotFound(name.to_owned()))?;
            running.changing.clone()
        };
        let _one_change_at_a_time = changing.lock().await;
        let mut current = self.current(name)?;
        // Held here, the old replicas could not be dropped (and stopped) when they leave.
        let old = std::mem::take(&mut current.replicas);
        self.set_condition(
            name,
            Some((BackendStatus::Updating, "applying a change".to_owned())),
        );
        let new_code = kind.is_some() && kind != current.kind;
        let outcome = if new_code || current.config.needs_new_replicas(&config) {
            self.roll(name, &current, old, factory, config, kind).await
        } else {
            self.change_in_place(name, &current, old, config).await
        };
        match &outcome {
            Ok(()) => self.set_condition(name, None),
            Err(e) => {
                tracing::error!(backend = name, "change failed, the old version serves: {e}");
                self.set_condition(name, Some((BackendStatus::DeployFailed, e.to_string())));
            }
        }
        outcome
    }

    /// Scale, `user_config` and limits, with the same replicas.
    async fn change_in_place(
        &self,
        name: &str,
        current: &Current,
        mut by_load: Vec<Arc<dyn Replica>>,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        let wanted = config.num_replicas;
        // The least busy are removed first.
        by_load.sort_by_key(|r| std::cmp::Reverse(r.in_flight()));
        let kept = &by_load[..wanted.min(by_load.len())];
        if current.config.user_config != config.user_config {
            for replica in kept {
                self.with_infos(name, |infos| {
                    if let Some(info) = infos.get_mut(replica.id()) {
                        info.state = ReplicaState::Updating;
                    }
                });
                let limit = config.health_check_timeout();
                let done = tokio::time::timeout(limit, replica.reconfigure(&config.user_config))
                    .await
                    .unwrap_or_else(|_| {
                        // A replica stuck in `reconfigure` is replaced, as an unhealthy one is.
                        let _ = self.env.deaths.send(Death {
                            backend: name.into(),
                            replica: replica.id().into(),
                        });
                        Err(ServeError::StartFailed {
                            backend: name.to_owned(),
                            message: format!(
                                "replica `{}`: reconfigure took longer than {limit:?}; it is replaced",
                                replica.id()
                            ),
                        })
                    });
                self.with_infos(name, |infos| {
                    if let Some(info) = infos.get_mut(replica.id()) {
                        info.state = ReplicaState::Running;
                    }
                });
                done?;
            }
        }
        let missing = wanted.saturating_sub(by_load.len());
        let first = self.reserve_numbers(name, missing);
        let fresh = self
            .start_replicas(name, &current.factory, &config, first, missing, 0)
            .await?;
        let removed = by_load.split_off(kept.len());
        drop(by_load);
        let desired = DesiredBackend {
            factory: current.factory.clone(),
            config,
            kind: None,
        };
        self.swap(name, current.generation, fresh, &removed, Some(desired))
    }

    /// Puts `fresh` in service and `removed` out of it (draining them), and, with
    /// `desired`, makes it the backend's desired state (keeping its kind if it has none).
    pub(super) fn swap(
        &self,
        name: &str,
        generation: u64,
        fresh: Vec<Arc<dyn Replica>>,
        removed: &[Arc<dyn Replica>],
        desired: Option<DesiredBackend>,
    ) -> Result<(), ServeError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(running) = state
            .actual
            .get_mut(name)
            .filter(|r| r.generation == generation)
        else {
            drop(guard);
            drain(fresh);
            return Err(ServeError::Conflict(format!(
                "backend `{name}` was deleted or replaced while it changed"
            )));
        };
        // Replicas may have died meanwhile: remove the ones to remove, keep the rest.
        running
            .replicas
            .retain(|r| !removed.iter().any(|gone| Arc::ptr_eq(gone, r)));
        for replica in &fresh {
            running.mark(replica.id(), ReplicaState::Running);
        }
        // One that died while the others started: replaced at once, as any dead replica.
        let dead: Vec<Arc<str>> = fresh
            .iter()
            .filter(|r| !r.is_alive())
            .map(|r| Arc::from(r.id()))
            .collect();
        running.replicas.extend(fresh);
        for replica in dead {
            let _ = self.env.deaths.send(Death {
                backend: name.into(),
                replica,
            });
        }
        let queue = running.queue.clone();
        let count = running.replicas.len();
        let mut within = None;
        if let Some(mut new) = desired
            && let Some(old) = state.desired.backends.get_mut(name)
        {
            within = Some(old.config.graceful_shutdown_timeout());
            if new.kind.is_none() {
                new.kind = old.kind.take();
            }
            *old = new;
        }
        let within = within.unwrap_or_else(|| {
            state
                .desired
                .backends
                .get(name)
                .map_or(super::DRAIN_TIMEOUT, |d| {
                    d.config.graceful_shutdown_timeout()
                })
        });
        tracing::info!(backend = name, replicas = count, "backend changed");
        self.publish(state);
        drop(guard);
        queue.wake_all();
        self.retire(name, removed.to_vec(), within);
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
        let (mut delay, generation, changing, restarts) = {
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
            running.mark(&death.replica, ReplicaState::Recovering);
            let restarts = running.info.get(&*death.replica).map_or(0, |i| i.restarts) + 1;
            let now = Instant::now();
            running
                .deaths
                .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            running.deaths.push(now);
            let found = (
                restart_delay(running.deaths.len()),
                running.generation,
                running.changing.clone(),
                restarts,
            );
            self.publish(&mut state);
            found
        };
        let forget = |controller: &Self| {
            if let Some(running) = controller
                .lock()
                .actual
                .get_mut(name)
                .filter(|r| r.generation == generation)
            {
                running.info.shift_remove(&*death.replica);
            }
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
                forget(self);
                return;
            }
            let first = self.reserve_numbers(name, 1);
            let started = self
                .start_replicas(name, &current.factory, &current.config, first, 1, restarts)
                .await;
            match started {
                Ok(fresh) => {
                    for replica in &fresh {
                        tracing::info!(backend = name, replica = replica.id(), "replica restarted");
                    }
                    forget(self);
                    if let Some(running) = self.lock().actual.get_mut(name) {
                        running.failed_restarts = 0;
                    }
                    let _ = self.swap(name, generation, fresh, &[], None);
                    return;
                }
                Err(e) => {
                    tracing::error!(backend = name, "restart failed: {e}");
                    if let Some(running) = self.lock().actual.get_mut(name) {
                        running.failed_restarts += 1;
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
