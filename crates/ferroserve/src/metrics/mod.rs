//! What the request path counts: lock-free per-endpoint and per-backend stats that outlive snapshots, the registry that hands them out by name, their Prometheus text, and the last 15 minutes at 1 s for the dashboard.
//!
//! The request path only adds to atomics on cache lines of its own thread (see `shard`);
//! names are resolved once, when a snapshot is built. Gauges the request path does not
//! keep (replicas in flight, queue lengths, health) are read from the controller's status
//! when `/metrics` is scraped, by the layer that has it.

mod counter;
mod encode;
mod histogram;
mod history;
mod series;
mod shard;

pub(crate) use counter::{Counter, StatusCounts, method_index};
pub(crate) use encode::{Scrape, classic_text};
pub(crate) use histogram::Histogram;
pub(crate) use history::{Change, History};
pub(crate) use series::{Point, Sample, SeriesReply};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Ray Serve's application label: Ferroserve serves one app.
pub(crate) const APPLICATION: &str = "default";

/// What one endpoint counts: its HTTP answers and their latency, and handle calls.
pub(crate) struct EndpointStats {
    name: Arc<str>,
    /// Its route as last published (`""` when it has none): Ray's `route` label.
    route: Mutex<Arc<str>>,
    /// HTTP answers by method and status.
    pub(crate) answers: StatusCounts,
    /// HTTP latency, from the request head to the answer.
    pub(crate) latency: Histogram,
    /// Handle calls made to it.
    pub(crate) handle_calls: Counter,
}

impl EndpointStats {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            route: Mutex::new("".into()),
            answers: StatusCounts::default(),
            latency: Histogram::default(),
            handle_calls: Counter::default(),
        }
    }

    /// Stats in no registry (an empty snapshot's, a test's).
    pub(crate) fn detached() -> Arc<Self> {
        Arc::new(Self::new("".into()))
    }

    /// Counts one HTTP answer, to a request of method label `method` ([`method_index`]),
    /// that took `took`.
    #[inline]
    pub(crate) fn answered(&self, method: u32, status: u16, took: Duration) {
        self.answers.add(method, status);
        self.latency.record(took);
    }

    /// Its route label.
    fn route(&self) -> Arc<str> {
        self.route
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What one backend counts: requests, errors, time queued and time computing, replica
/// starts, and its batches.
pub(crate) struct BackendStats {
    name: Arc<str>,
    /// Time from the router to a replica slot, for every request sent to the backend
    /// (its count is the backend's request count).
    pub(crate) queue: Histogram,
    /// Time on the replica.
    pub(crate) compute: Histogram,
    /// Requests that ended in an error (shed, timed out, failed, cancelled).
    pub(crate) errors: Counter,
    /// Replicas started, replacements included.
    pub(crate) starts: Counter,
    /// Requests waiting in the batch queues of its replicas.
    pub(crate) batch_queued: AtomicI64,
    /// The sizes of the batches it ran.
    pub(crate) batch_sizes: Histogram,
}

impl BackendStats {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            queue: Histogram::default(),
            compute: Histogram::default(),
            errors: Counter::default(),
            starts: Counter::default(),
            batch_queued: AtomicI64::new(0),
            batch_sizes: Histogram::with_bounds(&histogram::BATCH_BOUNDS),
        }
    }

    /// Stats for a test, in no registry.
    #[cfg(test)]
    pub(crate) fn detached(name: &str) -> Arc<Self> {
        Arc::new(Self::new(name.into()))
    }

    /// Starts timing one request sent to this backend.
    #[inline]
    pub(crate) fn begin(&self) -> Timing<'_> {
        Timing {
            stats: self,
            start: Instant::now(),
            computing: None,
            recorded: false,
        }
    }
}

/// One request's time in a backend: recorded as queue time once it has a slot, as compute
/// time when it ends. Dropped before [`Timing::finish`] (a timeout, a caller that left),
/// it counts as an error.
pub(crate) struct Timing<'a> {
    stats: &'a BackendStats,
    start: Instant,
    /// When it got its slot, once it has.
    computing: Option<Instant>,
    recorded: bool,
}

impl Timing<'_> {
    /// It got a slot without waiting.
    #[inline]
    pub(crate) fn no_wait(&mut self) {
        self.stats.queue.record_zero();
        self.computing = Some(self.start);
    }

    /// It got a slot after waiting.
    pub(crate) fn waited(&mut self) {
        let now = Instant::now();
        self.stats.queue.record(now - self.start);
        self.computing = Some(now);
    }

    /// The same request, counted by `stats` instead (it failed over to another backend
    /// before it had a slot): nothing is recorded for this one.
    pub(crate) fn moved_to(mut self, stats: &BackendStats) -> Timing<'_> {
        self.recorded = true;
        Timing {
            stats,
            start: self.start,
            computing: self.computing,
            recorded: false,
        }
    }

    /// It ended, well or not.
    #[inline]
    pub(crate) fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        match self.computing {
            Some(since) => self.stats.compute.record(since.elapsed()),
            // Refused before it had a slot (shed, or no replica): its time queued.
            None => self.stats.queue.record(self.start.elapsed()),
        }
        if !ok {
            self.stats.errors.add(1);
        }
    }
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Every endpoint's and backend's stats, by name, and their recent history.
pub(crate) struct Metrics {
    endpoints: Mutex<BTreeMap<Arc<str>, Arc<EndpointStats>>>,
    backends: Mutex<BTreeMap<Arc<str>, Arc<BackendStats>>>,
    /// HTTP requests that matched no endpoint (route `""`).
    pub(crate) unrouted: Arc<EndpointStats>,
    series: Mutex<series::Store>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            endpoints: Mutex::default(),
            backends: Mutex::default(),
            unrouted: Arc::new(EndpointStats::new("".into())),
            series: Mutex::new(series::Store::default()),
        }
    }
}

impl Metrics {
    /// The stats of endpoint `name`, made on first use; `route` becomes its route label.
    pub(crate) fn endpoint(&self, name: &str, route: Option<&str>) -> Arc<EndpointStats> {
        let stats = lock(&self.endpoints)
            .entry(name.into())
            .or_insert_with(|| Arc::new(EndpointStats::new(name.into())))
            .clone();
        let route: Arc<str> = route.unwrap_or_default().into();
        let mut current = stats.route.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != route {
            *current = route;
        }
        drop(current);
        stats
    }

    /// The stats of backend `name`, made on first use.
    pub(crate) fn backend(&self, name: &str) -> Arc<BackendStats> {
        lock(&self.backends)
            .entry(name.into())
            .or_insert_with(|| Arc::new(BackendStats::new(name.into())))
            .clone()
    }

    /// Every endpoint's stats, by name.
    pub(crate) fn endpoints(&self) -> Vec<Arc<EndpointStats>> {
        lock(&self.endpoints).values().cloned().collect()
    }

    /// Every backend's stats, by name.
    pub(crate) fn backends(&self) -> Vec<Arc<BackendStats>> {
        lock(&self.backends).values().cloned().collect()
    }

    /// Takes this second's sample for the dashboard: each endpoint and backend's counts,
    /// and the queue lengths `queued` gives by backend name; `endpoint_backends` gives the
    /// backends of an endpoint (its queue is theirs). Stats nothing has used for the
    /// whole window are forgotten.
    pub(crate) fn sample(
        &self,
        at_s: u64,
        queued: &dyn Fn(&str) -> usize,
        endpoint_backends: &dyn Fn(&str) -> Vec<String>,
    ) {
        let endpoints = self.endpoints();
        let backends = self.backends();
        let mut series = lock(&self.series);
        for stats in &endpoints {
            let queue = endpoint_backends(&stats.name)
                .iter()
                .map(|b| queued(b))
                .sum();
            let sample = Sample {
                latency: stats.latency.read(),
                extra_requests: stats.handle_calls.get(),
                errors: stats
                    .answers
                    .read()
                    .iter()
                    .filter(|(_, status, _)| *status >= 500)
                    .map(|(_, _, n)| n)
                    .sum(),
                queued: queue,
            };
            series.record(series::Kind::Endpoint, &stats.name, at_s, sample);
        }
        for stats in &backends {
            let compute = stats.compute.read();
            let sample = Sample {
                latency: compute,
                extra_requests: stats.queue.read().count().saturating_sub(compute.count()),
                errors: stats.errors.get(),
                queued: queued(&stats.name),
            };
            series.record(series::Kind::Backend, &stats.name, at_s, sample);
        }
        drop((series, endpoints, backends));
        self.forget_unused(at_s);
    }

    /// Drops stats only the registry holds whose series have been empty for the window.
    fn forget_unused(&self, at_s: u64) {
        let mut series = lock(&self.series);
        lock(&self.endpoints).retain(|name, stats| {
            let keep =
                Arc::strong_count(stats) > 1 || series.recent(series::Kind::Endpoint, name, at_s);
            if !keep {
                series.remove(series::Kind::Endpoint, name);
            }
            keep
        });
        lock(&self.backends).retain(|name, stats| {
            let keep =
                Arc::strong_count(stats) > 1 || series.recent(series::Kind::Backend, name, at_s);
            if !keep {
                series.remove(series::Kind::Backend, name);
            }
            keep
        });
    }

    /// The series of an endpoint (`backend` false) or backend, after `since_s`.
    pub(crate) fn series(&self, backend: bool, name: &str, since_s: u64) -> Option<SeriesReply> {
        let kind = if backend {
            series::Kind::Backend
        } else {
            series::Kind::Endpoint
        };
        lock(&self.series).reply(kind, name, since_s)
    }

    /// The last few seconds of every endpoint and backend.
    pub(crate) fn latest(&self) -> (BTreeMap<String, Point>, BTreeMap<String, Point>) {
        let series = lock(&self.series);
        (
            series.latest(series::Kind::Endpoint),
            series.latest(series::Kind::Backend),
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds `delta` to a gauge kept as an atomic (batch queue lengths).
pub(crate) fn gauge_add(gauge: &AtomicI64, delta: i64) {
    gauge.fetch_add(delta, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timing_records_once_and_counts_a_drop_as_an_error() {
        let stats = BackendStats::detached("b");
        let mut timing = stats.begin();
        timing.no_wait();
        timing.finish(true);
        {
            let mut timing = stats.begin();
            timing.waited();
        }
        drop(stats.begin());
        assert_eq!(
            stats.queue.read().count(),
            3,
            "every request is counted once"
        );
        assert_eq!(stats.compute.read().count(), 2, "two got a slot");
        assert_eq!(stats.errors.get(), 2, "the dropped ones");
    }

    #[test]
    fn stats_are_shared_by_name_and_forgotten_when_unused() {
        let metrics = Metrics::default();
        let a = metrics.endpoint("a", Some("/a"));
        assert!(Arc::ptr_eq(&a, &metrics.endpoint("a", Some("/b"))));
        assert_eq!(&*a.route(), "/b", "the route label follows the config");
        drop(a);
        drop(metrics.backend("b"));
        metrics.sample(1000, &|_| 0, &|_| Vec::new());
        assert_eq!(metrics.endpoints().len(), 1, "kept for the window");
        metrics.sample(1000 + 901, &|_| 0, &|_| Vec::new());
        assert!(metrics.endpoints().is_empty() && metrics.backends().is_empty());
    }
}
