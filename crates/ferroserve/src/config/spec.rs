//! The app's desired state as serde data: each backend's kind and config, each endpoint's config — what is written out and read back (a file, later a store).

use serde::{Deserialize, Serialize};

use super::{BackendConfig, EndpointConfig, OnnxBackend, PythonBackend};
use crate::error::ServeError;

/// How a backend's replicas are made: one variant, and one YAML key, per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// A stock backend of Ferroserve (`builtin: echo`).
    Builtin(String),
    /// A backend registered by the embedding program (`rust: NAME`).
    Rust(String),
    /// A Python class or function, one worker process per replica (`python: module:attr`).
    Python(PythonBackend),
    /// An ONNX model run in process by ONNX Runtime (`onnx: model.onnx`).
    Onnx(OnnxBackend),
}

/// One backend of the app: its name, kind and config.
///
/// Written as one object: `name`, one kind key (`builtin`, `rust` or `python`) and the
/// config's fields. Reading it back refuses unknown keys and more than one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Object")]
pub struct BackendSpec {
    /// The backend's name.
    pub name: String,
    /// How its replicas are made.
    #[serde(flatten)]
    pub kind: BackendKind,
    /// How it is run.
    #[serde(flatten)]
    pub config: BackendConfig,
    /// The line of the app file it is defined on (0 when not from a file).
    #[serde(skip)]
    pub line: usize,
}

/// One endpoint of the app: its name and config, written as one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Object")]
pub struct EndpointSpec {
    /// The endpoint's name.
    pub name: String,
    /// Its route, methods and traffic.
    #[serde(flatten)]
    pub config: EndpointConfig,
    /// The line of the app file it is defined on (0 when not from a file).
    #[serde(skip)]
    pub line: usize,
}

type Object = serde_json::Map<String, serde_json::Value>;

/// Takes the `name` out of a spec's object.
fn take_name(object: &mut Object) -> Result<String, String> {
    match object.remove("name") {
        Some(serde_json::Value::String(name)) => Ok(name),
        Some(other) => Err(format!("`name` must be a string, not {other}")),
        None => Err("missing field `name`".to_owned()),
    }
}

const KINDS: [&str; 4] = ["builtin", "rust", "python", "onnx"];

impl TryFrom<Object> for BackendSpec {
    type Error = String;

    fn try_from(mut object: Object) -> Result<Self, String> {
        let name = take_name(&mut object)?;
        let within = |e: serde_json::Error| format!("backend `{name}`: {e}");
        let kinds: Vec<(String, serde_json::Value)> = KINDS
            .iter()
            .filter_map(|k| object.remove(*k).map(|v| ((*k).to_owned(), v)))
            .collect();
        if kinds.len() != 1 {
            return Err(format!(
                "backend `{name}`: give one of `builtin`, `rust`, `python` and `onnx`, not {}",
                kinds.len()
            ));
        }
        let kind = serde_json::from_value(serde_json::Value::Object(kinds.into_iter().collect()))
            .map_err(within)?;
        let config = serde_json::from_value(serde_json::Value::Object(object)).map_err(within)?;
        Ok(Self {
            name,
            kind,
            config,
            line: 0,
        })
    }
}

impl TryFrom<Object> for EndpointSpec {
    type Error = String;

    fn try_from(mut object: Object) -> Result<Self, String> {
        let name = take_name(&mut object)?;
        let config = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| format!("endpoint `{name}`: {e}"))?;
        Ok(Self {
            name,
            config,
            line: 0,
        })
    }
}

/// The app's desired state: its backends and endpoints, in order.
///
/// It is plain serde data, so it can be written out and read back:
///
/// ```
/// use ferroserve::{AppSpec, BackendConfig, BackendKind, BackendSpec, EndpointConfig, EndpointSpec};
/// let app = AppSpec {
///     backends: vec![BackendSpec {
///         name: "echo".into(),
///         kind: BackendKind::Builtin("echo".into()),
///         config: BackendConfig::default().num_replicas(2),
///         line: 0,
///     }],
///     endpoints: vec![EndpointSpec {
///         name: "echo".into(),
///         config: EndpointConfig::backend("echo").route("/echo"),
///         line: 0,
///     }],
/// };
/// let json = serde_json::to_string(&app).unwrap();
/// let back: AppSpec = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, app);
/// back.validate().unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The backends.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

impl AppSpec {
    /// Checks what can be checked without a running server: each config, unique names and
    /// routes, and that endpoints name backends of the app. The error's key is dotted
    /// (`backends.NAME.FIELD`, `endpoints.NAME.FIELD`).
    pub fn validate(&self) -> Result<(), ServeError> {
        let within = |prefix: String| {
            move |e: ServeError| match e {
                ServeError::InvalidConfig { key, message } => {
                    ServeError::invalid(format!("{prefix}.{key}"), message)
                }
                other => other,
            }
        };
        let mut names = std::collections::HashSet::new();
        for backend in &self.backends {
            let key = format!("backends.{}", backend.name);
            if !names.insert(backend.name.as_str()) {
                return Err(ServeError::invalid(key, "is defined twice"));
            }
            if let BackendKind::Python(python) = &backend.kind {
                python
                    .validate()
                    .map_err(|m| ServeError::invalid(format!("{key}.python"), m))?;
            }
            backend.config.validate().map_err(within(key))?;
        }
        let mut endpoints = std::collections::HashSet::new();
        let mut routes = std::collections::HashMap::new();
        for endpoint in &self.endpoints {
            let key = format!("endpoints.{}", endpoint.name);
            if !endpoints.insert(endpoint.name.as_str()) {
                return Err(ServeError::invalid(key, "is defined twice"));
            }
            let mut config = endpoint.config.clone();
            config.validate().map_err(within(key.clone()))?;
            if config != endpoint.config {
                return Err(ServeError::invalid(
                    format!("{key}.route"),
                    "must be normalised (no trailing `/`)",
                ));
            }
            let used = config.traffic.weights().map(|(b, _)| b);
            for backend in used.chain(config.shadow.keys().map(String::as_str)) {
                if !names.contains(backend) {
                    return Err(ServeError::invalid(
                        key,
                        format!("names backend `{backend}`, which the app does not define"),
                    ));
                }
            }
            if let Some(route) = &config.route
                && let Some(other) = routes.insert(route.clone(), endpoint.name.as_str())
            {
                return Err(ServeError::invalid(
                    format!("{key}.route"),
                    format!("route `{route}` is already served by endpoint `{other}`"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppConfig, ModelOnly as Names};

    const APP: &str = "\
backends:
  echo: {builtin: echo, num_replicas: 2, user_config: {threshold: 0.5}}
  model: {rust: model, max_batch_size: 8, batch_wait_timeout_ms: 5, init_args: [1, 2]}
  counter:
    python: stateful:Counter
    python_executable: venv/bin/python
    env: {MODEL: small}
    start_timeout_s: 2.5
    max_concurrent_queries: 4
    max_queued_requests: 10
endpoints:
  api:
    route: /api
    methods: [GET, POST]
    traffic: {echo: 0.25, model: 0.75}
    shadow: {counter: 0.1}
  internal: {backend: counter}
";

    #[test]
    fn every_kind_and_field_round_trips_through_json() {
        let app = AppConfig::from_yaml(APP, "app.yaml", &Names)
            .expect("valid")
            .spec;
        let json = serde_json::to_string_pretty(&app).expect("serialises");
        let back: AppSpec = serde_json::from_str(&json).expect(&json);
        let without_lines = |mut a: AppSpec| {
            a.backends.iter_mut().for_each(|b| b.line = 0);
            a.endpoints.iter_mut().for_each(|e| e.line = 0);
            a
        };
        assert_eq!(back, without_lines(app));
        back.validate().expect("still valid");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["backends"][2]["python"]["target"], "stateful:Counter");
        assert_eq!(value["backends"][2]["python"]["start_timeout_s"], 2.5);
        assert_eq!(value["backends"][0]["builtin"], "echo");
        assert_eq!(value["endpoints"][0]["methods"][1], "POST");
        assert_eq!(value["endpoints"][0]["traffic"]["model"], 0.75);
    }

    #[test]
    fn what_is_read_back_is_checked() {
        let bad = r#"{"backends": [{"name": "a", "builtin": "echo", "num_replicas": 0}]}"#;
        let app: AppSpec = serde_json::from_str(bad).expect("well-formed");
        let err = app.validate().expect_err("zero replicas");
        assert!(err.to_string().contains("backends.a.num_replicas"), "{err}");
        let dangling = r#"{"endpoints": [{"name": "e", "traffic": {"nope": 1.0}}]}"#;
        let app: AppSpec = serde_json::from_str(dangling).expect("well-formed");
        let err = app.validate().expect_err("no such backend");
        assert!(err.to_string().contains("`nope`"), "{err}");
        for bad in [
            r#"{"backends": [{"name": "a", "builtin": "echo", "rust": "x"}]}"#,
            r#"{"backends": [{"name": "a", "num_replicas": 2}]}"#,
            r#"{"backends": [{"name": "a", "builtin": "echo", "num_replica": 2}]}"#,
            r#"{"backends": [{"builtin": "echo"}]}"#,
            r#"{"endpoints": [{"name": "e", "backend": "a", "rout": "/x"}]}"#,
        ] {
            let err = serde_json::from_str::<AppSpec>(bad).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
    }
}
