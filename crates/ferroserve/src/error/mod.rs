//! Errors: what can go wrong serving a request, classified so that each maps to one status code.

mod http_response;

pub(crate) use http_response::text_response;

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// How long an overloaded backend asks callers to wait before retrying.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The class of a [`ServeError`]; the proxy maps each class to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller asked for something that is not valid (4xx).
    Client,
    /// The endpoint, backend or method does not exist (404).
    NotFound,
    /// The change conflicts with the current state (409).
    Conflict,
    /// Every replica is busy and the queue is full (503 with `Retry-After`).
    Overload,
    /// User code failed, panicked or its replica died (5xx).
    ReplicaFailure,
    /// A bug or an unexpected state inside Ferroserve (500).
    Internal,
}

/// Everything that can fail while serving or changing the served app.
///
/// Each variant belongs to one [`ErrorKind`]; [`ServeError::status`] gives its HTTP status,
/// and [`ServeError::to_http`] the whole response: every error response is made there.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// No endpoint's route matches the request path.
    #[error("no endpoint serves path `{0}`; GET /-/routes lists the routes served")]
    RouteNotFound(String),
    /// A path under `/-/` that is not one of Ferroserve's own routes.
    #[error("`{0}` is not one of Ferroserve's routes (/-/routes, /-/healthz)")]
    ReservedRouteNotFound(String),
    /// The route does not allow the request's HTTP method.
    #[error("{target} allows {allow}{}", method.as_deref().map(|m| format!(", not {m}")).unwrap_or_default())]
    MethodNotAllowed {
        /// What was asked: ``endpoint `name` `` or a path.
        target: String,
        /// The methods allowed, as the `Allow` header lists them.
        allow: String,
        /// The method that was refused, when worth naming.
        method: Option<String>,
    },
    /// The request body is larger than `max_body_bytes` or a `body_limit` middleware allows.
    #[error("the request body is larger than the {limit} bytes allowed here")]
    PayloadTooLarge {
        /// The limit that was passed, in bytes.
        limit: u64,
    },
    /// The request body stopped arriving for longer than `http.body_timeout_s` (408).
    #[error("the request body stalled: nothing arrived for {}s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    /// The request took longer than a timeout allows (504): the `timeout` middleware's,
    /// or its endpoint's `request_timeout_s`.
    #[error("no answer within the {}s {set_by} allows", .after.as_secs_f64())]
    Timeout {
        /// The time allowed.
        after: Duration,
        /// Which setting allowed it.
        set_by: &'static str,
    },
    /// No endpoint has this name.
    #[error("endpoint `{0}` does not exist")]
    EndpointNotFound(String),
    /// No backend has this name.
    #[error("backend `{0}` does not exist")]
    BackendNotFound(String),
    /// The backend's replicas have no method of this name.
    #[error("backend `{backend}` has no method `{method}`")]
    MethodNotFound {
        /// The backend that was asked.
        backend: String,
        /// The method name that was asked for.
        method: String,
    },
    /// The request or the requested change is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A config value is not valid; `key` names it.
    #[error("invalid config: `{key}`: {message}")]
    InvalidConfig {
        /// The config key, e.g. `backends.echo.num_replicas`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The change conflicts with what is served (a name already taken, a backend in use).
    #[error("{0}")]
    Conflict(String),
    /// All replicas are busy and `max_queued_requests` requests already wait.
    #[error(
        "backend `{backend}` is overloaded: all replicas are busy and {queued} requests are queued; retry after {}s",
        retry_after.as_secs()
    )]
    Overloaded {
        /// The overloaded backend.
        backend: String,
        /// How many requests were waiting.
        queued: usize,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The backend has no replica that can take requests.
    #[error("backend `{0}` has no running replica")]
    NoReplicas(String),
    /// User code returned an error.
    #[error("backend `{backend}` (replica `{replica}`) failed: {message}")]
    Backend {
        /// The backend that failed.
        backend: String,
        /// The replica that failed.
        replica: String,
        /// The error user code returned.
        message: String,
        /// The status user code asked for, if any (default 500).
        status: Option<StatusCode>,
        /// The remote traceback, when the code is Python: given to Python callers of
        /// handles, never put in an HTTP answer.
        traceback: Option<String>,
    },
    /// User code panicked; the replica keeps serving.
    #[error("backend `{backend}` (replica `{replica}`) panicked: {message}")]
    Panicked {
        /// The backend whose code panicked.
        backend: String,
        /// The replica whose code panicked.
        replica: String,
        /// The panic message.
        message: String,
    },
    /// The replica's process or connection went away while the request was in flight.
    #[error("backend `{backend}` (replica `{replica}`) died: {message}")]
    ReplicaDied {
        /// The backend of the dead replica.
        backend: String,
        /// The dead replica.
        replica: String,
        /// Why it is considered dead.
        message: String,
    },
    /// A call to a replica on another node could not be sent (no connection): nothing ran,
    /// so the router tries it once more on another replica.
    #[error("backend `{backend}` (replica `{replica}`) was not reached: {message}")]
    NotSent {
        /// The backend of the unreachable replica.
        backend: String,
        /// The unreachable replica.
        replica: String,
        /// Why.
        message: String,
    },
    /// A replica could not be started.
    #[error("backend `{backend}` failed to start: {message}")]
    StartFailed {
        /// The backend whose replica did not start.
        backend: String,
        /// Why.
        message: String,
    },
    /// The HTTP proxy cannot listen where it was asked to.
    #[error("cannot listen on {addr}: {reason}")]
    CannotListen {
        /// `host:port`.
        addr: String,
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// The server is shutting down.
    #[error("ferroserve is shutting down")]
    ShuttingDown,
    /// The app is still being deployed, and no endpoint has this route yet.
    #[error("the app is being deployed and `{0}` is not served yet; retry shortly")]
    Deploying(String),
    /// A service the change needs is out of reach (the cluster's etcd); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An unexpected internal state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::RouteNotFound(_)
            | Self::ReservedRouteNotFound(_)
            | Self::EndpointNotFound(_)
            | Self::BackendNotFound(_)
            | Self::MethodNotFound { .. } => ErrorKind::NotFound,
            Self::MethodNotAllowed { .. }
            | Self::PayloadTooLarge { .. }
            | Self::BodyTimeout(_)
            | Self::BadRequest(_)
            | Self::InvalidConfig { .. } => ErrorKind::Client,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Overloaded { .. }
            | Self::NoReplicas(_)
            | Self::ShuttingDown
            | Self::Deploying(_)
            | Self::Unavailable(_) => ErrorKind::Overload,
            Self::Timeout { .. }
            | Self::Backend { .. }
            | Self::Panicked { .. }
            | Self::ReplicaDied { .. }
            | Self::NotSent { .. }
            | Self::StartFailed { .. } => ErrorKind::ReplicaFailure,
            Self::CannotListen { .. } | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status this error is answered with: the one place that decides it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Backend {
                status: Some(status),
                ..
            } => *status,
            Self::ReplicaDied { .. } | Self::NotSent { .. } => StatusCode::BAD_GATEWAY,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => match self.kind() {
                ErrorKind::Client => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::Overload => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::ReplicaFailure | ErrorKind::Internal => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// How long the caller should wait before retrying, for overload errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after, .. } => Some(*retry_after),
            Self::NoReplicas(_)
            | Self::ShuttingDown
            | Self::Deploying(_)
            | Self::Unavailable(_) => Some(RETRY_AFTER),
            _ => None,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A request body passed a limit while it was read: the error a limited body yields, so
/// that the proxy can answer 413 naming the limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub(crate) struct BodyTooLarge {
    /// The limit, in bytes.
    pub(crate) limit: u64,
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// An error returned by user code in a backend.
///
/// Any `std::error::Error` converts into it with `?`; [`BackendError::msg`] makes one from
/// text, and [`BackendError::with_status`] picks the HTTP status the caller gets (500 by
/// default).
///
/// ```
/// use ferroserve::BackendError;
/// use http::StatusCode;
///
/// fn parse(input: &str) -> Result<u32, BackendError> {
///     let n: u32 = input.parse()?;
///     if n == 0 {
///         return Err(BackendError::msg("n must be positive").with_status(StatusCode::BAD_REQUEST));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("3").unwrap(), 3);
/// assert!(parse("x").is_err());
/// ```
pub struct BackendError {
    message: String,
    status: Option<StatusCode>,
    /// The replica's worker process went away (a Python replica).
    pub(crate) died: bool,
    /// Where a Python error was raised, as Python prints it.
    pub(crate) traceback: Option<String>,
}

impl BackendError {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            status: None,
            died: false,
            traceback: None,
        }
    }

    /// The replica's worker died while running the request.
    pub(crate) fn replica_died(message: impl fmt::Display) -> Self {
        Self {
            died: true,
            traceback: None,
            ..Self::msg(message)
        }
    }

    /// Answer the HTTP caller with this status instead of 500.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The same error with `context` before its message.
    pub(crate) fn prefixed(mut self, context: &str) -> Self {
        self.message.insert_str(0, context);
        self
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status chosen with [`BackendError::with_status`], if any.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for BackendError {
    fn from(error: E) -> Self {
        // A request body the backend could not read is the caller's fault: keep its 4xx.
        let status = (&error as &dyn std::any::Any)
            .downcast_ref::<BodyError>()
            .and_then(|e| e.status);
        Self {
            message: error.to_string(),
            status,
            died: false,
            traceback: None,
        }
    }
}

/// For `?` in functions returning `Box<dyn Error + Send + Sync>`. (`BackendError` itself is
/// not a `std::error::Error`, so that every error converts into it.)
impl From<BackendError> for Box<dyn std::error::Error + Send + Sync + 'static> {
    fn from(error: BackendError) -> Self {
        error.message.into()
    }
}

/// For `?` in functions returning `Box<dyn Error>`.
impl From<BackendError> for Box<dyn std::error::Error + 'static> {
    fn from(error: BackendError) -> Self {
        error.message.into()
    }
}

/// A body that is not what it was read as: not UTF-8, not JSON, not a form, or a Rust
/// value. When a backend passes it on with `?`, the HTTP caller gets its status (400 for a
/// malformed request body, 415 for a body that is not a form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    message: String,
    status: Option<StatusCode>,
}

impl BodyError {
    /// A malformed request body (400).
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: Some(StatusCode::BAD_REQUEST),
        }
    }

    /// A body of the wrong kind, with this status.
    pub(crate) fn with_status(message: impl Into<String>, status: StatusCode) -> Self {
        Self {
            message: message.into(),
            status: Some(status),
        }
    }

    /// A body that is not what the code expected (a response, or a Rust value): 500.
    pub(crate) fn unexpected(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: None,
        }
    }

    /// The status an HTTP caller gets when a backend returns this error.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("message", &self.message)
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_one_status() {
        let overloaded = ServeError::Overloaded {
            backend: "b".into(),
            queued: 3,
            retry_after: RETRY_AFTER,
        };
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overloaded.retry_after(), Some(RETRY_AFTER));
        assert_eq!(
            ServeError::EndpointNotFound("e".into()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ServeError::ReplicaDied {
                backend: "b".into(),
                replica: "b#1".into(),
                message: "gone".into()
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
        let chosen = ServeError::Backend {
            backend: "b".into(),
            replica: "b#1".into(),
            message: "no".into(),
            status: Some(StatusCode::IM_A_TEAPOT),
            traceback: None,
        };
        assert_eq!(chosen.status(), StatusCode::IM_A_TEAPOT);
    }

    #[test]
    fn unreadable_request_bodies_keep_their_4xx() {
        fn read() -> Result<(), BackendError> {
            Err(BodyError::bad_request("not JSON"))?
        }
        assert_eq!(
            read().expect_err("fails").status(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn std_errors_convert_with_question_mark() {
        fn parse() -> Result<i32, BackendError> {
            Ok("nope".parse::<i32>()?)
        }
        let err = parse().expect_err("not a number");
        assert!(err.message().contains("invalid digit"), "{err}");
    }
}
