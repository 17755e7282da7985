//! A model repository as backends and endpoints: each model an `onnx` backend with batching on, its `config.yaml` read with the backend keys of app files, folders that cannot be models skipped with a warning, and rescans that keep what serves when a model is half copied or broken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::backend::{BackendFile, backend_config, onnx_options, python_only};
use super::{AppConfig, ConfigError, Errors, line_of, parse_error};
use crate::config::repository::{self, Found, Listing, RepositoryModel};
use crate::config::{
    BackendConfig, BackendKind, BackendSpec, EndpointConfig, EndpointSpec, OnnxBackend,
    normalize_route,
};

/// `max_batch_size` of a repository model unless its `config.yaml` says otherwise.
pub const REPOSITORY_MAX_BATCH_SIZE: usize = 8;
/// `batch_wait_timeout_ms` of a repository model unless its `config.yaml` says otherwise.
pub const REPOSITORY_BATCH_WAIT_TIMEOUT_MS: u64 = 2;

/// One model of a repository as the app serves it: the version chosen, its backend and its
/// endpoint (both named after the model; the route is `/NAME`, for `POST`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    /// The model folder and the version chosen.
    pub model: RepositoryModel,
    /// An `onnx` backend of `model.onnx`, with the version, batching defaults and the
    /// `config.yaml`'s keys.
    pub backend: BackendSpec,
    /// The endpoint `NAME` on route `/NAME`.
    pub endpoint: EndpointSpec,
}

/// What a rescan left as it was, and why, one line each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescan {
    /// Models or versions whose files are new or still changing: taken on a later rescan
    /// once they are the same in two.
    pub pending: Vec<String>,
    /// What is wrong: a folder that cannot be a model (or no longer), a `config.yaml` that
    /// is not valid, a repository that cannot be read.
    pub problems: Vec<String>,
}

/// A model repository, `DIR/NAME/VERSION/model.onnx`: the models it serves, and what the
/// last listing of its folder held, to tell files still being written on the next one.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    dir: PathBuf,
    previous: Listing,
    served: BTreeMap<String, ServedModel>,
    skipped: Vec<String>,
}

/// How a note ends for a model the server does not run.
const NOT_SERVED: &str = "not served";

impl ModelRepository {
    /// Reads the repository at `dir`: every model folder with the latest version holding
    /// a `model.onnx`, taken as it is. A folder that cannot be a model (it cannot be read,
    /// no version folder in it holds a `model.onnx`, its name is not UTF-8 or cannot be a
    /// route, as `lost+found` or `v2`) is skipped: a warning, and a line of
    /// [`skipped`](Self::skipped), say which and why. Errors: a repository folder that
    /// cannot be read, one with no model to serve (naming each folder skipped and why), a
    /// `config.yaml` that is not valid (its file, line and key).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let listing = repository::read_listing(&dir).map_err(|m| folder_error(&dir, m))?;
        let mut served = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, found) in repository::select(&dir, &listing, None) {
            let model = match found {
                Found::Model { model, .. } => model,
                Found::Pending(why) | Found::Unusable(why) => {
                    skipped.push(unusable(&dir, &name, &why, NOT_SERVED));
                    continue;
                }
            };
            if let Err(e) = model_route(&model) {
                skipped.push(format!("{e} ({NOT_SERVED})"));
                continue;
            }
            served.insert(name, serve_model(model)?);
        }
        if served.is_empty() {
            let mut message = format!(
                "the model repository has no model to serve (the layout is NAME/VERSION/{})",
                repository::MODEL_FILE
            );
            for line in &skipped {
                message.push_str("; ");
                message.push_str(line);
            }
            return Err(folder_error(&dir, message));
        }
        for line in &skipped {
            tracing::warn!("model repository: {line}");
        }
        Ok(Self {
            dir,
            previous: listing,
            served,
            skipped,
        })
    }

    /// The folders [`open`](Self::open) skipped, and why: one line each, as warned.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The repository folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The models served, by name.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.served.values()
    }

    /// Reads the folder again and updates [`models`](Self::models): a new version, a new
    /// model folder or a `model.onnx` replaced in place is taken once its files are the
    /// same as at the previous rescan (so a file being copied in is not taken half
    /// written), and a removed model folder is dropped. A model folder that has become
    /// unusable, or whose `config.yaml` is not valid, keeps what it served (a new one is
    /// left out until fixed); while the version chosen is being replaced, no older one is
    /// taken in its stead. What was left as it was, and why: each line ends with what
    /// `serving` says of the model, the version the server runs (`None`: not served).
    pub fn rescan(&mut self, serving: impl Fn(&str) -> Option<String>) -> Rescan {
        let mut notes = Rescan::default();
        let listing = match repository::read_listing(&self.dir) {
            Ok(listing) => listing,
            Err(message) => {
                let note = format!("{message}; the models serve as they were");
                notes.problems.push(note);
                return notes;
            }
        };
        let found = repository::select(&self.dir, &listing, Some(&self.previous));
        let gone: BTreeSet<String> = self
            .served
            .keys()
            .filter(|name| !found.contains_key(*name))
            .cloned()
            .collect();
        self.served.retain(|name, _| !gone.contains(name));
        for (name, found) in found {
            let keep = serving(&name).map_or_else(
                || NOT_SERVED.to_owned(),
                |version| format!("version {version} serves"),
            );
            match found {
                Found::Model { model, waiting } => {
                    if let Some(chosen) = self.served.get(&name)
                        && let Some(why) = replacing(&listing, chosen, &model)
                    {
                        notes.pending.push(format!("model `{name}`: {why}; {keep}"));
                        continue;
                    }
                    if let Some(why) = waiting {
                        notes.pending.push(format!("model `{name}`: {why}; {keep}"));
                    }
                    match serve_model(model) {
                        Ok(next) => {
                            self.served.insert(name, next);
                        }
                        Err(e) => notes.problems.push(format!("{e} ({keep})")),
                    }
                }
                Found::Pending(why) => {
                    notes.pending.push(format!("model `{name}`: {why}; {keep}"));
                }
                Found::Unusable(why) => {
                    notes.problems.push(unusable(&self.dir, &name, &why, &keep));
                }
            }
        }
        self.previous = listing;
        notes
    }
}

/// The line of a folder that cannot be a model: its path, why, and `keep`.
fn unusable(dir: &Path, name: &str, why: &str, keep: &str) -> String {
    format!("{}: {why} ({keep})", dir.join(name).display())
}

/// Why the version `chosen` of a model, rather than an older `found` instead, stays
/// chosen: its `model.onnx` is still there, but being replaced (new or changing since
/// the previous listing). `None` when `found` is to be taken.
fn replacing(listing: &Listing, chosen: &ServedModel, found: &RepositoryModel) -> Option<String> {
    let number = |v: &str| v.parse::<u64>().unwrap_or(0);
    let version = &chosen.model.version;
    let folder = listing.models.get(&chosen.model.name)?;
    (number(&found.version) < number(version) && folder.versions.get(version)?.is_some()).then(
        || {
            format!(
                "version {version}'s `{}` is being replaced (new or still changing)",
                repository::MODEL_FILE
            )
        },
    )
}

fn folder_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        line: 0,
        key: String::new(),
        message,
    }
}

/// The route of `model`'s endpoint, `/NAME`; an error naming its folder when the name
/// cannot be a route.
fn model_route(model: &RepositoryModel) -> Result<String, ConfigError> {
    normalize_route(&format!("/{}", model.name)).map_err(|message| {
        let folder = model.model.parent().and_then(Path::parent);
        folder_error(
            folder.unwrap_or(Path::new(&model.name)),
            format!("the model's name is its endpoint's route, and {message}"),
        )
    })
}

/// `model` as an `onnx` backend with the repository's batching defaults and its
/// `config.yaml`'s keys, and the endpoint `NAME` on `/NAME`. The file's stamp is part of
/// the backend's kind: a file replaced in place rolls out as a new version does.
fn serve_model(model: RepositoryModel) -> Result<ServedModel, ConfigError> {
    let route = model_route(&model)?;
    let mut onnx = OnnxBackend::new(&model.model)
        .version(model.version.clone())
        .file_stamp(model.stamp.to_string());
    let defaults = BackendConfig::default()
        .max_batch_size(REPOSITORY_MAX_BATCH_SIZE)
        .batch_wait_timeout_ms(REPOSITORY_BATCH_WAIT_TIMEOUT_MS);
    let config = match &model.config {
        Some(path) => model_config(path, &mut onnx, defaults)?,
        None => defaults,
    };
    let backend = BackendSpec {
        name: model.name.clone(),
        kind: BackendKind::Onnx(onnx),
        config,
        line: 0,
    };
    let endpoint = EndpointSpec {
        name: model.name.clone(),
        config: EndpointConfig::backend(model.name.clone())
            .route(route)
            .methods([http::Method::POST]),
        line: 0,
    };
    Ok(ServedModel {
        model,
        backend,
        endpoint,
    })
}

/// A model's `config.yaml`: the keys of a backend in an app file, but for its kind, over
/// `defaults`; `onnx_runtime_lib` and `onnx_threads` go to `onnx`.
fn model_config(
    path: &Path,
    onnx: &mut OnnxBackend,
    defaults: BackendConfig,
) -> Result<BackendConfig, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| folder_error(path, format!("cannot read the file: {e}")))?;
    let errors = Errors {
        file: &file,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if source.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        return Ok(defaults);
    }
    let spec: BackendFile =
        serde_saphyr::from_str(&source).map_err(|e| parse_error(&source, &file, &e))?;
    let kinds = [
        ("builtin", spec.builtin.as_ref()),
        ("rust", spec.rust.as_ref()),
        ("python", spec.python.as_ref()),
        ("onnx", spec.onnx.as_ref()),
    ];
    if let Some((key, given)) = kinds.iter().find_map(|(k, v)| v.map(|v| (k, v))) {
        return errors.at(
            line_of(given),
            *key,
            format!(
                "a model's {} takes no kind: the model is VERSION/{}",
                repository::CONFIG_FILE,
                repository::MODEL_FILE
            ),
        );
    }
    if let Some((key, line)) = python_only(&spec).into_iter().next() {
        return errors.at(line.unwrap_or(0), key, "applies to `python:` backends only");
    }
    onnx_options(&errors, "", &spec, onnx)?;
    backend_config(&errors, "", 0, &spec, defaults)
}

impl AppConfig {
    /// This app with every model of `repository` added as a backend and an endpoint. A
    /// model named like a backend or an endpoint of the app, or whose route `/NAME` an
    /// endpoint of the app has, is an error naming both.
    pub fn with_models(&self, repository: &ModelRepository) -> Result<Self, ConfigError> {
        let mut app = self.clone();
        for served in repository.models() {
            let name = &served.model.name;
            let clash = |line: usize, key: String, what: &str| ConfigError {
                file: self.file.clone(),
                line,
                key,
                message: format!(
                    "{what} model `{name}` of the model repository `{}`: rename one",
                    repository.dir().display()
                ),
            };
            if let Some(b) = app.spec.backends.iter().find(|b| &b.name == name) {
                return Err(clash(b.line, format!("backends.{name}"), "is named like"));
            }
            for e in &app.spec.endpoints {
                if &e.name == name {
                    return Err(clash(e.line, format!("endpoints.{name}"), "is named like"));
                }
                if e.config.route == served.endpoint.config.route {
                    let key = format!("endpoints.{}.route", e.name);
                    return Err(clash(e.line, key, "is the route of"));
                }
            }
            app.spec.backends.push(served.backend.clone());
            app.spec.endpoints.push(served.endpoint.clone());
        }
        Ok(app)
    }
}

#[cfg(test)]
mod tests;
