//! Passive outlier ejection of remote replicas: 5 failures in a row (connection errors or 5xx) take a replica out of routing for 30 s × the times it was ejected, while at most half of its backend's remote replicas are out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures in a row that eject a replica.
pub(crate) const FAILURES_TO_EJECT: u32 = 5;
/// How long a first ejection lasts; the n-th lasts n times as long.
pub(crate) const BASE_EJECTION: Duration = Duration::from_secs(30);
/// The longest ejection.
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(300);

/// The policy, as a pure function: how long to eject a replica that has failed
/// `failures_in_a_row` times and was ejected `times_before` times already, when
/// `ejected_now` of its backend's `replicas` remote replicas are out; `None` to keep it.
///
/// At most half of the replicas are out at once, but at least one may be (as Envoy does):
/// otherwise a backend with one remote replica could never eject it.
pub(crate) fn ejection(
    failures_in_a_row: u32,
    times_before: u32,
    ejected_now: usize,
    replicas: usize,
) -> Option<Duration> {
    if failures_in_a_row < FAILURES_TO_EJECT {
        return None;
    }
    let cap = (replicas / 2).max(1);
    if ejected_now >= cap {
        return None;
    }
    Some(
        BASE_EJECTION
            .saturating_mul(times_before.saturating_add(1))
            .min(MAX_EJECTION),
    )
}

/// One remote replica's record: failures in a row, times ejected, and until when it is out.
#[derive(Debug, Default)]
pub(crate) struct Outlier {
    failures: AtomicU32,
    times: AtomicU32,
    /// Milliseconds after its [`Ejections`]' epoch until which it is out; 0 when it is in.
    until_ms: AtomicU64,
}

/// The ejections of one backend's remote replicas, shared by all of them.
#[derive(Debug)]
pub(crate) struct Ejections {
    epoch: Instant,
    /// How many remote replicas the backend has.
    replicas: AtomicUsize,
    /// Who is out, until when (only touched when a replica fails often enough).
    out: Mutex<HashMap<String, Instant>>,
}

impl Default for Ejections {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            replicas: AtomicUsize::new(0),
            out: Mutex::default(),
        }
    }
}

impl Ejections {
    /// The backend now has `n` remote replicas.
    pub(crate) fn set_replicas(&self, n: usize) {
        self.replicas.store(n, Ordering::Relaxed);
    }

    /// Whether the replica of `outlier` is out at `now`.
    pub(crate) fn is_ejected(&self, outlier: &Outlier, now: Instant) -> bool {
        let until = outlier.until_ms.load(Ordering::Relaxed);
        until != 0 && now < self.epoch + Duration::from_millis(until)
    }

    /// Whether the replica of `outlier` is out now (reads the clock only when it was out).
    pub(crate) fn is_ejected_now(&self, outlier: &Outlier) -> bool {
        outlier.until_ms.load(Ordering::Relaxed) != 0 && self.is_ejected(outlier, Instant::now())
    }

    /// Records the outcome of one call to replica `id`; when it ejects the replica, for how
    /// long.
    pub(crate) fn record(
        &self,
        id: &str,
        outlier: &Outlier,
        failed: bool,
        now: Instant,
    ) -> Option<Duration> {
        if !failed {
            outlier.failures.store(0, Ordering::Relaxed);
            return None;
        }
        let failures = outlier.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < FAILURES_TO_EJECT || self.is_ejected(outlier, now) {
            return None;
        }
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.retain(|_, until| *until > now);
        let times = outlier.times.load(Ordering::Relaxed);
        let replicas = self.replicas.load(Ordering::Relaxed);
        let period = ejection(failures, times, out.len(), replicas)?;
        let until = now + period;
        out.insert(id.to_owned(), until);
        outlier
            .times
            .store(times.saturating_add(1), Ordering::Relaxed);
        outlier.failures.store(0, Ordering::Relaxed);
        let ms = u64::try_from(until.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        outlier.until_ms.store(ms.max(1), Ordering::Relaxed);
        Some(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_ejects_after_five_and_grows_each_time() {
        assert_eq!(ejection(4, 0, 0, 4), None, "four are not enough");
        assert_eq!(ejection(5, 0, 0, 4), Some(Duration::from_secs(30)));
        assert_eq!(ejection(5, 1, 0, 4), Some(Duration::from_secs(60)));
        assert_eq!(ejection(9, 2, 0, 4), Some(Duration::from_secs(90)));
        assert_eq!(ejection(5, 1000, 0, 4), Some(MAX_EJECTION));
        assert_eq!(ejection(5, u32::MAX, 0, 4), Some(MAX_EJECTION));
    }

    #[test]
    fn at_most_half_are_out_but_one_always_may_be() {
        assert_eq!(ejection(5, 0, 1, 4), Some(BASE_EJECTION));
        assert_eq!(ejection(5, 0, 2, 4), None, "2 of 4 are out");
        assert_eq!(ejection(5, 0, 2, 5), None, "half of 5 is 2");
        assert_eq!(ejection(5, 0, 0, 1), Some(BASE_EJECTION), "the only one");
        assert_eq!(ejection(5, 0, 1, 1), None);
        assert_eq!(ejection(5, 0, 0, 0), Some(BASE_EJECTION));
    }

    #[test]
    fn ejections_follow_a_fake_clock() {
        let ejections = Ejections::default();
        ejections.set_replicas(2);
        let (a, b) = (Outlier::default(), Outlier::default());
        let t0 = ejections.epoch + Duration::from_secs(1);
        for _ in 0..4 {
            assert_eq!(ejections.record("a", &a, true, t0), None);
        }
        assert_eq!(
            ejections.record("a", &a, false, t0),
            None,
            "a success resets the count"
        );
        for _ in 0..4 {
            assert_eq!(ejections.record("a", &a, true, t0), None);
        }
        assert_eq!(ejections.record("a", &a, true, t0), Some(BASE_EJECTION));
        assert!(ejections.is_ejected(&a, t0));
        assert!(ejections.is_ejected(&a, t0 + Duration::from_secs(29)));
        assert!(!ejections.is_ejected(&a, t0 + Duration::from_secs(30)));
        // b fails as often while a is out: 1 of 2 may be out, so b stays.
        for _ in 0..10 {
            assert_eq!(ejections.record("b", &b, true, t0), None);
        }
        assert!(!ejections.is_ejected(&b, t0));
        // Once a is back, b goes; then a again, for twice as long, once b is back.
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(ejections.record("b", &b, true, t1), Some(BASE_EJECTION));
        for _ in 0..5 {
            assert_eq!(ejections.record("a", &a, true, t1), None, "b is out");
        }
        let t2 = t1 + Duration::from_secs(31);
        assert_eq!(ejections.record("a", &a, true, t2), Some(BASE_EJECTION * 2));
        assert!(ejections.is_ejected(&a, t2 + Duration::from_secs(59)));
        assert!(!ejections.is_ejected(&a, t2 + Duration::from_secs(60)));
    }
}
