//! The range of every numeric config key, and the checks that name the key and its range: no value a file or a caller gives can overflow, abort or hang the server.

use std::time::Duration;

/// Most replicas one backend may have (`num_replicas`: 1 to this).
pub const MAX_NUM_REPLICAS: usize = 1024;
/// Largest `max_concurrent_queries` (1 to this).
pub const MAX_CONCURRENT_QUERIES: usize = 1_000_000;
/// Largest `max_queued_requests` (0 to this).
pub const MAX_QUEUED_REQUESTS: usize = 1_000_000;
/// Largest `max_batch_size` (1 to this).
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Largest `batch_wait_timeout_ms` (0 to this: ten minutes).
pub const MAX_BATCH_WAIT_TIMEOUT_MS: u64 = 600_000;
/// Longest duration a key in seconds takes (`start_timeout_s`, `timeout`): one day.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Whether `value` is within `min..=max`; if not, what to say.
pub(crate) fn within<T>(value: T, min: T, max: T) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(format!("must be between {min} and {max}, not {value}"));
    }
    Ok(())
}

/// A duration of `seconds`, above 0 and at most [`MAX_SECONDS`]; if not, what to say.
pub(crate) fn seconds(seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_SECONDS {
        return Ok(Duration::from_secs_f64(seconds));
    }
    Err(format!(
        "must be a number of seconds above 0 and at most {MAX_SECONDS} (a day), not {seconds}"
    ))
}

/// [`seconds`] for a duration given in Rust.
pub(crate) fn duration(duration: Duration) -> Result<(), String> {
    seconds(duration.as_secs_f64()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_named() {
        assert!(within(1, 1, 4).is_ok() && within(4, 1, 4).is_ok());
        assert_eq!(
            within(5, 1, 4).expect_err("above"),
            "must be between 1 and 4, not 5"
        );
        assert!(within(0, 1, 4).is_err());
    }

    #[test]
    fn seconds_refuse_what_a_duration_cannot_hold() {
        assert_eq!(seconds(1.5), Ok(Duration::from_millis(1500)));
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e20,
            9.223_372_036_854_776e18,
            86_401.0,
        ] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(duration(Duration::MAX).is_err());
        assert!(duration(Duration::ZERO).is_err());
    }
}
