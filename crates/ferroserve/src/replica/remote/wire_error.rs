//! A [`ServeError`] as the peer protocol carries it: the variant's name and its fields as JSON, so that a call that failed on another node fails here with the same variant, status and message.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// A [`ServeError`] on the wire: its variant's name as `kind`, and its fields.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireError {
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    backend: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    replica: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    millis: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    extra: String,
}

fn millis(d: Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&ServeError> for WireError {
    fn from(error: &ServeError) -> Self {
        let kind = |kind: &str| Self {
            kind: kind.to_owned(),
            ..Self::default()
        };
        let text = |k: &str, message: &str| Self {
            message: message.to_owned(),
            ..kind(k)
        };
        let in_replica = |k: &str, backend: &str, replica: &str, message: &str| Self {
            backend: backend.to_owned(),
            replica: replica.to_owned(),
            ..text(k, message)
        };
        match error {
            ServeError::RouteNotFound(m) => text("route_not_found", m),
            ServeError::ReservedRouteNotFound(m) => text("reserved_route_not_found", m),
            ServeError::MethodNotAllowed {
                target,
                allow,
                method,
            } => Self {
                method: method.clone(),
                extra: allow.clone(),
                ..text("method_not_allowed", target)
            },
            ServeError::PayloadTooLarge { limit } => Self {
                number: Some(*limit),
                ..kind("payload_too_large")
            },
            ServeError::BodyTimeout(after) => Self {
                millis: millis(*after),
                ..kind("body_timeout")
            },
            ServeError::Timeout { after, set_by } => Self {
                millis: millis(*after),
                ..text("timeout", set_by)
            },
            ServeError::EndpointNotFound(m) => text("endpoint_not_found", m),
            ServeError::BackendNotFound(m) => text("backend_not_found", m),
            ServeError::MethodNotFound { backend, method } => Self {
                backend: backend.clone(),
                method: Some(method.clone()),
                ..kind("method_not_found")
            },
            ServeError::BadRequest(m) => text("bad_request", m),
            ServeError::InvalidConfig { key, message } => Self {
                extra: key.clone(),
                ..text("invalid_config", message)
            },
            ServeError::Conflict(m) => text("conflict", m),
            ServeError::Overloaded {
                backend,
                queued,
                retry_after,
            } => Self {
                backend: backend.clone(),
                number: Some(*queued as u64),
                millis: millis(*retry_after),
                ..kind("overloaded")
            },
            ServeError::NoReplicas(b) => Self {
                backend: b.clone(),
                ..kind("no_replicas")
            },
            ServeError::Backend {
                backend,
                replica,
                message,
                status,
                traceback,
            } => Self {
                status: status.map(|s| s.as_u16()),
                traceback: traceback.clone(),
                ..in_replica("backend", backend, replica, message)
            },
            ServeError::Panicked {
                backend,
                replica,
                message,
            } => in_replica("panicked", backend, replica, message),
            ServeError::ReplicaDied {
                backend,
                replica,
                message,
            } => in_replica("replica_died", backend, replica, message),
            ServeError::NotSent {
                backend,
                replica,
                message,
            } => in_replica("not_sent", backend, replica, message),
            ServeError::StartFailed { backend, message } => Self {
                backend: backend.clone(),
                ..text("start_failed", message)
            },
            ServeError::CannotListen { addr, reason } => Self {
                extra: addr.clone(),
                ..text("cannot_listen", reason)
            },
            ServeError::ShuttingDown => kind("shutting_down"),
            ServeError::Deploying(m) => text("deploying", m),
            ServeError::Unavailable(m) => text("unavailable", m),
            ServeError::Internal(m) => text("internal", m),
        }
    }
}

/// The `set_by` of a timeout from another node, as one of this build's names.
fn set_by(name: &str) -> &'static str {
    match name {
        "request_timeout_s" => "request_timeout_s",
        "the timeout middleware" => "the timeout middleware",
        "health_check_timeout_s" => "health_check_timeout_s",
        _ => "a timeout on another node",
    }
}

impl From<WireError> for ServeError {
    fn from(w: WireError) -> Self {
        let duration = Duration::from_millis(w.millis.unwrap_or(0));
        match w.kind.as_str() {
            "route_not_found" => Self::RouteNotFound(w.message),
            "reserved_route_not_found" => Self::ReservedRouteNotFound(w.message),
            "method_not_allowed" => Self::MethodNotAllowed {
                target: w.message,
                allow: w.extra,
                method: w.method,
            },
            "payload_too_large" => Self::PayloadTooLarge {
                limit: w.number.unwrap_or(0),
            },
            "body_timeout" => Self::BodyTimeout(duration),
            "timeout" => Self::Timeout {
                after: duration,
                set_by: set_by(&w.message),
            },
            "endpoint_not_found" => Self::EndpointNotFound(w.message),
            "backend_not_found" => Self::BackendNotFound(w.message),
            "method_not_found" => Self::MethodNotFound {
                backend: w.backend,
                method: w.method.unwrap_or_default(),
            },
            "bad_request" => Self::BadRequest(w.message),
            "invalid_config" => Self::InvalidConfig {
                key: w.extra,
                message: w.message,
            },
            "conflict" => Self::Conflict(w.message),
            "overloaded" => Self::Overloaded {
                backend: w.backend,
                queued: usize::try_from(w.number.unwrap_or(0)).unwrap_or(usize::MAX),
                retry_after: duration,
            },
            "no_replicas" => Self::NoReplicas(w.backend),
            "backend" => Self::Backend {
                backend: w.backend,
                replica: w.replica,
                message: w.message,
                status: w.status.and_then(|s| StatusCode::from_u16(s).ok()),
                traceback: w.traceback,
            },
            "panicked" => Self::Panicked {
                backend: w.backend,
                replica: w.replica,
                message: w.message,
            },
            "replica_died" => Self::ReplicaDied {
                backend: w.backend,
                replica: w.replica,
                message: w.message,
            },
            "not_sent" => Self::NotSent {
                backend: w.backend,
                replica: w.replica,
                message: w.message,
            },
            "start_failed" => Self::StartFailed {
                backend: w.backend,
                message: w.message,
            },
            "cannot_listen" => Self::CannotListen {
                addr: w.extra,
                reason: w.message,
            },
            "shutting_down" => Self::ShuttingDown,
            "deploying" => Self::Deploying(w.message),
            "unavailable" => Self::Unavailable(w.message),
            "internal" => Self::Internal(w.message),
            other => Self::Internal(format!(
                "another node answered with an error of unknown kind `{other}`: {}",
                w.message
            )),
        }
    }
}
