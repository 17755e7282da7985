//! Drives autoscaling: once a second, each autoscaled backend's load (requests running on its replicas plus those queued) goes to its policy, and a new replica count is applied as a change in place (new replicas start before they serve; removed ones drain).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Controller;
use super::autoscale::Autoscaler;
use crate::config::BackendConfig;

/// A backend's load here: requests running on this node's own replicas plus those
/// queued (a request sent to another node's replica counts there).
fn load(running: &super::Running) -> usize {
    running
        .replicas
        .iter()
        .filter(|r| !r.is_remote())
        .map(|r| r.in_flight())
        .sum::<usize>()
        + running.queue.len()
}

/// Samples and scales until the controller is gone.
pub(super) async fn drive(controller: Weak<Controller>) {
    let start = tokio::time::Instant::now();
    let mut tick = super::autoscale::sampling();
    loop {
        tick.tick().await;
        let Some(controller) = controller.upgrade() else {
            return;
        };
        for (name, config) in controller.autoscale(start.elapsed()) {
            let controller = controller.clone();
            tokio::spawn(async move { controller.scale(name, config).await });
        }
    }
}

impl Controller {
    /// Records each autoscaled backend's load at `now`, and the backends whose policy
    /// calls for another replica count, with their config at that count.
    fn autoscale(&self, now: Duration) -> Vec<(String, BackendConfig)> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.stopped || state.draining || state.scaled_by_cluster {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for (name, running) in &state.actual {
            let Some(desired) = state.desired.backends.get(name) else {
                continue;
            };
            let Some(wanted) = &desired.config.autoscaling_config else {
                state.scalers.remove(name);
                continue;
            };
            let scaler = state
                .scalers
                .entry(name.clone())
                .or_insert_with(|| Autoscaler::new(wanted.clone()));
            if scaler.config() != wanted {
                *scaler = Autoscaler::new(wanted.clone());
            }
            scaler.record(now, load(running) as f64);
            let current = desired.config.num_replicas;
            let next = scaler.decide(now, current);
            // One change of a backend at a time, and none while another change runs.
            if next != current && running.condition.is_none() && !state.scaling.contains(name) {
                changes.push((name.clone(), desired.config.clone().num_replicas(next)));
            }
        }
        for (name, _) in &changes {
            state.scaling.insert(name.clone());
        }
        changes
    }

    /// From now on the cluster scales autoscaled backends: this node's autoscaler stands
    /// down, and an apply runs the replica count it is given.
    pub(crate) fn scale_by_cluster(&self) {
        let mut state = self.lock();
        state.scaled_by_cluster = true;
        state.scalers.clear();
    }

    /// The load of each autoscaled backend here: requests running on this node's own
    /// replicas plus those waiting in its queue (a cluster's leader adds up every node's).
    #[cfg(feature = "cluster")]
    pub(crate) fn autoscaled_load(&self) -> std::collections::BTreeMap<String, usize> {
        let state = self.lock();
        state
            .actual
            .iter()
            .filter(|(name, _)| {
                state
                    .desired
                    .backends
                    .get(*name)
                    .is_some_and(|d| d.config.autoscaling_config.is_some())
            })
            .map(|(name, running)| (name.clone(), load(running)))
            .collect()
    }

    /// Applies an autoscaler's new replica count to backend `name`.
    async fn scale(self: Arc<Self>, name: String, config: BackendConfig) {
        tracing::info!(
            backend = name,
            replicas = config.num_replicas,
            "autoscaling: the load calls for {} replicas",
            config.num_replicas
        );
        if let Err(e) = self.update_backend_config(&name, config).await {
            tracing::warn!(backend = name, "autoscaling: the change failed: {e}");
        }
        self.lock().scaling.remove(&name);
    }
}
