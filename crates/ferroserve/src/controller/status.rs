//! What `status` reports: each backend's status and replicas, each endpoint, and readiness — the controller's view of actual state, as serde data.

use std::time::SystemTime;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A backend's status, as Ray Serve names a deployment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackendStatus {
    /// Replicas are starting, being replaced or scaled.
    Updating,
    /// Every replica it should have runs.
    Healthy,
    /// Fewer replicas run than it should have (some died and are being replaced).
    Unhealthy,
    /// The last change failed; what ran before still serves (see the message).
    DeployFailed,
}

/// A replica's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaState {
    /// Its instance is being made; it takes no traffic yet.
    Starting,
    /// It takes traffic.
    Running,
    /// It is being handed a new `user_config`.
    Updating,
    /// Out of service, finishing the requests it runs.
    Stopping,
    /// It died; a new one is about to start in its place.
    Recovering,
}

/// The result of one health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// When it ended, in seconds since the Unix epoch.
    pub at_s: f64,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed (empty when it passed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One replica in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `backend#N`.
    pub id: String,
    /// Its state.
    pub state: ReplicaState,
    /// Its worker's process id (Python replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When it started, in seconds since the Unix epoch.
    pub started_at_s: f64,
    /// Requests it runs now.
    pub in_flight: usize,
    /// How many replicas died in its place before it.
    pub restarts: u32,
    /// Its last health check, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<HealthCheck>,
}

/// One backend in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Its status.
    pub status: BackendStatus,
    /// Why it has that status (empty when healthy).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many replicas it should have.
    pub target_replicas: usize,
    /// How many take traffic now.
    pub running_replicas: usize,
    /// Its `version`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Requests waiting for one of its replicas to have room.
    #[serde(default)]
    pub queued: usize,
    /// Each replica, running or not.
    pub replicas: Vec<ReplicaStatus>,
}

/// One endpoint in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Its HTTP route, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The HTTP methods it takes.
    pub methods: Vec<String>,
    /// Its traffic weights by backend.
    pub traffic: IndexMap<String, f64>,
    /// Its shadow proportions by backend.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub shadow: IndexMap<String, f64>,
}

/// The whole app's status: what `GET /api/status` and `ferroserve status` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    /// `RUNNING`, `DEPLOYING` (a change is under way) or `DEPLOY_FAILED` (a backend's
    /// last change failed).
    pub status: String,
    /// Whether every routed endpoint has a running replica behind each backend with
    /// traffic (what `/-/ready` answers).
    pub ready: bool,
    /// What keeps it from being ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// Each backend.
    pub backends: IndexMap<String, BackendReport>,
    /// Each endpoint.
    pub endpoints: IndexMap<String, EndpointReport>,
    /// In cluster mode: this node, the leader, the nodes and the placement. Backends and
    /// endpoints above are this node's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the controller keeps about one replica, for status and health checks.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaInfo {
    pub(crate) state: ReplicaState,
    pub(crate) started_at: SystemTime,
    pub(crate) restarts: u32,
    pub(crate) last_health_check: Option<HealthCheck>,
    /// Health checks failed in a row.
    pub(crate) failed_checks: u32,
    pub(crate) pid: Option<u32>,
}

impl ReplicaInfo {
    /// A replica starting now, after `restarts` deaths in its place.
    pub(crate) fn starting(restarts: u32) -> Self {
        Self {
            state: ReplicaState::Starting,
            started_at: SystemTime::now(),
            restarts,
            last_health_check: None,
            failed_checks: 0,
            pid: None,
        }
    }

    /// Records a health check's outcome; how many failed in a row now.
    pub(crate) fn checked(&mut self, outcome: Result<(), String>) -> u32 {
        let ok = outcome.is_ok();
        self.last_health_check = Some(HealthCheck {
            at_s: unix_seconds(SystemTime::now()),
            ok,
            message: outcome.err().unwrap_or_default(),
        });
        self.failed_checks = if ok { 0 } else { self.failed_checks + 1 };
        self.failed_checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_written_as_ray_writes_them() {
        let json = serde_json::to_string(&[BackendStatus::DeployFailed, BackendStatus::Healthy])
            .expect("serialises");
        assert_eq!(json, r#"["DEPLOY_FAILED","HEALTHY"]"#);
        let json = serde_json::to_string(&ReplicaState::Recovering).expect("serialises");
        assert_eq!(json, r#""RECOVERING""#);
    }

    #[test]
    fn failed_checks_count_in_a_row() {
        let mut info = ReplicaInfo::starting(0);
        assert_eq!(info.checked(Err("stuck".into())), 1);
        assert_eq!(info.checked(Err("stuck".into())), 2);
        let last = info.last_health_check.clone().expect("recorded");
        assert!(!last.ok && last.message == "stuck");
        assert_eq!(info.checked(Ok(())), 0);
        assert!(info.last_health_check.expect("recorded").ok);
    }
}
