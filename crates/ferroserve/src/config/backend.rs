//! How a backend is run: replica count, concurrency, queueing, batching and the values given to user code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::{
    MAX_BATCH_SIZE, MAX_BATCH_WAIT_TIMEOUT_MS, MAX_CONCURRENT_QUERIES, MAX_NUM_REPLICAS,
    MAX_QUEUED_REQUESTS, within,
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
        }
    }
}

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

    /// Checks every value; the error's key is the field name (e.g. `num_replicas`).
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.num_replicas == 0 {
            return Err(ServeError::invalid(
                "num_replicas",
                "must be at least 1 (delete the backend to stop serving it)",
            ));
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
