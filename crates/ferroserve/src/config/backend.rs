//! How a backend is run: replica count, concurrency, queueing, batching and the values given to user code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AutoscalingConfig;
use super::limits::{
    MAX_BATCH_SIZE, MAX_BATCH_WAIT_TIMEOUT_MS, MAX_CONCURRENT_QUERIES, MAX_NUM_REPLICAS,
    MAX_QUEUED_REQUESTS, seconds, within,
};
use super::{DEFAULT_MAX_CONCURRENT_QUERIES, DEFAULT_MAX_QUEUED_REQUESTS, DEFAULT_NUM_REPLICAS};
use crate::error::ServeError;

/// How a backend is run: replica count, concurrency, queueing and the values given to user code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// How many replicas run (at least 1).
    pub num_replicas: usize,
    /// How many requests one replica runs at once (at least 1). `None` means 100, or twice
    /// `max_batch_size` when that is larger, so batching backends can fill their batches.
    pub max_concurrent_queries: Option<usize>,
    /// How many requests may wait when every replica is full; past it callers get 503.
    pub max_queued_requests: usize,
    /// Given to each replica's `reconfigure` at start and whenever it changes.
    pub user_config: Value,
    /// Given to the backend's factory when each replica is made.
    pub init_args: Value,
    /// The most requests one batch call gets (for the methods a backend declares as batch
    /// methods); `None` gives them batches of one.
    pub max_batch_size: Option<usize>,
    /// How long a queued request waits for a batch to fill, in milliseconds (0: run with
    /// what is queued now).
    pub batch_wait_timeout_ms: u64,
    /// A label of the code's version: changing it (like any change of the code, `init_args`
    /// or batching) replaces the replicas in a rolling update.
    pub version: Option<String>,
    /// How often each replica's health is checked, in seconds (Ray's default: 10).
    pub health_check_period_s: f64,
    /// How long a health check may take before it counts as failed, in seconds (30).
    pub health_check_timeout_s: f64,
    /// How many replicas a rolling update may start beyond `num_replicas` (1).
    pub max_surge: usize,
    /// How long a replica taken out of service may take to finish its requests, in
    /// seconds (Ray's default: 20).
    pub graceful_shutdown_timeout_s: f64,
    /// CPUs each replica reserves on its node, in cluster mode (Ray's
    /// `ray_actor_options.num_cpus`); 0 reserves nothing.
    pub num_cpus: f64,
    /// GPUs each replica reserves on its node, in cluster mode.
    pub num_gpus: f64,
    /// Memory each replica reserves on its node, in bytes, in cluster mode.
    pub memory: u64,
    /// The most replicas of this backend one node runs, in cluster mode.
    pub max_replicas_per_node: Option<usize>,
    /// Scale with the load between `min_replicas` and `max_replicas` (instead of a fixed
    /// `num_replicas`, which then is the count the autoscaler last chose).
    pub autoscaling_config: Option<AutoscalingConfig>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            num_replicas: DEFAULT_NUM_REPLICAS,
            max_concurrent_queries: None,
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            user_config: Value::Null,
            init_args: Value::Null,
            max_batch_size: None,
            batch_wait_timeout_ms: 0,
            version: None,
            health_check_period_s: DEFAULT_HEALTH_CHECK_PERIOD_S,
            health_check_timeout_s: DEFAULT_HEALTH_CHECK_TIMEOUT_S,
            max_surge: 1,
            graceful_shutdown_timeout_s: DEFAULT_REPLICA_GRACEFUL_SHUTDOWN_S,
            num_cpus: 0.0,
            num_gpus: 0.0,
            memory: 0,
            max_replicas_per_node: None,
            autoscaling_config: None,
        }
    }
}

/// A count of CPUs or GPUs a replica reserves: finite, 0 to 1024.
fn resource(n: f64) -> Result<(), String> {
    if n.is_finite() && (0.0..=1024.0).contains(&n) {
        return Ok(());
    }
    Err(format!("must be a number from 0 to 1024, not {n}"))
}

/// Default `health_check_period_s`.
pub(crate) const DEFAULT_HEALTH_CHECK_PERIOD_S: f64 = 10.0;
/// Default `health_check_timeout_s`.
pub(crate) const DEFAULT_HEALTH_CHECK_TIMEOUT_S: f64 = 30.0;
/// Default `graceful_shutdown_timeout_s` of a backend's replicas.
pub(crate) const DEFAULT_REPLICA_GRACEFUL_SHUTDOWN_S: f64 = 20.0;

impl BackendConfig {
    /// Sets `num_replicas`.
    #[must_use]
    pub fn num_replicas(mut self, n: usize) -> Self {
        self.num_replicas = n;
        self
    }

    /// Sets `max_concurrent_queries`.
    #[must_use]
    pub fn max_concurrent_queries(mut self, n: usize) -> Self {
        self.max_concurrent_queries = Some(n);
        self
    }

    /// Sets `max_batch_size`.
    #[must_use]
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = Some(n);
        self
    }

    /// Sets `batch_wait_timeout_ms`.
    #[must_use]
    pub fn batch_wait_timeout_ms(mut self, ms: u64) -> Self {
        self.batch_wait_timeout_ms = ms;
        self
    }

    /// The concurrency cap in force: `max_concurrent_queries`, or its default of 100 (at
    /// least twice `max_batch_size`).
    pub fn effective_max_concurrent_queries(&self) -> usize {
        self.max_concurrent_queries.unwrap_or_else(|| {
            DEFAULT_MAX_CONCURRENT_QUERIES.max(2 * self.max_batch_size.unwrap_or(0))
        })
    }

    /// Sets `max_queued_requests`.
    #[must_use]
    pub fn max_queued_requests(mut self, n: usize) -> Self {
        self.max_queued_requests = n;
        self
    }

    /// Sets `version`.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets `health_check_period_s` and `health_check_timeout_s`.
    #[must_use]
    pub fn health_checks(mut self, period_s: f64, timeout_s: f64) -> Self {
        self.health_check_period_s = period_s;
        self.health_check_timeout_s = timeout_s;
        self
    }

    /// Sets `max_surge`.
    #[must_use]
    pub fn max_surge(mut self, n: usize) -> Self {
        self.max_surge = n;
        self
    }

    /// Sets `graceful_shutdown_timeout_s`.
    #[must_use]
    pub fn graceful_shutdown_timeout_s(mut self, seconds: f64) -> Self {
        self.graceful_shutdown_timeout_s = seconds;
        self
    }

    /// Whether it runs no replica because its autoscaler scaled it to zero: a request then
    /// waits in the queue for a cold start.
    pub(crate) fn scaled_to_zero(&self) -> bool {
        self.num_replicas == 0
            && self
                .autoscaling_config
                .as_ref()
                .is_some_and(|a| a.min_replicas == 0)
    }

    /// Whether `new` asks for the same as this config, leaving aside the replica count an
    /// autoscaler chose (when both scale with the load).
    pub(crate) fn same_but_scale(&self, new: &Self) -> bool {
        match (&self.autoscaling_config, &new.autoscaling_config) {
            (Some(_), Some(_)) => {
                let mut other = new.clone();
                other.num_replicas = self.num_replicas;
                *self == other
            }
            _ => self == new,
        }
    }

    /// The replica count to start or keep when changing to this config from `current`: an
    /// autoscaled backend keeps the count its autoscaler chose, within the new bounds.
    pub(crate) fn carried_from(mut self, current: &Self) -> Self {
        if let (Some(new), Some(_)) = (&self.autoscaling_config, &current.autoscaling_config) {
            self.num_replicas = current
                .num_replicas
                .clamp(new.min_replicas, new.max_replicas);
        }
        self
    }

    /// Whether a change from `self` to `new` needs new replicas (a rolling update) rather
    /// than a change in place: `init_args`, batching or `version` differ.
    pub fn needs_new_replicas(&self, new: &Self) -> bool {
        self.init_args != new.init_args
            || self.max_batch_size != new.max_batch_size
            || self.batch_wait_timeout_ms != new.batch_wait_timeout_ms
            || self.version != new.version
    }

    /// `health_check_period_s` as a duration.
    pub fn health_check_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.health_check_period_s)
    }

    /// `health_check_timeout_s` as a duration.
    pub fn health_check_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.health_check_timeout_s)
    }

    /// `graceful_shutdown_timeout_s` as a duration.
    pub fn graceful_shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.graceful_shutdown_timeout_s)
    }

    /// Sets `user_config`.
    #[must_use]
    pub fn user_config(mut self, value: Value) -> Self {
        self.user_config = value;
        self
    }

    /// Sets `init_args`.
    #[must_use]
    pub fn init_args(mut self, value: Value) -> Self {
        self.init_args = value;
        self
    }

    /// Checks every value as [`BackendConfig::validate`] does, but allows 0 replicas: a
    /// node's share of a backend whose replicas all run on other nodes.
    pub(crate) fn validate_share(&self) -> Result<(), ServeError> {
        if self.num_replicas == 0 {
            return self.clone().num_replicas(1).validate();
        }
        self.validate()
    }

    /// Checks every value; the error's key is the field name (e.g. `num_replicas`).
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.num_replicas == 0 {
            return Err(ServeError::invalid(
                "num_replicas",
                "must be at least 1 (delete the backend to stop serving it)",
            ));
        }
        if let Some(autoscaling) = &self.autoscaling_config {
            autoscaling.validate()?;
        }
        if self.max_concurrent_queries == Some(0) {
            return Err(ServeError::invalid(
                "max_concurrent_queries",
                "must be at least 1",
            ));
        }
        if self.max_batch_size == Some(0) {
            return Err(ServeError::invalid(
                "max_batch_size",
                "must be at least 1 (leave it out to turn batching off)",
            ));
        }
        let checks = [
            (
                "num_replicas",
                within(self.num_replicas, 1, MAX_NUM_REPLICAS),
            ),
            (
                "max_concurrent_queries",
                self.max_concurrent_queries
                    .map_or(Ok(()), |n| within(n, 1, MAX_CONCURRENT_QUERIES)),
            ),
            (
                "max_queued_requests",
                within(self.max_queued_requests, 0, MAX_QUEUED_REQUESTS),
            ),
            (
                "max_batch_size",
                self.max_batch_size
                    .map_or(Ok(()), |n| within(n, 1, MAX_BATCH_SIZE)),
            ),
            (
                "batch_wait_timeout_ms",
                within(self.batch_wait_timeout_ms, 0, MAX_BATCH_WAIT_TIMEOUT_MS),
            ),
            ("max_surge", within(self.max_surge, 1, MAX_NUM_REPLICAS)),
            (
                "health_check_period_s",
                seconds(self.health_check_period_s).map(|_| ()),
            ),
            (
                "health_check_timeout_s",
                seconds(self.health_check_timeout_s).map(|_| ()),
            ),
            (
                "graceful_shutdown_timeout_s",
                seconds(self.graceful_shutdown_timeout_s).map(|_| ()),
            ),
            ("num_cpus", resource(self.num_cpus)),
            ("num_gpus", resource(self.num_gpus)),
            (
                "max_replicas_per_node",
                self.max_replicas_per_node
                    .map_or(Ok(()), |n| within(n, 1, MAX_NUM_REPLICAS)),
            ),
            (
                "version",
                self.version.as_ref().map_or(Ok(()), |v| {
                    within(v.len(), 1, 256).map_err(|m| format!("length {m}"))
                }),
            ),
        ];
        for (key, check) in checks {
            check.map_err(|message| ServeError::invalid(key, message))?;
        }
        if let (Some(cap), Some(batch)) = (self.max_concurrent_queries, self.max_batch_size)
            && cap < batch
        {
            // Each request waiting for a batch holds one of the replica's slots, so a cap
            // below the batch size would silently keep every batch smaller than asked.
            return Err(ServeError::invalid(
                "max_concurrent_queries",
                format!(
                    "{cap} is below max_batch_size ({batch}), so batches could never fill; \
                     set it to at least {} (twice the batch size) or leave it out",
                    2 * batch
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_autoscaled_count_is_not_a_change_and_carries_over() {
        let scaled = |n: usize, max: usize| BackendConfig {
            num_replicas: n,
            autoscaling_config: Some(AutoscalingConfig {
                max_replicas: max,
                ..AutoscalingConfig::default()
            }),
            ..BackendConfig::default()
        };
        // Deploying the file again (1 replica) while the autoscaler runs 4: the same.
        assert!(scaled(4, 8).same_but_scale(&scaled(1, 8)));
        assert!(
            !scaled(4, 8).same_but_scale(&scaled(1, 6)),
            "new bounds are a change"
        );
        assert!(
            !BackendConfig::default()
                .num_replicas(4)
                .same_but_scale(&BackendConfig::default())
        );
        // A change keeps the chosen count, within the new bounds.
        assert_eq!(scaled(1, 3).carried_from(&scaled(4, 8)).num_replicas, 3);
        assert_eq!(scaled(1, 8).carried_from(&scaled(4, 8)).num_replicas, 4);
        assert_eq!(
            BackendConfig::default()
                .carried_from(&scaled(4, 8))
                .num_replicas,
            1
        );
    }
    use super::*;

    #[test]
    fn every_count_is_bounded() {
        let huge = [
            BackendConfig::default().num_replicas(usize::MAX),
            BackendConfig::default().num_replicas(4_294_967_296),
            BackendConfig::default().num_replicas(2_147_483_647),
            BackendConfig::default().max_concurrent_queries(usize::MAX),
            BackendConfig::default().max_queued_requests(usize::MAX),
            BackendConfig::default().max_batch_size(usize::MAX),
            BackendConfig::default().batch_wait_timeout_ms(u64::MAX),
        ];
        for config in huge {
            let err = config.validate().expect_err("out of range");
            assert!(err.to_string().contains("must be between"), "{err}");
        }
        assert!(
            BackendConfig::default()
                .num_replicas(MAX_NUM_REPLICAS)
                .validate()
                .is_ok()
        );
        assert!(
            BackendConfig::default()
                .max_queued_requests(0)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn backend_config_refuses_zero_replicas() {
        let err = BackendConfig::default()
            .num_replicas(0)
            .validate()
            .expect_err("zero replicas");
        assert!(err.to_string().contains("num_replicas"), "{err}");
    }

    #[test]
    fn batching_gets_room_to_fill_its_batches() {
        let config = BackendConfig::default().max_batch_size(64);
        assert_eq!(config.effective_max_concurrent_queries(), 128);
        assert_eq!(
            BackendConfig::default().effective_max_concurrent_queries(),
            100
        );
        let err = BackendConfig::default()
            .max_batch_size(16)
            .max_concurrent_queries(8)
            .validate()
            .expect_err("the cap keeps batches small");
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(
            BackendConfig::default()
                .max_batch_size(16)
                .max_concurrent_queries(16)
                .validate()
                .is_ok()
        );
    }
}
