//! The Prometheus text of a scrape, written with `prometheus-client`'s encoder under Ray Serve's metric names and labels, plus Ferroserve's queue/compute split.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::histogram::{Counts, RAY_BUCKETS_MS};
use super::{APPLICATION, Metrics};

/// Answers counted by (method, status).
type Answers = BTreeMap<(&'static str, u16), u64>;

/// One route label's answers (method, status, count) and latency.
type RouteAnswers = (String, Vec<(&'static str, u16, u64)>, Counts);

/// A label set: (name, already escaped value).
pub(crate) type Labels = Vec<(&'static str, String)>;

/// What one scrape reports beyond the counters: the gauges the controller's status has.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// Per replica: backend, replica id, requests running, whether it is healthy.
    pub(crate) replicas: Vec<(String, String, usize, bool)>,
    /// Per backend: requests waiting for a replica.
    pub(crate) queued: Vec<(String, usize)>,
    /// Per backend: the replicas it should run (what an autoscaler chose, or
    /// `num_replicas`) and those running.
    pub(crate) counts: Vec<(String, usize, usize)>,
}

impl Scrape {
    /// The text exposition of `metrics` and these gauges (OpenMetrics, which Prometheus
    /// and `promtool` read).
    pub(crate) fn encode(self, metrics: &Arc<Metrics>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collected {
            metrics: metrics.clone(),
            gauges: self,
        }));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!("cannot write the metrics: {e}");
        }
        text
    }
}

/// The classic Prometheus text (format 0.0.4) of OpenMetrics `text` as [`Scrape::encode`]
/// writes it: a counter's `HELP` and `TYPE` name its samples (`x_total`), and there is no
/// `# EOF` or `# UNIT`.
pub(crate) fn classic_text(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
struct Collected {
    metrics: Arc<Metrics>,
    gauges: Scrape,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One metric family being written.
struct Family<'e, 'w> {
    encoder: &'e mut DescriptorEncoder<'w>,
}

type Rows<T> = Vec<(Labels, T)>;

impl Family<'_, '_> {
    fn counters(&mut self, name: &str, help: &str, rows: Rows<u64>) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in rows {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    fn gauges(&mut self, name: &str, help: &str, rows: Rows<i64>) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in rows {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    /// Histograms of durations, in milliseconds at Ray's bounds.
    fn latencies(&mut self, name: &str, help: &str, rows: Rows<Counts>) -> std::fmt::Result {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bounds_us: Vec<u64> = RAY_BUCKETS_MS
            .iter()
            .map(|ms| (ms * 1000.0) as u64)
            .collect();
        self.histograms(name, help, rows, &bounds_us, 1000.0)
    }

    /// Histograms of durations, in seconds at Ray's bounds (and two below a millisecond).
    fn seconds(&mut self, name: &str, help: &str, rows: Rows<Counts>) -> std::fmt::Result {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bounds_us: Vec<u64> = [100, 500]
            .into_iter()
            .chain(RAY_BUCKETS_MS.iter().map(|ms| (ms * 1000.0) as u64))
            .collect();
        self.histograms(name, help, rows, &bounds_us, 1_000_000.0)
    }

    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        rows: Rows<Counts>,
        bounds: &[u64],
        per_unit: f64,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, counts) in rows {
            #[allow(clippy::cast_precision_loss)]
            let buckets: Vec<(f64, u64)> = counts
                .at_bounds(bounds)
                .into_iter()
                .map(|(bound, n)| {
                    let upper = if bound == u64::MAX {
                        f64::MAX
                    } else {
                        bound as f64 / per_unit
                    };
                    (upper, n)
                })
                .collect();
            #[allow(clippy::cast_precision_loss)]
            let sum = counts.sum() as f64 / per_unit;
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, counts.count(), &buckets, None)?;
        }
        Ok(())
    }
}

fn app() -> (&'static str, String) {
    ("application", APPLICATION.to_owned())
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut family = Family {
            encoder: &mut encoder,
        };
        let endpoints = self.metrics.endpoints();
        // By route label: an endpoint renamed, or replaced on the same route, leaves its
        // old stats for a while, and one label set must be one sample.
        let mut by_route: BTreeMap<String, (Answers, Counts)> = BTreeMap::new();
        for e in endpoints
            .iter()
            .chain(std::iter::once(&self.metrics.unrouted))
        {
            let (answers, latency) = by_route.entry(escape(&e.route())).or_default();
            for (method, status, n) in e.answers.read() {
                *answers.entry((method, status)).or_default() += n;
            }
            latency.add(&e.latency.read());
        }
        let http: Vec<RouteAnswers> = by_route
            .into_iter()
            .map(|(route, (answers, latency))| {
                let answers = answers.into_iter().map(|((m, s), n)| (m, s, n)).collect();
                (route, answers, latency)
            })
            .collect();
        let answers = |errors_only: bool, status_label: &'static str| -> Rows<u64> {
            http.iter()
                .flat_map(|(route, answers, _)| {
                    answers
                        .iter()
                        .filter(move |(_, status, _)| !errors_only || *status >= 400)
                        .map(move |(method, status, n)| {
                            let labels = vec![
                                ("route", route.clone()),
                                ("method", (*method).to_owned()),
                                app(),
                                (status_label, status.to_string()),
                            ];
                            (labels, *n)
                        })
                })
                .collect()
        };
        family.counters(
            "ray_serve_num_http_requests",
            "HTTP requests answered, by route, method and status code.",
            answers(false, "status_code"),
        )?;
        family.counters(
            "ray_serve_num_http_error_requests",
            "HTTP requests answered with a 4xx or 5xx status.",
            answers(true, "error_code"),
        )?;
        family.latencies(
            "ray_serve_http_request_latency_ms",
            "HTTP request latency in milliseconds, from the request head to the answer.",
            http.iter()
                .filter(|(_, _, latency)| latency.count() > 0)
                .map(|(route, _, latency)| (vec![("route", route.clone()), app()], *latency))
                .collect(),
        )?;
        family.counters(
            "ray_serve_handle_request_counter",
            "Handle calls made to an endpoint from code.",
            endpoints
                .iter()
                .map(|e| {
                    let labels = vec![
                        ("handle", escape(&e.name)),
                        ("route", escape(&e.route())),
                        app(),
                    ];
                    (labels, e.handle_calls.get())
                })
                .collect(),
        )?;
        self.encode_backends(&mut family)?;
        self.encode_gauges(&mut family)
    }
}

impl Collected {
    fn encode_backends(&self, family: &mut Family<'_, '_>) -> std::fmt::Result {
        let backends = self.metrics.backends();
        let rows: Vec<_> = backends
            .iter()
            .map(|b| {
                let labels = vec![("deployment", escape(&b.name)), app()];
                (labels, b)
            })
            .collect();
        let queue: Vec<_> = rows.iter().map(|(_, b)| b.queue.read()).collect();
        let compute: Vec<_> = rows.iter().map(|(_, b)| b.compute.read()).collect();
        let each = |value: &dyn Fn(usize) -> u64| -> Rows<u64> {
            rows.iter()
                .enumerate()
                .map(|(i, (labels, _))| (labels.clone(), value(i)))
                .collect()
        };
        family.counters(
            "ray_serve_deployment_request_counter",
            "Requests sent to a backend (HTTP and handle calls).",
            each(&|i| queue[i].count()),
        )?;
        family.counters(
            "ray_serve_deployment_error_counter",
            "Requests to a backend that ended in an error (shed, timed out, failed, cancelled).",
            each(&|i| rows[i].1.errors.get()),
        )?;
        let histograms = |counts: &[Counts]| -> Rows<Counts> {
            rows.iter()
                .zip(counts)
                .map(|((labels, _), c)| (labels.clone(), *c))
                .collect()
        };
        family.latencies(
            "ray_serve_deployment_processing_latency_ms",
            "Time a request spends on a replica (compute), in milliseconds.",
            histograms(&compute),
        )?;
        // Queue time apart from compute time, in base units: Triton's queue and compute
        // durations are the `_sum`s.
        family.seconds(
            "ferroserve_deployment_queue_seconds",
            "Time a request waits for a replica slot of a backend (queue), in seconds.",
            histograms(&queue),
        )?;
        family.seconds(
            "ferroserve_deployment_compute_seconds",
            "Time a request spends on a replica of a backend (compute), in seconds.",
            histograms(&compute),
        )?;
        family.counters(
            "ray_serve_deployment_replica_starts",
            "Replicas started, replacements included.",
            each(&|i| rows[i].1.starts.get()),
        )?;
        family.gauges(
            "ray_serve_batch_queue_length",
            "Requests waiting in the batch queues of a backend's replicas.",
            rows.iter()
                .map(|(labels, b)| {
                    let queued = b.batch_queued.load(std::sync::atomic::Ordering::Relaxed);
                    (labels.clone(), queued.max(0))
                })
                .collect(),
        )?;
        family.histograms(
            "ray_serve_actual_batch_size",
            "The sizes of the batches a backend ran.",
            rows.iter()
                .map(|(labels, b)| (labels.clone(), b.batch_sizes.read()))
                .filter(|(_, counts)| counts.count() > 0)
                .collect(),
            &super::histogram::BATCH_BOUNDS,
            1.0,
        )
    }

    fn encode_gauges(&self, family: &mut Family<'_, '_>) -> std::fmt::Result {
        let per_replica = |value: &dyn Fn(usize, bool) -> i64| -> Rows<i64> {
            self.gauges
                .replicas
                .iter()
                .map(|(backend, replica, in_flight, healthy)| {
                    let labels = vec![
                        ("deployment", escape(backend)),
                        ("replica", escape(replica)),
                        app(),
                    ];
                    (labels, value(*in_flight, *healthy))
                })
                .collect()
        };
        family.gauges(
            "ray_serve_replica_processing_queries",
            "Requests a replica runs now.",
            per_replica(&|in_flight, _| i64::try_from(in_flight).unwrap_or(i64::MAX)),
        )?;
        family.gauges(
            "ray_serve_deployment_replica_healthy",
            "1 when a replica is running and passed its last health check, else 0.",
            per_replica(&|_, healthy| i64::from(healthy)),
        )?;
        let per_backend = |value: &dyn Fn(usize, usize) -> usize| -> Rows<i64> {
            self.gauges
                .counts
                .iter()
                .map(|(backend, target, running)| {
                    let labels = vec![("deployment", escape(backend)), app()];
                    let n = value(*target, *running);
                    (labels, i64::try_from(n).unwrap_or(i64::MAX))
                })
                .collect()
        };
        family.gauges(
            "ray_serve_deployment_target_replicas",
            "The replicas a backend should run: what its autoscaler chose, or num_replicas.",
            per_backend(&|target, _| target),
        )?;
        family.gauges(
            "ray_serve_deployment_running_replicas",
            "The replicas of a backend that serve now.",
            per_backend(&|_, running| running),
        )?;
        family.gauges(
            "ray_serve_deployment_queued_queries",
            "Requests waiting for a replica slot of a backend.",
            self.gauges
                .queued
                .iter()
                .map(|(backend, queued)| {
                    let labels = vec![("deployment", escape(backend)), app()];
                    (labels, i64::try_from(*queued).unwrap_or(i64::MAX))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_text_has_rays_names_and_escaped_labels() {
        let metrics = Arc::new(Metrics::default());
        // An old endpoint on the same route: one sample per label set, summed.
        let old = metrics.endpoint("old", Some("/he\"llo"));
        old.answered(
            super::super::method_index(&http::Method::GET),
            200,
            Duration::ZERO,
        );
        let endpoint = metrics.endpoint("hello", Some("/he\"llo"));
        let get = super::super::method_index(&http::Method::GET);
        endpoint.answered(get, 200, Duration::from_millis(3));
        endpoint.answered(get, 503, Duration::from_millis(1));
        let backend = metrics.backend("b");
        let mut timing = backend.begin();
        timing.no_wait();
        timing.finish(true);
        let text = Scrape {
            replicas: vec![("b".into(), "b#0".into(), 2, true)],
            queued: vec![("b".into(), 4)],
            counts: vec![("b".into(), 3, 2)],
        }
        .encode(&metrics);
        for line in [
            r#"ray_serve_num_http_requests_total{route="/he\"llo",method="GET",application="default",status_code="200"} 2"#,
            r#"ray_serve_num_http_error_requests_total{route="/he\"llo",method="GET",application="default",error_code="503"} 1"#,
            r#"ray_serve_http_request_latency_ms_bucket{le="5.0",route="/he\"llo",application="default"} 3"#,
            r#"ray_serve_deployment_request_counter_total{deployment="b",application="default"} 1"#,
            r#"ray_serve_replica_processing_queries{deployment="b",replica="b#0",application="default"} 2"#,
            r#"ray_serve_deployment_queued_queries{deployment="b",application="default"} 4"#,
            r#"ray_serve_deployment_target_replicas{deployment="b",application="default"} 3"#,
            r#"ray_serve_deployment_running_replicas{deployment="b",application="default"} 2"#,
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let classic = classic_text(&text);
        assert!(classic.contains("# TYPE ray_serve_num_http_requests_total counter\n"));
        assert!(classic.contains("# HELP ray_serve_num_http_requests_total HTTP requests"));
        assert!(classic.contains("# TYPE ray_serve_http_request_latency_ms histogram\n"));
        assert!(!classic.contains("# EOF"));
    }
}
