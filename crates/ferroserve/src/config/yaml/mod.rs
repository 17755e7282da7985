//! The YAML app file: its schema (parsed with serde-saphyr), and errors that name the file, the line and the key.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::MiddlewareFile;
use super::keypath::key_path_at;
use super::{
    AppSpec, BackendConfig, BackendKind, BackendSpec, DEFAULT_HOST, DEFAULT_PORT, EndpointConfig,
    EndpointSpec, HttpOptions, OnnxBackend, PythonBackend, Traffic, normalize_route, parse_method,
};
use super::{BUILTIN_BACKENDS, RegisteredNames};
use crate::error::ServeError;

/// A config error: the file, the line (1-based; 0 when unknown), the dotted key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The line the error is on (0 when unknown).
    pub line: usize,
    /// The dotted key, e.g. `backends.echo.num_replicas`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ", line {}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ", key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A whole app: HTTP options, backends and endpoints, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// The file it came from.
    pub file: String,
    /// Where the proxy listens.
    pub http: HttpOptions,
    /// The backends and endpoints, in file order.
    pub spec: AppSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    #[serde(default)]
    http: Option<HttpFile>,
    #[serde(default)]
    backends: IndexMap<Spanned<String>, Spanned<BackendFile>>,
    #[serde(default)]
    endpoints: IndexMap<Spanned<String>, Spanned<EndpointFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    host: Option<String>,
    port: Option<u16>,
    max_body_bytes: Option<Spanned<usize>>,
    header_timeout_s: Option<Spanned<f64>>,
    body_timeout_s: Option<Spanned<f64>>,
    graceful_shutdown_timeout_s: Option<Spanned<f64>>,
    max_connections: Option<Spanned<usize>>,
    access_log: Option<super::AccessLog>,
    #[serde(default)]
    middlewares: Vec<Spanned<MiddlewareFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    builtin: Option<Spanned<String>>,
    rust: Option<Spanned<String>>,
    python: Option<Spanned<String>>,
    onnx: Option<Spanned<String>>,
    onnx_runtime_lib: Option<String>,
    onnx_threads: Option<Spanned<usize>>,
    working_dir: Option<Spanned<String>>,
    python_executable: Option<String>,
    env: Option<std::collections::BTreeMap<String, String>>,
    start_timeout_s: Option<Spanned<f64>>,
    num_replicas: Option<Spanned<usize>>,
    max_concurrent_queries: Option<Spanned<usize>>,
    max_queued_requests: Option<Spanned<usize>>,
    user_config: Option<Value>,
    init_args: Option<Value>,
    max_batch_size: Option<Spanned<usize>>,
    batch_wait_timeout_ms: Option<Spanned<u64>>,
    version: Option<Spanned<String>>,
    health_check_period_s: Option<Spanned<f64>>,
    health_check_timeout_s: Option<Spanned<f64>>,
    max_surge: Option<Spanned<usize>>,
    graceful_shutdown_timeout_s: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
    route: Option<Spanned<String>>,
    methods: Option<Spanned<Vec<String>>>,
    backend: Option<Spanned<String>>,
    traffic: Option<Spanned<IndexMap<Spanned<String>, Spanned<f64>>>>,
    shadow: Option<IndexMap<Spanned<String>, Spanned<f64>>>,
    max_body_bytes: Option<Spanned<usize>>,
    failover: Option<bool>,
    request_timeout_s: Option<Spanned<f64>>,
}

/// Builds errors for one file, and resolves paths relative to it.
struct Errors<'a> {
    file: &'a str,
    base: std::path::PathBuf,
}

impl Errors<'_> {
    fn at<T>(
        &self,
        line: u32,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_owned(),
            line: line as usize,
            key: key.into(),
            message: message.into(),
        })
    }
}

fn line_of<T>(spanned: &Spanned<T>) -> u32 {
    #[allow(clippy::cast_possible_truncation)]
    let line = spanned.referenced.line().min(u64::from(u32::MAX)) as u32;
    line
}

impl AppConfig {
    /// Reads and validates an app file; `rust: NAME` backends must be in `registry`.
    pub fn load(
        path: impl AsRef<Path>,
        registry: &dyn RegisteredNames,
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml(&source, &file, registry)
    }

    /// Parses and validates YAML `source`; `file` names it in errors.
    pub fn from_yaml(
        source: &str,
        file: &str,
        registry: &dyn RegisteredNames,
    ) -> Result<Self, ConfigError> {
        let base = Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let errors = Errors { file, base };
        let parsed: AppFile =
            serde_saphyr::from_str(source).map_err(|e| parse_error(source, file, &e))?;
        let mut http = HttpOptions::default();
        if let Some(h) = parsed.http {
            http.host = h.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
            http.port = h.port.unwrap_or(DEFAULT_PORT);
            if let Some(bytes) = h.max_body_bytes {
                if let Err(message) = super::limits::within(bytes.value, 1, usize::MAX) {
                    return errors.at(line_of(&bytes), "http.max_body_bytes", message);
                }
                http.max_body_bytes = bytes.value;
            }
            for (key, value, field) in [
                (
                    "http.header_timeout_s",
                    h.header_timeout_s,
                    &mut http.header_timeout,
                ),
                (
                    "http.body_timeout_s",
                    h.body_timeout_s,
                    &mut http.body_timeout,
                ),
                (
                    "http.graceful_shutdown_timeout_s",
                    h.graceful_shutdown_timeout_s,
                    &mut http.graceful_shutdown_timeout,
                ),
            ] {
                if let Some(seconds) = value {
                    match super::limits::seconds(seconds.value) {
                        Ok(duration) => *field = duration,
                        Err(message) => return errors.at(line_of(&seconds), key, message),
                    }
                }
            }
            if let Some(n) = h.max_connections {
                if let Err(message) = super::limits::within(n.value, 1, super::MAX_CONNECTIONS) {
                    return errors.at(line_of(&n), "http.max_connections", message);
                }
                http.max_connections = Some(n.value);
            }
            if let Some(format) = h.access_log {
                http.access_log = format;
            }
            for (i, item) in h.middlewares.into_iter().enumerate() {
                let line = line_of(&item);
                match item.value.into_middleware() {
                    Ok(middleware) => http.middlewares.push(middleware),
                    Err(message) => {
                        return errors.at(line, format!("http.middlewares[{i}]"), message);
                    }
                }
            }
        }

        let mut backends = Vec::with_capacity(parsed.backends.len());
        for (name, spec) in parsed.backends {
            backends.push(backend_spec(&errors, &name, spec, registry)?);
        }

        let mut endpoints: Vec<EndpointSpec> = Vec::with_capacity(parsed.endpoints.len());
        let mut routes: HashMap<String, String> = HashMap::new();
        for (name, spec) in parsed.endpoints {
            let endpoint = endpoint_spec(&errors, &name, spec, &backends, &mut routes)?;
            endpoints.push(endpoint);
        }
        Ok(Self {
            file: file.to_owned(),
            http,
            spec: AppSpec {
                backends,
                endpoints,
            },
        })
    }
}

fn parse_error(source: &str, file: &str, error: &serde_saphyr::Error) -> ConfigError {
    let text = error.without_snippet().to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m)
        .to_owned();
    let (line, column) = error
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    let key = if line > 0 {
        key_path_at(source, line, column, !message.starts_with("missing field"))
    } else {
        String::new()
    };
    ConfigError {
        file: file.to_owned(),
        line,
        key,
        message,
    }
}

fn backend_spec(
    errors: &Errors<'_>,
    name: &Spanned<String>,
    spec: Spanned<BackendFile>,
    registry: &dyn RegisteredNames,
) -> Result<BackendSpec, ConfigError> {
    let key = format!("backends.{}", name.value);
    let line = line_of(name);
    let spec_line = line_of(&spec);
    let spec = spec.value;
    let given = [
        spec.builtin.is_some(),
        spec.rust.is_some(),
        spec.python.is_some(),
        spec.onnx.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return errors.at(
            spec_line,
            key,
            "give one of `builtin`, `rust`, `python` and `onnx`, not several",
        );
    }
    let onnx_only = [
        ("onnx_runtime_lib", spec.onnx_runtime_lib.is_some()),
        ("onnx_threads", spec.onnx_threads.is_some()),
    ];
    if spec.onnx.is_none()
        && let Some((field, _)) = onnx_only.iter().find(|(_, set)| *set)
    {
        return errors.at(
            spec_line,
            format!("{key}.{field}"),
            "applies to `onnx:` backends only",
        );
    }
    let python_only = [
        ("working_dir", spec.working_dir.is_some()),
        ("python_executable", spec.python_executable.is_some()),
        ("env", spec.env.is_some()),
        ("start_timeout_s", spec.start_timeout_s.is_some()),
    ];
    if spec.python.is_none()
        && let Some((field, _)) = python_only.iter().find(|(_, set)| *set)
    {
        return errors.at(
            spec_line,
            format!("{key}.{field}"),
            "applies to `python:` backends only",
        );
    }
    let kind = if let Some(b) = spec.builtin {
        if !BUILTIN_BACKENDS.contains(&b.value.as_str()) {
            let known = BUILTIN_BACKENDS;
            return errors.at(
                line_of(&b),
                format!("{key}.builtin"),
                format!(
                    "no built-in backend `{}`; the built-in backends are: {}",
                    b.value,
                    known.join(", ")
                ),
            );
        }
        BackendKind::Builtin(b.value)
    } else if let Some(r) = spec.rust {
        if !registry.is_registered(&r.value) {
            let known = registry.registered();
            let known = if known.is_empty() {
                "none (the stock binary registers none; use `builtin:` or `python:`)".to_owned()
            } else {
                known.join(", ")
            };
            return errors.at(
                line_of(&r),
                format!("{key}.rust"),
                format!(
                    "no Rust backend `{}` is registered by this program; registered: {known}",
                    r.value
                ),
            );
        }
        BackendKind::Rust(r.value)
    } else if let Some(p) = spec.python {
        let mut python = PythonBackend::new(p.value.clone());
        if let Err(message) = python.validate() {
            return errors.at(line_of(&p), format!("{key}.python"), message);
        }
        if let Some(dir) = spec.working_dir {
            // Relative to the app file, so `ferroserve run path/app.yaml` works from anywhere.
            let resolved = errors.base.join(&dir.value);
            if !resolved.is_dir() {
                return errors.at(
                    line_of(&dir),
                    format!("{key}.working_dir"),
                    format!("`{}` is not a directory", resolved.display()),
                );
            }
            python.working_dir = Some(resolved);
        }
        python.python_executable = spec.python_executable;
        python.env = spec.env.unwrap_or_default();
        if let Some(timeout) = spec.start_timeout_s {
            python.start_timeout = match super::limits::seconds(timeout.value) {
                Ok(duration) => duration,
                Err(message) => {
                    return errors.at(line_of(&timeout), format!("{key}.start_timeout_s"), message);
                }
            };
        }
        BackendKind::Python(python)
    } else if let Some(model) = spec.onnx {
        // Relative to the app file, as `working_dir` is.
        let mut onnx = OnnxBackend::new(errors.base.join(&model.value));
        if !onnx.model.is_file() {
            return errors.at(
                line_of(&model),
                format!("{key}.onnx"),
                format!("`{}` is not a file", onnx.model.display()),
            );
        }
        onnx.runtime_lib = spec.onnx_runtime_lib.map(|lib| errors.base.join(lib));
        if let Some(threads) = spec.onnx_threads {
            onnx.threads = threads.value;
            if let Err(message) = onnx.validate() {
                return errors.at(line_of(&threads), format!("{key}.onnx_threads"), message);
            }
        }
        BackendKind::Onnx(onnx)
    } else {
        return errors.at(
            line,
            key,
            "says nothing to serve: give `builtin: NAME`, `rust: NAME`, `python: module:attr` or `onnx: model.onnx`",
        );
    };
    let mut config = BackendConfig {
        user_config: spec.user_config.unwrap_or(Value::Null),
        init_args: spec.init_args.unwrap_or(Value::Null),
        ..BackendConfig::default()
    };
    let mut field_lines: HashMap<&str, u32> = HashMap::new();
    if let Some(v) = spec.version {
        field_lines.insert("version", line_of(&v));
        config.version = Some(v.value);
    }
    if let Some(n) = spec.max_surge {
        field_lines.insert("max_surge", line_of(&n));
        config.max_surge = n.value;
    }
    let seconds = [
        (
            "health_check_period_s",
            spec.health_check_period_s,
            &mut config.health_check_period_s,
        ),
        (
            "health_check_timeout_s",
            spec.health_check_timeout_s,
            &mut config.health_check_timeout_s,
        ),
        (
            "graceful_shutdown_timeout_s",
            spec.graceful_shutdown_timeout_s,
            &mut config.graceful_shutdown_timeout_s,
        ),
    ];
    for (field, given, slot) in seconds {
        if let Some(s) = given {
            field_lines.insert(field, line_of(&s));
            *slot = s.value;
        }
    }
    if let Some(n) = spec.max_queued_requests {
        field_lines.insert("max_queued_requests", line_of(&n));
        config.max_queued_requests = n.value;
    }
    if let Some(ms) = spec.batch_wait_timeout_ms {
        field_lines.insert("batch_wait_timeout_ms", line_of(&ms));
        config.batch_wait_timeout_ms = ms.value;
    }
    if let Some(n) = spec.num_replicas {
        field_lines.insert("num_replicas", line_of(&n));
        config.num_replicas = n.value;
    }
    if let Some(n) = spec.max_concurrent_queries {
        field_lines.insert("max_concurrent_queries", line_of(&n));
        config.max_concurrent_queries = Some(n.value);
    }
    if let Some(n) = spec.max_batch_size {
        field_lines.insert("max_batch_size", line_of(&n));
        config.max_batch_size = Some(n.value);
    }
    if let Err(ServeError::InvalidConfig {
        key: field,
        message,
    }) = config.validate()
    {
        let at = field_lines
            .get(field.as_str())
            .copied()
            .unwrap_or(spec_line);
        return errors.at(at, format!("{key}.{field}"), message);
    }
    Ok(BackendSpec {
        name: name.value.clone(),
        kind,
        config,
        line: line as usize,
    })
}

fn endpoint_spec(
    errors: &Errors<'_>,
    name: &Spanned<String>,
    spec: Spanned<EndpointFile>,
    backends: &[BackendSpec],
    routes: &mut HashMap<String, String>,
) -> Result<EndpointSpec, ConfigError> {
    let key = format!("endpoints.{}", name.value);
    let line = line_of(name);
    let spec = spec.value;
    let known = |backend: &str| backends.iter().any(|b| b.name == backend);
    let missing = |backend: &str| {
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        format!(
            "no backend `{backend}` is defined; the backends are: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
    };

    let traffic = match (spec.backend, spec.traffic) {
        (Some(b), None) => {
            if !known(&b.value) {
                return errors.at(line_of(&b), format!("{key}.backend"), missing(&b.value));
            }
            Traffic::single(b.value)
        }
        (None, Some(t)) => {
            let traffic_line = line_of(&t);
            let mut weights = Vec::with_capacity(t.value.len());
            for (backend, weight) in t.value {
                let wkey = format!("{key}.traffic.{}", backend.value);
                if !known(&backend.value) {
                    return errors.at(line_of(&backend), wkey, missing(&backend.value));
                }
                if !weight.value.is_finite() || weight.value < 0.0 {
                    return errors.at(
                        line_of(&weight),
                        wkey,
                        format!("weight {} must be a number ≥ 0", weight.value),
                    );
                }
                weights.push((backend.value, weight.value));
            }
            match Traffic::new(weights) {
                Ok(t) => t,
                Err(e) => {
                    let message = match e {
                        ServeError::InvalidConfig { message, .. } => message,
                        other => other.to_string(),
                    };
                    return errors.at(traffic_line, format!("{key}.traffic"), message);
                }
            }
        }
        (Some(_), Some(t)) => {
            return errors.at(
                line_of(&t),
                key,
                "give one of `backend` and `traffic`, not both",
            );
        }
        (None, None) => {
            return errors.at(
                line,
                key,
                "names no backend: give `backend: NAME` or `traffic: {NAME: weight}`",
            );
        }
    };

    let mut config = EndpointConfig::traffic(traffic);
    for (backend, share) in spec.shadow.unwrap_or_default() {
        let skey = format!("{key}.shadow.{}", backend.value);
        if !known(&backend.value) {
            return errors.at(line_of(&backend), skey, missing(&backend.value));
        }
        if let Err(ServeError::InvalidConfig { message, .. }) =
            super::validate_shadow(&config.traffic, &backend.value, share.value)
        {
            return errors.at(line_of(&share), skey, message);
        }
        config.shadow.insert(backend.value, share.value);
    }
    if let Some(methods) = spec.methods {
        let mut parsed = Vec::with_capacity(methods.value.len());
        for m in &methods.value {
            match parse_method(m) {
                Ok(m) => parsed.push(m),
                Err(message) => {
                    return errors.at(line_of(&methods), format!("{key}.methods"), message);
                }
            }
        }
        if parsed.is_empty() {
            return errors.at(
                line_of(&methods),
                format!("{key}.methods"),
                "allows no HTTP method",
            );
        }
        config.methods = parsed;
    }
    if let Some(seconds) = spec.request_timeout_s {
        match super::limits::seconds(seconds.value) {
            Ok(timeout) => config.request_timeout = Some(timeout),
            Err(message) => {
                return errors.at(
                    line_of(&seconds),
                    format!("{key}.request_timeout_s"),
                    message,
                );
            }
        }
    }
    if let Some(failover) = spec.failover {
        config.failover = failover;
    }
    if let Some(bytes) = spec.max_body_bytes {
        if let Err(message) = super::limits::within(bytes.value, 1, usize::MAX) {
            return errors.at(line_of(&bytes), format!("{key}.max_body_bytes"), message);
        }
        config.max_body_bytes = Some(bytes.value);
    }
    if let Some(route) = spec.route {
        let normalized = match normalize_route(&route.value) {
            Ok(r) => r,
            Err(message) => return errors.at(line_of(&route), format!("{key}.route"), message),
        };
        if let Some(other) = routes.get(&normalized) {
            return errors.at(
                line_of(&route),
                format!("{key}.route"),
                format!("route `{normalized}` is already served by endpoint `{other}`"),
            );
        }
        routes.insert(normalized.clone(), name.value.clone());
        config.route = Some(normalized);
    }
    Ok(EndpointSpec {
        name: name.value.clone(),
        config,
        line: line as usize,
    })
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
