//! A backend's keys in YAML: its kind (`builtin`, `rust`, `python`, `onnx`) and how it is run, checked with errors that name the line and the key.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{ConfigError, Errors, line_of};
use crate::config::{
    AutoscalingConfig, BUILTIN_BACKENDS, BackendConfig, BackendKind, BackendSpec, OnnxBackend,
    PythonBackend, RegisteredNames,
};
use crate::error::ServeError;

/// A backend's keys, as written under `backends.NAME` (and, without a kind, in a model
/// repository's `config.yaml`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendFile {
    pub(super) builtin: Option<Spanned<String>>,
    pub(super) rust: Option<Spanned<String>>,
    pub(super) python: Option<Spanned<String>>,
    pub(super) onnx: Option<Spanned<String>>,
    onnx_runtime_lib: Option<String>,
    onnx_threads: Option<Spanned<usize>>,
    pub(super) working_dir: Option<Spanned<String>>,
    pub(super) python_executable: Option<Spanned<String>>,
    pub(super) env: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub(super) start_timeout_s: Option<Spanned<f64>>,
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
    num_cpus: Option<Spanned<f64>>,
    num_gpus: Option<Spanned<f64>>,
    memory: Option<Spanned<u64>>,
    max_replicas_per_node: Option<Spanned<usize>>,
    autoscaling_config: Option<Spanned<AutoscalingConfig>>,
}

/// `key.field`, or `field` alone when `key` is empty (a file of one backend's keys).
pub(super) fn key_of(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_owned()
    } else {
        format!("{key}.{field}")
    }
}

/// The backend `name` of an app file.
pub(super) fn backend_spec(
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
    if spec.python.is_none()
        && let Some((field, line)) = python_only(&spec).into_iter().next()
    {
        return errors.at(
            line.unwrap_or(spec_line),
            format!("{key}.{field}"),
            "applies to `python:` backends only",
        );
    }
    let kind = if let Some(b) = &spec.builtin {
        if !BUILTIN_BACKENDS.contains(&b.value.as_str()) {
            let known = BUILTIN_BACKENDS;
            return errors.at(
                line_of(b),
                format!("{key}.builtin"),
                format!(
                    "no built-in backend `{}`; the built-in backends are: {}",
                    b.value,
                    known.join(", ")
                ),
            );
        }
        BackendKind::Builtin(b.value.clone())
    } else if let Some(r) = &spec.rust {
        if !registry.is_registered(&r.value) {
            let known = registry.registered();
            let known = if known.is_empty() {
                "none (the stock binary registers none; use `builtin:` or `python:`)".to_owned()
            } else {
                known.join(", ")
            };
            return errors.at(
                line_of(r),
                format!("{key}.rust"),
                format!(
                    "no Rust backend `{}` is registered by this program; registered: {known}",
                    r.value
                ),
            );
        }
        BackendKind::Rust(r.value.clone())
    } else if let Some(p) = &spec.python {
        BackendKind::Python(python_backend(errors, &key, p, &spec)?)
    } else if let Some(model) = &spec.onnx {
        // Relative to the app file, as `working_dir` is.
        let mut onnx = OnnxBackend::new(errors.base.join(&model.value));
        if !onnx.model.is_file() {
            return errors.at(
                line_of(model),
                format!("{key}.onnx"),
                format!("`{}` is not a file", onnx.model.display()),
            );
        }
        onnx_options(errors, &key, &spec, &mut onnx)?;
        BackendKind::Onnx(onnx)
    } else {
        return errors.at(
            line,
            key,
            "says nothing to serve: give `builtin: NAME`, `rust: NAME`, `python: module:attr` or `onnx: model.onnx`",
        );
    };
    let config = backend_config(errors, &key, spec_line, &spec, BackendConfig::default())?;
    Ok(BackendSpec {
        name: name.value.clone(),
        kind,
        config,
        line: line as usize,
    })
}

/// The keys of `python:` backends only that `spec` gives, with their lines when known.
pub(super) fn python_only(spec: &BackendFile) -> Vec<(&'static str, Option<u32>)> {
    [
        ("working_dir", spec.working_dir.as_ref().map(line_of)),
        (
            "python_executable",
            spec.python_executable.as_ref().map(line_of),
        ),
        ("env", spec.env.as_ref().map(line_of)),
        (
            "start_timeout_s",
            spec.start_timeout_s.as_ref().map(line_of),
        ),
    ]
    .into_iter()
    .filter(|(_, line)| line.is_some())
    .collect()
}

/// The Python backend `target` with its Python keys.
fn python_backend(
    errors: &Errors<'_>,
    key: &str,
    target: &Spanned<String>,
    spec: &BackendFile,
) -> Result<PythonBackend, ConfigError> {
    let mut python = PythonBackend::new(target.value.clone());
    if let Err(message) = python.validate() {
        return errors.at(line_of(target), format!("{key}.python"), message);
    }
    if let Some(dir) = &spec.working_dir {
        // Relative to the app file, so `ferroserve run path/app.yaml` works from anywhere.
        let resolved = errors.base.join(&dir.value);
        if !resolved.is_dir() {
            return errors.at(
                line_of(dir),
                format!("{key}.working_dir"),
                format!("`{}` is not a directory", resolved.display()),
            );
        }
        python.working_dir = Some(resolved);
    }
    // A path (`.venv/bin/python`) is relative to the app file, as `working_dir` is; a bare
    // name (`python3`) is looked up on `PATH`.
    python.python_executable = spec.python_executable.as_ref().map(|p| {
        if p.value.contains('/') {
            errors.base.join(&p.value).to_string_lossy().into_owned()
        } else {
            p.value.clone()
        }
    });
    python.env = spec
        .env
        .as_ref()
        .map(|e| e.value.clone())
        .unwrap_or_default();
    if let Some(timeout) = &spec.start_timeout_s {
        python.start_timeout = match crate::config::limits::seconds(timeout.value) {
            Ok(duration) => duration,
            Err(message) => {
                return errors.at(line_of(timeout), format!("{key}.start_timeout_s"), message);
            }
        };
    }
    Ok(python)
}

/// `onnx_runtime_lib` (relative to the file) and `onnx_threads` onto `onnx`; errors name
/// `key.FIELD`.
pub(super) fn onnx_options(
    errors: &Errors<'_>,
    key: &str,
    spec: &BackendFile,
    onnx: &mut OnnxBackend,
) -> Result<(), ConfigError> {
    onnx.runtime_lib = spec
        .onnx_runtime_lib
        .as_ref()
        .map(|lib| errors.base.join(lib));
    if let Some(threads) = &spec.onnx_threads {
        onnx.threads = threads.value;
        if let Err(message) = onnx.validate() {
            return errors.at(line_of(threads), key_of(key, "onnx_threads"), message);
        }
    }
    Ok(())
}

/// How the backend is run: the keys `spec` gives over `start`, checked; errors name
/// `key.FIELD` at the field's line (`spec_line` when the field is not written).
pub(super) fn backend_config(
    errors: &Errors<'_>,
    key: &str,
    spec_line: u32,
    spec: &BackendFile,
    start: BackendConfig,
) -> Result<BackendConfig, ConfigError> {
    let mut config = start;
    if let Some(value) = &spec.user_config {
        config.user_config = value.clone();
    }
    if let Some(value) = &spec.init_args {
        config.init_args = value.clone();
    }
    let mut field_lines: HashMap<&str, u32> = HashMap::new();
    if let Some(v) = &spec.version {
        field_lines.insert("version", line_of(v));
        config.version = Some(v.value.clone());
    }
    let counts = [
        ("max_surge", &spec.max_surge, &mut config.max_surge),
        (
            "max_queued_requests",
            &spec.max_queued_requests,
            &mut config.max_queued_requests,
        ),
        ("num_replicas", &spec.num_replicas, &mut config.num_replicas),
    ];
    for (field, given, slot) in counts {
        if let Some(n) = given {
            field_lines.insert(field, line_of(n));
            *slot = n.value;
        }
    }
    let seconds = [
        (
            "health_check_period_s",
            &spec.health_check_period_s,
            &mut config.health_check_period_s,
        ),
        (
            "health_check_timeout_s",
            &spec.health_check_timeout_s,
            &mut config.health_check_timeout_s,
        ),
        (
            "graceful_shutdown_timeout_s",
            &spec.graceful_shutdown_timeout_s,
            &mut config.graceful_shutdown_timeout_s,
        ),
    ];
    for (field, given, slot) in seconds {
        if let Some(s) = given {
            field_lines.insert(field, line_of(s));
            *slot = s.value;
        }
    }
    let resources = [
        ("num_cpus", &spec.num_cpus, &mut config.num_cpus),
        ("num_gpus", &spec.num_gpus, &mut config.num_gpus),
    ];
    for (field, given, slot) in resources {
        if let Some(n) = given {
            field_lines.insert(field, line_of(n));
            *slot = n.value;
        }
    }
    if let Some(bytes) = &spec.memory {
        field_lines.insert("memory", line_of(bytes));
        config.memory = bytes.value;
    }
    if let Some(n) = &spec.max_replicas_per_node {
        field_lines.insert("max_replicas_per_node", line_of(n));
        config.max_replicas_per_node = Some(n.value);
    }
    if let Some(autoscaling) = &spec.autoscaling_config {
        let line = line_of(autoscaling);
        if let Some(n) = &spec.num_replicas {
            return errors.at(
                line_of(n),
                key_of(key, "num_replicas"),
                "give `num_replicas` or `autoscaling_config`, not both (the autoscaler sets the count)",
            );
        }
        for field in [
            "autoscaling_config",
            "autoscaling_config.min_replicas",
            "autoscaling_config.max_replicas",
            "autoscaling_config.target_ongoing_requests",
            "autoscaling_config.upscale_delay_s",
            "autoscaling_config.downscale_delay_s",
            "autoscaling_config.upscaling_factor",
            "autoscaling_config.downscaling_factor",
            "autoscaling_config.look_back_period_s",
        ] {
            field_lines.insert(field, line);
        }
        // It starts with its fewest replicas.
        config.num_replicas = autoscaling.value.min_replicas.max(1);
        config.autoscaling_config = Some(autoscaling.value.clone());
    }
    if let Some(ms) = &spec.batch_wait_timeout_ms {
        field_lines.insert("batch_wait_timeout_ms", line_of(ms));
        config.batch_wait_timeout_ms = ms.value;
    }
    if let Some(n) = &spec.max_concurrent_queries {
        field_lines.insert("max_concurrent_queries", line_of(n));
        config.max_concurrent_queries = Some(n.value);
    }
    if let Some(n) = &spec.max_batch_size {
        field_lines.insert("max_batch_size", line_of(n));
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
        return errors.at(at, key_of(key, &field), message);
    }
    Ok(config)
}
