//! The last 15 minutes of each endpoint and backend at 1 s: requests/s, error rate, p50/p90/p99 latency and queue length, from the counters' differences second to second.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::histogram::Counts;

/// How many seconds are kept.
pub(crate) const WINDOW_S: u64 = 15 * 60;
/// How many seconds [`Store::latest`] averages over.
const LATEST_S: usize = 5;

/// An endpoint's or a backend's series.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Endpoint,
    Backend,
}

/// The counters of one endpoint or backend at one second.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sample {
    /// The latency histogram (its count is part of the requests).
    pub(crate) latency: Counts,
    /// Requests not in the histogram (handle calls; requests refused before a slot).
    pub(crate) extra_requests: u64,
    /// Requests that failed.
    pub(crate) errors: u64,
    /// Requests queued now (a gauge).
    pub(crate) queued: usize,
}

impl Sample {
    fn requests(&self) -> u64 {
        self.latency.count() + self.extra_requests
    }
}

/// One point of a series.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Point {
    /// Requests per second.
    pub(crate) rps: f64,
    /// The share of them that failed (0 to 1).
    pub(crate) error_rate: f64,
    /// Latency percentiles in milliseconds (`null` when nothing was timed).
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    /// Requests waiting for a replica.
    pub(crate) queued: usize,
}

impl Point {
    /// The point for what happened between `earlier` and `later`, `seconds` apart.
    fn between(earlier: &Sample, later: &Sample, seconds: u64) -> Self {
        let latency = later.latency.since(&earlier.latency);
        let requests = later.requests().saturating_sub(earlier.requests());
        let errors = later.errors.saturating_sub(earlier.errors);
        let ms = |q: f64| latency.quantile(q).map(|us| us.round() / 1000.0);
        #[allow(clippy::cast_precision_loss)]
        Self {
            rps: requests as f64 / seconds.max(1) as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                (errors as f64 / requests as f64).min(1.0)
            },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            queued: later.queued,
        }
    }
}

/// One endpoint's or backend's history.
#[derive(Default)]
struct Series {
    /// (second, point), oldest first, at most [`WINDOW_S`].
    points: VecDeque<(u64, Point)>,
    /// The last few raw samples, newest last.
    samples: VecDeque<(u64, Sample)>,
    /// The last second it had a request or a queue (or was made).
    active_s: u64,
}

/// Every series.
#[derive(Default)]
pub(crate) struct Store {
    series: HashMap<(Kind, String), Series>,
}

/// A series as `GET /api/series` answers it: one array per measure.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SeriesReply {
    /// Seconds between points.
    pub(crate) interval_s: u64,
    /// Each point's time, in seconds since the Unix epoch.
    pub(crate) t: Vec<u64>,
    pub(crate) rps: Vec<f64>,
    pub(crate) error_rate: Vec<f64>,
    pub(crate) p50_ms: Vec<Option<f64>>,
    pub(crate) p90_ms: Vec<Option<f64>>,
    pub(crate) p99_ms: Vec<Option<f64>>,
    pub(crate) queued: Vec<usize>,
}

impl Store {
    /// Records `sample`, taken at second `at_s`, for `name`.
    pub(crate) fn record(&mut self, kind: Kind, name: &str, at_s: u64, sample: Sample) {
        let series = self
            .series
            .entry((kind, name.to_owned()))
            .or_insert_with(|| Series {
                active_s: at_s,
                // Stats are made with their endpoint or backend, less than a sampling
                // period before their first sample: the first point counts from zero.
                samples: VecDeque::from([(at_s.saturating_sub(1), Sample::default())]),
                ..Series::default()
            });
        if let Some((last_s, last)) = series.samples.back() {
            if *last_s >= at_s {
                return;
            }
            let point = Point::between(last, &sample, at_s - last_s);
            if point.rps > 0.0 || point.queued > 0 {
                series.active_s = at_s;
            }
            series.points.push_back((at_s, point));
            while series
                .points
                .front()
                .is_some_and(|(t, _)| *t + WINDOW_S <= at_s)
            {
                series.points.pop_front();
            }
        }
        series.samples.push_back((at_s, sample));
        if series.samples.len() > LATEST_S + 1 {
            series.samples.pop_front();
        }
    }

    /// Whether `name` was made or active within the window before `at_s`.
    pub(crate) fn recent(&self, kind: Kind, name: &str, at_s: u64) -> bool {
        self.series
            .get(&(kind, name.to_owned()))
            .is_some_and(|s| s.active_s + WINDOW_S > at_s)
    }

    /// Forgets `name`'s series.
    pub(crate) fn remove(&mut self, kind: Kind, name: &str) {
        self.series.remove(&(kind, name.to_owned()));
    }

    /// `name`'s points after second `since_s`.
    pub(crate) fn reply(&self, kind: Kind, name: &str, since_s: u64) -> Option<SeriesReply> {
        let series = self.series.get(&(kind, name.to_owned()))?;
        let mut reply = SeriesReply {
            interval_s: 1,
            ..SeriesReply::default()
        };
        for (t, point) in series.points.iter().filter(|(t, _)| *t > since_s) {
            reply.t.push(*t);
            reply.rps.push(point.rps);
            reply.error_rate.push(point.error_rate);
            reply.p50_ms.push(point.p50_ms);
            reply.p90_ms.push(point.p90_ms);
            reply.p99_ms.push(point.p99_ms);
            reply.queued.push(point.queued);
        }
        Some(reply)
    }

    /// Each series of `kind` over its last few seconds.
    pub(crate) fn latest(&self, kind: Kind) -> BTreeMap<String, Point> {
        self.series
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), series)| {
                let point = match (series.samples.front(), series.samples.back()) {
                    (Some((t0, first)), Some((t1, last))) if t1 > t0 => {
                        Point::between(first, last, t1 - t0)
                    }
                    (_, Some((_, last))) => Point {
                        queued: last.queued,
                        ..Point::default()
                    },
                    _ => Point::default(),
                };
                (name.clone(), point)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    fn sample(histogram: &Histogram, errors: u64, queued: usize) -> Sample {
        Sample {
            latency: histogram.read(),
            extra_requests: 0,
            errors,
            queued,
        }
    }

    #[test]
    fn points_are_the_differences_second_to_second() {
        let histogram = Histogram::default();
        let mut store = Store::default();
        store.record(Kind::Endpoint, "e", 100, sample(&histogram, 0, 0));
        for _ in 0..10 {
            histogram.record(std::time::Duration::from_millis(2));
        }
        store.record(Kind::Endpoint, "e", 101, sample(&histogram, 5, 3));
        let reply = store.reply(Kind::Endpoint, "e", 0).expect("a series");
        assert_eq!(reply.t, vec![100, 101], "the first point counts from zero");
        assert_eq!(reply.rps, vec![0.0, 10.0]);
        assert_eq!(reply.error_rate, vec![0.0, 0.5]);
        assert_eq!(reply.queued, vec![0, 3]);
        let p50 = reply.p50_ms[1].expect("timed");
        assert!((1.5..=2.0).contains(&p50), "{p50}");
        assert!(
            store
                .reply(Kind::Endpoint, "e", 101)
                .expect("some")
                .t
                .is_empty()
        );
        assert!(store.reply(Kind::Backend, "e", 0).is_none());
        let latest = store.latest(Kind::Endpoint);
        assert_eq!(latest["e"].rps, 5.0, "10 requests over the 2 s kept");
    }

    #[test]
    fn the_window_is_bounded() {
        let histogram = Histogram::default();
        let mut store = Store::default();
        for t in 0..2000 {
            store.record(Kind::Backend, "b", t, sample(&histogram, 0, 0));
        }
        let reply = store.reply(Kind::Backend, "b", 0).expect("a series");
        assert_eq!(reply.t.len(), usize::try_from(WINDOW_S).expect("small"));
        assert_eq!(reply.t.first(), Some(&(2000 - WINDOW_S)));
        assert!(store.recent(Kind::Backend, "b", 100), "made at 0");
        assert!(
            !store.recent(Kind::Backend, "b", 1999),
            "idle for the window"
        );
    }
}
