//! Health checks: each backend's running replicas are checked every `health_check_period_s`, and one that fails three checks in a row (or whose check outlasts `health_check_timeout_s`) is replaced as a dead one is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Controller;
use super::status::ReplicaState;
use crate::backend::Death;
use crate::replica::Replica;

/// Checks failed in a row after which a replica is replaced.
pub(super) const FAILURE_THRESHOLD: u32 = 3;
/// The longest the health loop sleeps between looks at which backends are due.
pub(super) const MAX_TICK: Duration = Duration::from_secs(1);
/// The shortest.
const MIN_TICK: Duration = Duration::from_millis(10);

/// A backend whose replicas are due a check: its name, the timeout, the replicas.
type Due = (String, Duration, Vec<Arc<dyn Replica>>);

impl Controller {
    /// How long the health loop sleeps next: the shortest backend period, within
    /// [`MIN_TICK`] and [`MAX_TICK`].
    pub(super) fn health_tick(&self) -> Duration {
        let state = self.lock();
        state
            .desired
            .backends
            .values()
            .map(|b| b.config.health_check_period())
            .min()
            .unwrap_or(MAX_TICK)
            .clamp(MIN_TICK, MAX_TICK)
    }

    /// Starts the checks of every backend whose period has passed and whose last checks
    /// are over, each backend on a task of its own (one stuck check delays no other
    /// backend); records each outcome, and replaces a replica that failed
    /// [`FAILURE_THRESHOLD`] checks in a row.
    pub(super) fn check_health(&self) {
        let due: Vec<Due> = {
            let mut state = self.lock();
            let now = Instant::now();
            let state = &mut *state;
            state
                .actual
                .iter_mut()
                .filter_map(|(name, running)| {
                    let config = &state.desired.backends.get(name)?.config;
                    let period = config.health_check_period();
                    if running.checking
                        || running
                            .last_checked
                            .is_some_and(|at| now.duration_since(at) < period)
                    {
                        return None;
                    }
                    running.last_checked = Some(now);
                    running.checking = true;
                    let timeout = config.health_check_timeout();
                    Some((name.clone(), timeout, running.replicas.clone()))
                })
                .collect()
        };
        for (backend, timeout, replicas) in due {
            let Some(controller) = self.me.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                let checks = replicas.into_iter().map(|replica| {
                    let (controller, backend) = (&controller, &backend);
                    async move {
                        let outcome = match tokio::time::timeout(timeout, replica.check_health())
                            .await
                        {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!("its health check took longer than {timeout:?}")),
                        };
                        controller.record_check(backend, replica.id(), outcome);
                    }
                });
                futures_util::future::join_all(checks).await;
                if let Some(running) = controller.lock().actual.get_mut(&backend) {
                    running.checking = false;
                }
            });
        }
    }

    /// Records one check of replica `id`; a third failure in a row replaces it.
    fn record_check(&self, backend: &str, id: &str, outcome: Result<(), String>) {
        let why = outcome.clone().err();
        let failed = {
            let mut state = self.lock();
            let Some(info) = state
                .actual
                .get_mut(backend)
                .and_then(|r| r.info.get_mut(id))
                .filter(|i| i.state == ReplicaState::Running)
            else {
                return;
            };
            info.checked(outcome)
        };
        let Some(why) = why else {
            return;
        };
        if failed < FAILURE_THRESHOLD {
            tracing::warn!(
                backend,
                replica = id,
                "health check {failed} of {FAILURE_THRESHOLD} failed: {why}"
            );
            return;
        }
        tracing::error!(
            backend,
            replica = id,
            "unhealthy ({failed} checks failed in a row), replacing it: {why}"
        );
        let _ = self.env.deaths.send(Death {
            backend: backend.into(),
            replica: id.into(),
        });
    }
}
