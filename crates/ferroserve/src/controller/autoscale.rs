//! The autoscaling policy: a pure function of the load seen over the look-back window and the replica count, with a dead band between scaling up and down and a delay in each direction, so that it never oscillates.
//!
//! Like Ray Serve's, it aims at `target_ongoing_requests` per replica and closes a share
//! of the gap (`upscaling_factor`, `downscaling_factor`) once the need has lasted
//! `upscale_delay_s` or `downscale_delay_s`. Unlike it, it scales down only below 80 % of
//! the target (the dead band) and never below what the load needs at the target, so that a
//! step down cannot call for a step up (ray#18925) or leave busy replicas short
//! (ray#43034).

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::AutoscalingConfig;

/// Below this share of the target load per replica, fewer replicas are called for; between
/// it and the target, the count stays.
const DOWN_BAND: f64 = 0.8;

/// How often the load is sampled and the policy asked: an interval that, when a tick is
/// late, waits a whole period for the next instead of bursting. A node's autoscaler and the
/// cluster leader's run on it.
pub(crate) fn sampling() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Which way the load calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The policy's state for one backend: the recent load, and since when it has called for
/// a change.
#[derive(Debug)]
pub(crate) struct Autoscaler {
    config: AutoscalingConfig,
    /// (when, requests running and queued over all replicas).
    samples: VecDeque<(Duration, f64)>,
    /// The direction the load calls for, and since when.
    pending: Option<(Direction, Duration)>,
}

impl Autoscaler {
    /// A policy for `config`.
    pub(crate) fn new(config: AutoscalingConfig) -> Self {
        Self {
            config,
            samples: VecDeque::new(),
            pending: None,
        }
    }

    /// What it was made for.
    pub(crate) fn config(&self) -> &AutoscalingConfig {
        &self.config
    }

    /// Records the load at `now` (any monotonic clock): requests running plus queued, over
    /// every replica of the backend.
    pub(crate) fn record(&mut self, now: Duration, load: f64) {
        let load = if load.is_finite() { load.max(0.0) } else { 0.0 };
        self.samples.push_back((now, load));
        let window = Duration::from_secs_f64(self.config.look_back_period_s);
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > window)
        {
            self.samples.pop_front();
        }
    }

    /// The average load over the look-back window, if anything was recorded.
    fn average(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let sum: f64 = self.samples.iter().map(|(_, load)| load).sum();
        Some(sum / self.samples.len() as f64)
    }

    /// The replica count to run at `now`, `current` running.
    pub(crate) fn decide(&mut self, now: Duration, current: usize) -> usize {
        let (min, max) = (self.config.min_replicas, self.config.max_replicas);
        if current < min || current > max {
            self.pending = None;
            return current.clamp(min, max);
        }
        let Some(load) = self.average() else {
            return current;
        };
        if current == 0 {
            // Scaled to zero: the first request starts one at once (it waits in the queue).
            return if load > 0.0 { 1.min(max) } else { 0 };
        }
        let (direction, wanted) = self.wanted(load, current);
        let wanted = wanted.clamp(min, max);
        let Some(direction) = direction.filter(|_| wanted != current) else {
            self.pending = None;
            return current;
        };
        let delay = Duration::from_secs_f64(match direction {
            Direction::Up => self.config.upscale_delay_s,
            Direction::Down => self.config.downscale_delay_s,
        });
        let since = match self.pending {
            Some((pending, since)) if pending == direction => since,
            _ => {
                self.pending = Some((direction, now));
                now
            }
        };
        if now.saturating_sub(since) >= delay {
            self.pending = None;
            wanted
        } else {
            current
        }
    }

    /// Which way `load` calls with `current` replicas, and to how many.
    fn wanted(&self, load: f64, current: usize) -> (Option<Direction>, usize) {
        let target = self.config.target_ongoing_requests;
        let ratio = load / (target * current as f64);
        let step = |factor: f64| (current as f64 * (1.0 + (ratio - 1.0) * factor)).ceil();
        if ratio > 1.0 {
            let up = to_count(step(self.config.upscaling_factor)).max(current + 1);
            (Some(Direction::Up), up)
        } else if ratio < DOWN_BAND {
            // Never below what the load needs at the target: the next look must not call
            // for a step up.
            let needed = to_count((load / target).ceil());
            let down = to_count(step(self.config.downscaling_factor)).max(needed);
            (Some(Direction::Down), down.min(current))
        } else {
            (None, current)
        }
    }
}

/// A non-negative count from a float (rounded already).
fn to_count(x: f64) -> usize {
    if x.is_finite() && x > 0.0 {
        // Bounded by the clamp to max_replicas after.
        x.min(1e9) as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AutoscalingConfig {
        AutoscalingConfig {
            min_replicas: 1,
            max_replicas: 10,
            target_ongoing_requests: 2.0,
            upscale_delay_s: 5.0,
            downscale_delay_s: 30.0,
            upscaling_factor: 1.0,
            downscaling_factor: 1.0,
            look_back_period_s: 10.0,
        }
    }

    /// Runs the policy once a second over `trace` (the load at each second) from
    /// `start` replicas; the count after each second.
    fn run(config: AutoscalingConfig, start: usize, trace: &[f64]) -> Vec<usize> {
        let mut policy = Autoscaler::new(config);
        let mut current = start;
        trace
            .iter()
            .enumerate()
            .map(|(t, load)| {
                let now = Duration::from_secs(t as u64);
                policy.record(now, *load);
                current = policy.decide(now, current);
                current
            })
            .collect()
    }

    /// How often the count turned from rising to falling or back.
    fn turns(counts: &[usize]) -> usize {
        let moves: Vec<i8> = counts
            .windows(2)
            .filter(|w| w[0] != w[1])
            .map(|w| if w[1] > w[0] { 1 } else { -1 })
            .collect();
        moves.windows(2).filter(|m| m[0] != m[1]).count()
    }

    #[test]
    fn a_step_up_and_down_scales_up_after_the_delay_and_back_after_the_long_one() {
        // 2 requests (1 replica's worth) for 20 s, 8 for 60 s, then 2 again.
        let trace: Vec<f64> = (0..200)
            .map(|t| if (20..80).contains(&t) { 8.0 } else { 2.0 })
            .collect();
        let counts = run(config(), 1, &trace);
        assert!(counts[..20].iter().all(|&c| c == 1), "{counts:?}");
        let up = counts.iter().position(|&c| c > 1).expect("scales up");
        assert!(
            (24..=27).contains(&up),
            "up after the 5 s delay, at {up}: {counts:?}"
        );
        assert_eq!(counts[79], 4, "8 requests at 2 each: {counts:?}");
        let down = counts[80..]
            .iter()
            .position(|&c| c < 4)
            .expect("scales down")
            + 80;
        // The average falls below the band within the 10 s window, then 30 s of delay.
        assert!((110..=125).contains(&down), "down at {down}: {counts:?}");
        assert_eq!(counts[199], 1);
        assert_eq!(turns(&counts), 1, "one rise, one fall: {counts:?}");
    }

    #[test]
    fn a_ramp_only_ever_scales_up() {
        let trace: Vec<f64> = (0..120).map(|t| f64::from(t) / 6.0).collect();
        let counts = run(config(), 1, &trace);
        assert!(counts.windows(2).all(|w| w[1] >= w[0]), "{counts:?}");
        assert!(counts[119] >= 8, "{counts:?}");
    }

    #[test]
    fn a_spike_shorter_than_the_delay_changes_nothing() {
        // The average over the 2 s window stays high for the spike's 3 s and 2 s more:
        // less than the 10 s the load must call for more.
        let config = AutoscalingConfig {
            look_back_period_s: 2.0,
            upscale_delay_s: 10.0,
            ..config()
        };
        let trace: Vec<f64> = (0..60)
            .map(|t| if (30..33).contains(&t) { 40.0 } else { 2.0 })
            .collect();
        let counts = run(config.clone(), 1, &trace);
        assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
        // The same load for 12 s does scale.
        let trace: Vec<f64> = (0..60)
            .map(|t| if (30..42).contains(&t) { 40.0 } else { 2.0 })
            .collect();
        let counts = run(config, 1, &trace);
        assert!(counts.iter().any(|&c| c > 1), "{counts:?}");
    }

    #[test]
    fn a_sawtooth_does_not_flap() {
        // ray#18925: a load swinging between 5 and 9 every 15 s made Ray oscillate.
        let trace: Vec<f64> = (0..600)
            .map(|t| if (t / 15) % 2 == 0 { 5.0 } else { 9.0 })
            .collect();
        let counts = run(config(), 1, &trace);
        assert!(turns(&counts) <= 1, "{counts:?}");
        assert!(counts[599] >= 4, "enough for the average (7): {counts:?}");
    }

    #[test]
    fn a_step_down_never_leaves_the_load_short_of_replicas() {
        // ray#43034: scaling down must not go below what the requests still running need.
        let trace: Vec<f64> = (0..300).map(|t| if t < 60 { 20.0 } else { 9.0 }).collect();
        let mut policy = Autoscaler::new(config());
        let mut current = 1;
        for (t, load) in trace.iter().enumerate() {
            let now = Duration::from_secs(t as u64);
            policy.record(now, *load);
            let next = policy.decide(now, current);
            if next < current {
                let average = policy.average().unwrap_or_default();
                assert!(
                    next as f64 * 2.0 >= average,
                    "at {t}: {next} replicas for an average load of {average}"
                );
            }
            current = next;
        }
        assert_eq!(current, 5, "9 requests at 2 each");
    }

    #[test]
    fn scales_to_zero_and_back_at_once() {
        let config = AutoscalingConfig {
            min_replicas: 0,
            ..config()
        };
        let trace: Vec<f64> = (0..120).map(|t| if t < 100 { 0.0 } else { 1.0 }).collect();
        let counts = run(config, 1, &trace);
        assert_eq!(
            counts[50], 0,
            "idle: scaled to zero after the delay: {counts:?}"
        );
        assert_eq!(
            counts[100], 1,
            "the first request starts one at once: {counts:?}"
        );
    }

    #[test]
    fn stays_within_min_and_max() {
        let config = AutoscalingConfig {
            min_replicas: 2,
            max_replicas: 3,
            upscale_delay_s: 0.0,
            downscale_delay_s: 0.0,
            ..config()
        };
        let counts = run(config.clone(), 1, &[0.0, 100.0, 100.0]);
        assert_eq!(counts, [2, 3, 3]);
        let counts = run(config, 5, &[0.0, 0.0]);
        assert_eq!(counts, [3, 2]);
    }
}
