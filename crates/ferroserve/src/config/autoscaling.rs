//! `autoscaling_config`: how a backend's replica count follows its load, with Ray Serve's key names and defaults.

use serde::{Deserialize, Serialize};

use super::limits::{MAX_NUM_REPLICAS, seconds, within};
use crate::error::ServeError;

/// How a backend scales with its load (Ray Serve's `autoscaling_config`): between
/// `min_replicas` and `max_replicas`, aiming at `target_ongoing_requests` requests running
/// or queued per replica, averaged over `look_back_period_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscalingConfig {
    /// The fewest replicas (0 allows scaling to zero: the first request then waits for a
    /// cold start).
    pub min_replicas: usize,
    /// The most replicas.
    pub max_replicas: usize,
    /// The requests, running and queued, each replica should have on average.
    pub target_ongoing_requests: f64,
    /// How long the load must call for more replicas before they start, in seconds.
    pub upscale_delay_s: f64,
    /// How long the load must call for fewer replicas before some stop, in seconds.
    pub downscale_delay_s: f64,
    /// How much of the gap to the ideal count one step up closes (1: all of it).
    pub upscaling_factor: f64,
    /// How much of the gap to the ideal count one step down closes.
    pub downscaling_factor: f64,
    /// How far back the load is averaged, in seconds.
    pub look_back_period_s: f64,
}

impl Default for AutoscalingConfig {
    /// Ray Serve's defaults.
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: 1,
            target_ongoing_requests: 2.0,
            upscale_delay_s: 30.0,
            downscale_delay_s: 600.0,
            upscaling_factor: 1.0,
            downscaling_factor: 1.0,
            look_back_period_s: 30.0,
        }
    }
}

impl AutoscalingConfig {
    /// Checks every value; the error's key is `autoscaling_config.FIELD`.
    pub fn validate(&self) -> Result<(), ServeError> {
        let factor = |f: f64| {
            if f.is_finite() && f > 0.0 && f <= 100.0 {
                Ok(())
            } else {
                Err(format!("must be above 0 and at most 100, not {f}"))
            }
        };
        let delay = |s: f64| {
            if s == 0.0 {
                Ok(())
            } else {
                seconds(s).map(|_| ())
            }
        };
        let checks = [
            (
                "min_replicas",
                within(self.min_replicas, 0, MAX_NUM_REPLICAS),
            ),
            (
                "max_replicas",
                within(self.max_replicas, 1, MAX_NUM_REPLICAS),
            ),
            (
                "max_replicas",
                if self.max_replicas < self.min_replicas {
                    Err(format!(
                        "{} is below min_replicas ({})",
                        self.max_replicas, self.min_replicas
                    ))
                } else {
                    Ok(())
                },
            ),
            (
                "target_ongoing_requests",
                factor(self.target_ongoing_requests).map_err(|_| {
                    format!(
                        "must be above 0 and at most 100, not {}",
                        self.target_ongoing_requests
                    )
                }),
            ),
            ("upscale_delay_s", delay(self.upscale_delay_s)),
            ("downscale_delay_s", delay(self.downscale_delay_s)),
            ("upscaling_factor", factor(self.upscaling_factor)),
            ("downscaling_factor", factor(self.downscaling_factor)),
            (
                "look_back_period_s",
                seconds(self.look_back_period_s).map(|_| ()),
            ),
        ];
        for (key, check) in checks {
            check.map_err(|m| ServeError::invalid(format!("autoscaling_config.{key}"), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rays_defaults_pass_and_bad_values_name_their_key() {
        AutoscalingConfig::default().validate().expect("defaults");
        let zero = AutoscalingConfig {
            min_replicas: 0,
            max_replicas: 4,
            ..AutoscalingConfig::default()
        };
        zero.validate().expect("scale to zero is allowed");
        let bad = [
            (
                AutoscalingConfig {
                    min_replicas: 3,
                    max_replicas: 2,
                    ..AutoscalingConfig::default()
                },
                "autoscaling_config.max_replicas",
            ),
            (
                AutoscalingConfig {
                    target_ongoing_requests: 0.0,
                    ..AutoscalingConfig::default()
                },
                "autoscaling_config.target_ongoing_requests",
            ),
            (
                AutoscalingConfig {
                    upscale_delay_s: -1.0,
                    ..AutoscalingConfig::default()
                },
                "autoscaling_config.upscale_delay_s",
            ),
            (
                AutoscalingConfig {
                    downscaling_factor: f64::NAN,
                    ..AutoscalingConfig::default()
                },
                "autoscaling_config.downscaling_factor",
            ),
        ];
        for (config, key) in bad {
            match config.validate() {
                Err(ServeError::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
