//! Autoscaling across the cluster: every node reports the load of each autoscaled backend (requests running on its own replicas plus those queued at its router); the leader adds them up, asks the backend's policy once a second, and places the count it calls for.
//!
//! The policy is the single node's (`controller::autoscale`), fed the cluster's load; each
//! node's own autoscaler stands down and runs the share the placement gives it. A new
//! leader starts from the count placed last, so a change of leader does not reset it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::model::Placement;
use super::node::Inner;
use crate::config::BackendSpec;
use crate::controller::autoscale::{self, Autoscaler};

/// The leader's policy for one backend, and the count it chose last.
pub(super) struct Scaler {
    policy: Autoscaler,
    total: usize,
}

/// The leader's policies, by backend.
pub(super) type Scalers = std::sync::Mutex<BTreeMap<String, Scaler>>;

/// While this node leads: samples, decides, and writes a new placement when a count
/// changes. (Ends when the node leaves: its tasks are aborted.)
pub(super) async fn drive(inner: Arc<Inner>) {
    let start = tokio::time::Instant::now();
    let mut tick = autoscale::sampling();
    loop {
        tick.tick().await;
        let Some(revision) = inner.leading() else {
            // Another node decides; should this one lead again, it starts afresh.
            scalers(&inner).clear();
            continue;
        };
        if decide(&inner, start.elapsed())
            && let Err(e) = super::election::reconcile(&inner, revision).await
        {
            tracing::warn!(node = inner.me.name, "placement after autoscaling: {e}");
        }
    }
}

fn scalers(inner: &Inner) -> std::sync::MutexGuard<'_, BTreeMap<String, Scaler>> {
    inner.scalers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records each autoscaled backend's load over every node at `now`; whether a count
/// changed.
fn decide(inner: &Inner, now: Duration) -> bool {
    let view = inner.view();
    let Some((app, _)) = &view.app else {
        return false;
    };
    let mut scalers = scalers(inner);
    scalers.retain(|name, _| app.backends.iter().any(|b| &b.name == name));
    let mut changed = false;
    for backend in &app.backends {
        let Some(wanted) = &backend.config.autoscaling_config else {
            scalers.remove(&backend.name);
            continue;
        };
        let load: usize = view
            .reports
            .values()
            .filter_map(|report| report.load.get(&backend.name))
            .sum();
        let placed = placed_total(view.placement.as_ref(), backend);
        let scaler = scalers
            .entry(backend.name.clone())
            .or_insert_with(|| Scaler {
                policy: Autoscaler::new(wanted.clone()),
                total: placed,
            });
        if scaler.policy.config() != wanted {
            *scaler = Scaler {
                policy: Autoscaler::new(wanted.clone()),
                total: placed,
            };
        }
        #[allow(clippy::cast_precision_loss)]
        scaler.policy.record(now, load as f64);
        let next = scaler.policy.decide(now, scaler.total);
        if next != scaler.total {
            tracing::info!(
                backend = backend.name,
                replicas = next,
                load,
                "autoscaling: the cluster's load calls for {next} replicas"
            );
            scaler.total = next;
            changed = true;
        }
    }
    changed
}

/// How many replicas of `backend` the placement has (placed or not), else the count it
/// starts with.
fn placed_total(placement: Option<&Placement>, backend: &BackendSpec) -> usize {
    placement
        .and_then(|p| {
            let placed = p.backends.get(&backend.name)?.values().sum::<usize>();
            Some(placed + p.unplaced.get(&backend.name).copied().unwrap_or(0))
        })
        .unwrap_or(backend.config.num_replicas)
}

/// How many replicas of `backend` to place: an autoscaled one's count as the leader's
/// policy chose it (or as placed last), another's `num_replicas`.
pub(super) fn replicas_to_place(
    inner: &Inner,
    placement: Option<&Placement>,
    backend: &BackendSpec,
) -> usize {
    if backend.config.autoscaling_config.is_none() {
        return backend.config.num_replicas;
    }
    scalers(inner)
        .get(&backend.name)
        .map_or_else(|| placed_total(placement, backend), |s| s.total)
}
