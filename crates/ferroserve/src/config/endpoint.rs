//! Endpoints: an optional HTTP route with its methods, and a traffic policy (weights and shadows) over backends.

use http::Method;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::RESERVED_PREFIX;
use super::limits::within;
use crate::error::ServeError;

/// An endpoint's traffic policy: weights over backends, each at least 0, summing to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Traffic {
    weights: IndexMap<String, f64>,
}

impl Traffic {
    /// All traffic to one backend.
    pub fn single(backend: impl Into<String>) -> Self {
        let mut weights = IndexMap::new();
        weights.insert(backend.into(), 1.0);
        Self { weights }
    }

    /// Weights over backends; fails unless each is ≥ 0 and they sum to 1.
    ///
    /// ```
    /// use ferroserve::Traffic;
    /// assert!(Traffic::new([("v1", 0.9), ("v2", 0.1)]).is_ok());
    /// assert!(Traffic::new([("v1", 0.9), ("v2", 0.2)]).is_err());
    /// ```
    pub fn new<I, S>(weights: I) -> Result<Self, ServeError>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        let traffic = Self {
            weights: weights.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        };
        traffic.validate()?;
        Ok(traffic)
    }

    /// Checks the weights; the error's key is `traffic` or `traffic.NAME`.
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.weights.is_empty() {
            return Err(ServeError::invalid("traffic", "names no backend"));
        }
        for (name, weight) in &self.weights {
            if !weight.is_finite() || *weight < 0.0 {
                return Err(ServeError::invalid(
                    format!("traffic.{name}"),
                    format!("weight {weight} must be a number ≥ 0"),
                ));
            }
        }
        let sum: f64 = self.weights.values().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(ServeError::invalid(
                "traffic",
                format!("weights sum to {sum}, not 1"),
            ));
        }
        Ok(())
    }

    /// The backends and their weights, in the order given.
    pub fn weights(&self) -> impl Iterator<Item = (&str, f64)> {
        self.weights.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether `backend` is one of the backends.
    pub fn uses(&self, backend: &str) -> bool {
        self.weights.contains_key(backend)
    }
}

/// An endpoint: an optional HTTP route with allowed methods, and a traffic policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The HTTP route (a path prefix); without one the endpoint is reachable only by handles.
    #[serde(default)]
    pub route: Option<String>,
    /// The HTTP methods allowed on the route (default `GET`).
    #[serde(with = "method_names", default = "get_only")]
    pub methods: Vec<Method>,
    /// Which backends serve it, by weight.
    pub traffic: Traffic,
    /// Backends that also get a copy of a share (0 to 1) of the requests; their answers are
    /// dropped, and their failures and slowness never reach the caller.
    #[serde(default)]
    pub shadow: IndexMap<String, f64>,
    /// The largest request body for this endpoint, in bytes; `None` takes
    /// `http.max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// When a backend with traffic has no live replica, send its share to the endpoint's
    /// other backends until it is back (default on; logged). Shadows never fail over.
    #[serde(default = "yes")]
    pub failover: bool,
    /// How long a request may take, queueing included (Ray's `request_timeout_s`); past
    /// it the caller gets `504` and the call is cancelled. `None` (the default): no limit.
    #[serde(
        default,
        rename = "request_timeout_s",
        with = "optional_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<std::time::Duration>,
}

/// An optional duration as a number of seconds.
mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| {
                crate::config::limits::seconds(s)
                    .map_err(|m| serde::de::Error::custom(format!("request_timeout_s {m}")))
            })
            .transpose()
    }
}

fn yes() -> bool {
    true
}

fn get_only() -> Vec<Method> {
    vec![Method::GET]
}

/// HTTP methods as their names.
mod method_names {
    use http::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(methods: &[Method], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(methods.iter().map(Method::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|name| super::parse_method(name).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl EndpointConfig {
    /// An endpoint served by one backend, without a route, allowing `GET`.
    pub fn backend(name: impl Into<String>) -> Self {
        Self::traffic(Traffic::single(name))
    }

    /// An endpoint served by weighted backends, without a route, allowing `GET`.
    pub fn traffic(traffic: Traffic) -> Self {
        Self {
            route: None,
            methods: vec![Method::GET],
            traffic,
            shadow: IndexMap::new(),
            max_body_bytes: None,
            failover: true,
            request_timeout: None,
        }
    }

    /// Sets the HTTP route.
    #[must_use]
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the allowed HTTP methods.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Checks route, methods and traffic, and normalises the route.
    pub fn validate(&mut self) -> Result<(), ServeError> {
        if let Some(route) = &self.route {
            self.route = Some(normalize_route(route).map_err(|m| ServeError::invalid("route", m))?);
        }
        if self.methods.is_empty() {
            return Err(ServeError::invalid("methods", "allows no HTTP method"));
        }
        if let Some(timeout) = self.request_timeout {
            super::limits::duration(timeout)
                .map_err(|m| ServeError::invalid("request_timeout_s", m))?;
        }
        if let Some(bytes) = self.max_body_bytes {
            within(bytes, 1, usize::MAX).map_err(|m| ServeError::invalid("max_body_bytes", m))?;
        }
        self.traffic.validate()?;
        for (backend, proportion) in &self.shadow {
            validate_shadow(&self.traffic, backend, *proportion)?;
        }
        Ok(())
    }

    /// Sets `request_timeout_s`.
    #[must_use]
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Turns failover to the endpoint's other backends on or off.
    #[must_use]
    pub fn failover(mut self, on: bool) -> Self {
        self.failover = on;
        self
    }

    /// Sets the largest request body for this endpoint, in bytes.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// Adds a shadow backend getting a copy of `proportion` of the requests.
    #[must_use]
    pub fn shadow(mut self, backend: impl Into<String>, proportion: f64) -> Self {
        self.shadow.insert(backend.into(), proportion);
        self
    }
}

/// Checks one shadow backend; the error's key is `shadow.NAME`.
pub(crate) fn validate_shadow(
    traffic: &Traffic,
    backend: &str,
    proportion: f64,
) -> Result<(), ServeError> {
    if !(0.0..=1.0).contains(&proportion) {
        return Err(ServeError::invalid(
            format!("shadow.{backend}"),
            format!("proportion {proportion} must be between 0 and 1"),
        ));
    }
    if traffic.uses(backend) {
        return Err(ServeError::invalid(
            format!("shadow.{backend}"),
            "a backend that serves the endpoint's traffic cannot also shadow it",
        ));
    }
    Ok(())
}

/// Checks a route and strips a trailing `/` (except for `/` itself).
pub(crate) fn normalize_route(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err(format!("route `{route}` must start with `/`"));
    }
    if route.contains(['?', '#']) || route.chars().any(char::is_whitespace) {
        return Err(format!(
            "route `{route}` must be a plain path (no query, fragment or spaces)"
        ));
    }
    if route == "/-" || route.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "route `{route}` is under `{RESERVED_PREFIX}`, which Ferroserve keeps for itself"
        ));
    }
    if route == "/v2" || route.starts_with("/v2/") {
        return Err(format!(
            "route `{route}` is under `/v2`, where Ferroserve serves the Open Inference Protocol (each endpoint is a model there, by its name)"
        ));
    }
    let trimmed = route.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// Parses an HTTP method name (case-insensitive).
pub(crate) fn parse_method(name: &str) -> Result<Method, String> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{name}` is not an HTTP method"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_checked_and_normalised() {
        assert_eq!(normalize_route("/api/").as_deref(), Ok("/api"));
        assert_eq!(normalize_route("/").as_deref(), Ok("/"));
        assert!(normalize_route("api").is_err());
        assert!(normalize_route("/-/routes").is_err());
        assert!(
            normalize_route("/v2/models/m/infer").is_err(),
            "the Open Inference Protocol's"
        );
        assert!(normalize_route("/v2").is_err());
        assert_eq!(normalize_route("/v20").as_deref(), Ok("/v20"));
        assert!(normalize_route("/a?b").is_err());
    }

    #[test]
    fn traffic_weights_must_sum_to_one() {
        assert!(Traffic::new([("a", 0.5), ("b", 0.5)]).is_ok());
        let err = Traffic::new([("a", 0.5), ("b", 0.6)]).expect_err("sum 1.1");
        assert!(err.to_string().contains("sum to 1.1"), "{err}");
        assert!(Traffic::new([("a", -0.5), ("b", 1.5)]).is_err());
        assert!(Traffic::new(Vec::<(String, f64)>::new()).is_err());
    }

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!(parse_method("post"), Ok(Method::POST));
        assert!(parse_method("GE T").is_err());
    }
}
