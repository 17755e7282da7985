//! What a running instance shows of itself: the `/metrics` text, the dashboard's series sampled each second, the history of changes, and scaling a backend by its replica count.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use super::Serve;
use crate::controller::status::ReplicaState;
use crate::error::ServeError;
use crate::metrics::{Change, Metrics, Point, Scrape, SeriesReply};
use crate::router::SnapshotCell;

/// Samples `metrics` each second for the dashboard, until the instance is gone.
pub(super) async fn sample_every_second(cell: Weak<SnapshotCell>, metrics: Weak<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Seconds counted on the monotonic clock from the wall clock at start: a clock that
    // steps (NTP) neither freezes the charts nor forgets stats.
    let started = std::time::Instant::now();
    let epoch_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    loop {
        tick.tick().await;
        let (Some(cell), Some(metrics)) = (cell.upgrade(), metrics.upgrade()) else {
            return;
        };
        let snapshot = cell.load_full();
        let now_s = epoch_s + started.elapsed().as_secs();
        let queued = |backend: &str| {
            snapshot
                .backends
                .get(backend)
                .map_or(0, |b| b.replicas.queue().len())
        };
        let backends_of = |endpoint: &str| {
            snapshot.endpoints.get(endpoint).map_or_else(Vec::new, |e| {
                e.config
                    .traffic
                    .weights()
                    .map(|(backend, _)| backend.to_owned())
                    .collect()
            })
        };
        metrics.sample(now_s, &queued, &backends_of);
    }
}

impl Serve {
    /// The Prometheus text of `GET /metrics`: Ray Serve's metric names and labels, with
    /// the replica gauges read from the status.
    pub(crate) fn metrics_text(&self) -> String {
        let status = self.node_status();
        let mut scrape = Scrape::default();
        for (backend, report) in &status.backends {
            scrape.queued.push((backend.clone(), report.queued));
            scrape.counts.push((
                backend.clone(),
                report.target_replicas,
                report.running_replicas,
            ));
            for replica in &report.replicas {
                let healthy = matches!(replica.state, ReplicaState::Running)
                    && replica.last_health_check.as_ref().is_none_or(|c| c.ok);
                scrape.replicas.push((
                    backend.clone(),
                    replica.id.clone(),
                    replica.in_flight,
                    healthy,
                ));
            }
        }
        scrape.encode(self.controller.metrics())
    }

    /// The last 15 minutes of an endpoint (or, with `backend`, a backend) at 1 s, after
    /// `since_s`; `None` for a name with no series.
    pub(crate) fn series(&self, backend: bool, name: &str, since_s: u64) -> Option<SeriesReply> {
        self.controller.metrics().series(backend, name, since_s)
    }

    /// The last few seconds of every endpoint and backend.
    pub(crate) fn latest(&self) -> (BTreeMap<String, Point>, BTreeMap<String, Point>) {
        self.controller.metrics().latest()
    }

    /// The last changes, newest first.
    pub(crate) fn history(&self) -> Vec<Change> {
        self.history.list()
    }

    /// Runs backend `name` on `replicas` replicas, in place.
    pub async fn scale_backend(&self, name: &str, replicas: usize) -> Result<(), ServeError> {
        let config = self.controller.backend_config(name)?;
        self.update_backend_config(name, config.num_replicas(replicas))
            .await
    }
}
