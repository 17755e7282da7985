//! Lock-free latency histograms: fine fixed buckets in microseconds, one cache line set per thread shard, read by summing the shards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::shard;

/// The upper bounds of the buckets, in microseconds (a last bucket takes the rest). Every
/// bound of Ray Serve's latency buckets (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500,
/// 1000, 2000, 5000, 10000, 60000 ms) is one of them, so Ray's histogram is exact; the
/// finer ones give the dashboard its percentiles below a millisecond.
pub(crate) const BOUNDS_US: [u64; 36] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000,
    20_000, 30_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 750_000,
    1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000, 7_500_000, 10_000_000, 20_000_000,
    30_000_000, 60_000_000,
];

/// Ray Serve's latency buckets, in milliseconds.
pub(crate) const RAY_BUCKETS_MS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0, 5000.0,
    10000.0, 60000.0,
];

/// The buckets of batch sizes (Ray's `ray_serve_actual_batch_size` uses powers of two).
pub(crate) const BATCH_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];

const BUCKETS: usize = BOUNDS_US.len() + 1;

/// One thread shard's counts, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    /// The sum of the values recorded, in microseconds (or units for sizes).
    sum: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// A histogram of durations (or sizes, with [`Histogram::record_value`]), recorded by
/// many threads at once without a lock and without sharing a cache line between cores.
pub(crate) struct Histogram {
    bounds: &'static [u64],
    shards: Box<[Shard]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(&BOUNDS_US)
    }
}

impl Histogram {
    /// A histogram with these upper bounds (at most 36, ascending).
    pub(crate) fn with_bounds(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.len() < BUCKETS && bounds.is_sorted());
        Self {
            bounds,
            shards: (0..shard::COUNT).map(|_| Shard::default()).collect(),
        }
    }

    /// Records one duration.
    pub(crate) fn record(&self, took: Duration) {
        self.record_value(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one value in the histogram's own unit.
    pub(crate) fn record_value(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        let shard = &self.shards[shard::index()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a value of 0 (a request that did not wait), with one atomic add.
    pub(crate) fn record_zero(&self) {
        self.shards[shard::index()].buckets[0].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, summed over the shards.
    pub(crate) fn read(&self) -> Counts {
        let mut counts = Counts {
            bounds: self.bounds,
            buckets: [0; BUCKETS],
            sum: 0,
        };
        for shard in &*self.shards {
            for (total, bucket) in counts.buckets.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            counts.sum += shard.sum.load(Ordering::Relaxed);
        }
        counts
    }
}

/// A histogram's counts at one moment: per bucket (not cumulative), and their sum.
#[derive(Clone, Copy)]
pub(crate) struct Counts {
    bounds: &'static [u64],
    buckets: [u64; BUCKETS],
    sum: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            bounds: &BOUNDS_US,
            buckets: [0; BUCKETS],
            sum: 0,
        }
    }
}

impl Counts {
    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the values (microseconds for durations).
    pub(crate) fn sum(&self) -> u64 {
        self.sum
    }

    /// Adds `other`'s counts (of a histogram with the same bounds).
    pub(crate) fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// What was recorded since `earlier` (counts only grow; a wrap reads as 0).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut delta = *self;
        for (d, e) in delta.buckets.iter_mut().zip(&earlier.buckets) {
            *d = d.saturating_sub(*e);
        }
        delta.sum = self.sum.saturating_sub(earlier.sum);
        delta
    }

    /// The counts between each of `bounds` (each one of the histogram's bounds, in the
    /// same unit) and the one before, then `(u64::MAX, the rest)`: Prometheus buckets
    /// before the encoder sums them up.
    pub(crate) fn at_bounds(&self, bounds: &[u64]) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut i = 0;
        for &bound in bounds.iter().chain(&[u64::MAX]) {
            let mut n = 0;
            while i < self.buckets.len()
                && self.bounds.get(i).is_none_or(|&b| b <= bound)
                && (i < self.bounds.len() || bound == u64::MAX)
            {
                n += self.buckets[i];
                i += 1;
            }
            out.push((bound, n));
        }
        out
    }

    /// The `q` quantile (0..=1), interpolated within its bucket; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // Only the buckets this histogram's bounds make (sizes have fewer).
        let buckets = &self.buckets[..=self.bounds.len().min(BUCKETS - 1)];
        #[allow(clippy::cast_precision_loss)]
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in buckets.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let (lower, upper) = (
                i.checked_sub(1)
                    .and_then(|j| self.bounds.get(j))
                    .copied()
                    .unwrap_or(0) as f64,
                self.bounds.get(i).map_or_else(
                    // The last bucket has no bound: say its lower one.
                    || self.bounds.last().copied().unwrap_or(0),
                    |&b| b,
                ) as f64,
            );
            #[allow(clippy::cast_precision_loss)]
            if n > 0 && (below + n) as f64 >= rank {
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        self.bounds.last().map(|&b| {
            #[allow(clippy::cast_precision_loss)]
            let last = b as f64;
            last
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_bounds_are_among_the_fine_ones() {
        for ms in RAY_BUCKETS_MS {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let us = (ms * 1000.0) as u64;
            assert!(BOUNDS_US.contains(&us), "{ms} ms");
        }
    }

    #[test]
    fn counts_sum_over_threads() {
        let histogram = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let histogram = histogram.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        histogram.record(Duration::from_micros(400));
                    }
                    histogram.record_zero();
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let counts = histogram.read();
        assert_eq!(counts.count(), 8008);
        assert_eq!(counts.sum(), 8 * 1000 * 400);
        let buckets = counts.at_bounds(&[300, 500, 1000]);
        assert_eq!(
            buckets,
            vec![(300, 8), (500, 8000), (1000, 0), (u64::MAX, 0)]
        );
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let histogram = Histogram::default();
        assert_eq!(histogram.read().quantile(0.5), None);
        for _ in 0..100 {
            histogram.record(Duration::from_micros(900)); // the 750..1000 bucket
        }
        let p50 = histogram.read().quantile(0.5).expect("some");
        assert!((750.0..=1000.0).contains(&p50), "{p50}");
        let earlier = histogram.read();
        for _ in 0..100 {
            histogram.record(Duration::from_secs(100)); // past the last bound
        }
        let recent = histogram.read().since(&earlier);
        assert_eq!(recent.count(), 100);
        assert_eq!(recent.quantile(0.99), Some(60_000_000.0));
    }

    #[test]
    fn sizes_use_their_own_bounds() {
        let sizes = Histogram::with_bounds(&BATCH_BOUNDS);
        sizes.record_value(3);
        sizes.record_value(8);
        let counts = sizes.read();
        assert_eq!(
            counts.at_bounds(&BATCH_BOUNDS)[1..4],
            [(2, 0), (4, 1), (8, 1)]
        );
        let big = Histogram::with_bounds(&BATCH_BOUNDS);
        big.record_value(5000);
        let buckets = big.read().at_bounds(&BATCH_BOUNDS);
        assert_eq!(buckets.last(), Some(&(u64::MAX, 1)), "past the last bound");
        assert_eq!(
            big.read().quantile(0.5),
            Some(2048.0),
            "no panic past 12 bounds"
        );
    }
}
