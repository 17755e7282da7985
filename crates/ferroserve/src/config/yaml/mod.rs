//! The YAML app file: its schema (parsed with serde-saphyr), and errors that name the file, the line and the key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::MiddlewareFile;
use super::RegisteredNames;
use super::keypath::key_path_at;
use super::{
    AppSpec, BackendSpec, DEFAULT_HOST, DEFAULT_PORT, EndpointConfig, EndpointSpec, HttpOptions,
    Traffic, normalize_route, parse_method,
};
use crate::error::ServeError;
use backend::{BackendFile, backend_spec};
pub use models::{
    ModelRepository, REPOSITORY_BATCH_WAIT_TIMEOUT_MS, REPOSITORY_MAX_BATCH_SIZE, Rescan,
    ServedModel,
};

mod backend;
mod models;

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
    models: Option<Spanned<String>>,
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
    /// Reads and validates an app file; `rust: NAME` backends must be in `registry`. The
    /// models of its model repository (`models: DIR`) are among its backends and endpoints.
    pub fn load(
        path: impl AsRef<Path>,
        registry: &dyn RegisteredNames,
    ) -> Result<Self, ConfigError> {
        let (app, models) = Self::load_without_models(path, registry)?;
        app.with_repository(models)
    }

    /// Parses and validates YAML `source`; `file` names it in errors. The models of its
    /// model repository (`models: DIR`) are among its backends and endpoints.
    pub fn from_yaml(
        source: &str,
        file: &str,
        registry: &dyn RegisteredNames,
    ) -> Result<Self, ConfigError> {
        let (app, models) = Self::from_yaml_without_models(source, file, registry)?;
        app.with_repository(models)
    }

    /// Reads and validates an app file as [`load`](Self::load) does, but leaves out the
    /// models of its model repository: the app, and the repository folder (`models:`,
    /// relative to the file) when it names one. For a server that rescans the repository.
    pub fn load_without_models(
        path: impl AsRef<Path>,
        registry: &dyn RegisteredNames,
    ) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml_without_models(&source, &file, registry)
    }

    /// This app with the models of the repository at `dir`, read as it is now.
    fn with_repository(self, dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        match dir {
            Some(dir) => self.with_models(&ModelRepository::open(dir)?),
            None => Ok(self),
        }
    }

    /// Parses and validates YAML `source` as [`from_yaml`](Self::from_yaml) does, but
    /// leaves out the models of its model repository, whose folder it returns beside.
    pub fn from_yaml_without_models(
        source: &str,
        file: &str,
        registry: &dyn RegisteredNames,
    ) -> Result<(Self, Option<PathBuf>), ConfigError> {
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
        let models = match parsed.models {
            Some(dir) => {
                // Relative to the app file, as `onnx:` model files are.
                let resolved = errors.base.join(&dir.value);
                if !resolved.is_dir() {
                    return errors.at(
                        line_of(&dir),
                        "models",
                        format!(
                            "`{}` is not a directory (a model repository: NAME/VERSION/model.onnx)",
                            resolved.display()
                        ),
                    );
                }
                Some(resolved)
            }
            None => None,
        };
        let app = Self {
            file: file.to_owned(),
            http,
            spec: AppSpec {
                backends,
                endpoints,
            },
        };
        Ok((app, models))
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
