//! A model repository as backends and endpoints: each model an `onnx` backend with batching on, its `config.yaml` read with the backend keys of app files, and rescans that keep what serves when a model is half copied or broken.

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
    /// What is wrong: a model folder that became unusable, a `config.yaml` that is not
    /// valid, a repository that cannot be read.
    pub problems: Vec<String>,
}

/// A model repository, `DIR/NAME/VERSION/model.onnx`: the models it serves, and what the
/// last listing of its folder held, to tell files still being written on the next one.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    dir: PathBuf,
    previous: Listing,
    served: BTreeMap<String, ServedModel>,
}

impl ModelRepository {
    /// Reads the repository at `dir`: every model folder with the latest version holding
    /// a `model.onnx`, taken as it is. A folder that cannot be read, a model folder with no
    /// such version, a `config.yaml` that is not valid (its file, line and key) and a
    /// model name that cannot be a route are errors.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let listing = repository::read_listing(&dir).map_err(|m| folder_error(&dir, m))?;
        let mut served = BTreeMap::new();
        for (name, found) in repository::select(&dir, &listing, None) {
            let model = match found {
                Found::Model { model, .. } => model,
                Found::Pending(why) | Found::Unusable(why) => {
                    return Err(folder_error(&dir.join(&name), why));
                }
            };
            served.insert(name, serve_model(model)?);
        }
        Ok(Self {
            dir,
            previous: listing,
            served,
        })
    }

    /// The repository folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The models served, by name.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.served.values()
    }

    /// Reads the folder again and updates [`models`](Self::models): a new version or a new
    /// model folder is taken once its files are the same as at the previous rescan (so a
    /// file being copied in is not taken half written), and a removed model folder is
    /// dropped. A model folder that has become unusable, or whose `config.yaml` is not
    /// valid, keeps what it served (a new one is left out until fixed). What was left as
    /// it was, and why.
    pub fn rescan(&mut self) -> Rescan {
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
            let serving = self
                .served
                .get(&name)
                .map(|s| format!("version {} serves", s.model.version));
            let keep = serving.unwrap_or_else(|| "not served yet".to_owned());
            match found {
                Found::Model { model, waiting } => {
                    if let Some(why) = waiting {
                        let chosen = &model.version;
                        notes
                            .pending
                            .push(format!("model `{name}`: {why}; version {chosen} is chosen"));
                    }
                    match serve_model(model) {
                        Ok(next) => {
                            self.served.insert(name, next);
                        }
                        Err(e) => notes.problems.push(format!("{e} (model `{name}`: {keep})")),
                    }
                }
                Found::Pending(why) => {
                    notes.pending.push(format!("model `{name}`: {why}; {keep}"));
                }
                Found::Unusable(why) => notes
                    .problems
                    .push(format!("{} {why} ({keep})", self.dir.join(&name).display())),
            }
        }
        self.previous = listing;
        notes
    }
}

fn folder_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        line: 0,
        key: String::new(),
        message,
    }
}

/// `model` as an `onnx` backend with the repository's batching defaults and its
/// `config.yaml`'s keys, and the endpoint `NAME` on `/NAME`.
fn serve_model(model: RepositoryModel) -> Result<ServedModel, ConfigError> {
    let folder = model
        .model
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let route = normalize_route(&format!("/{}", model.name)).map_err(|message| {
        folder_error(
            &folder,
            format!("the model's name is its endpoint's route, and {message}"),
        )
    })?;
    let mut onnx = OnnxBackend::new(&model.model).version(model.version.clone());
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
mod tests {
    use super::*;
    use crate::config::ModelOnly;

    /// A repository in a temporary folder: `files` are (path, contents) under it.
    fn repository(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, contents) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, contents).expect("written");
        }
        dir
    }

    fn names(repository: &ModelRepository) -> Vec<(&str, &str)> {
        repository
            .models()
            .map(|m| (m.model.name.as_str(), m.model.version.as_str()))
            .collect()
    }

    #[test]
    fn each_model_is_an_onnx_backend_with_batching_and_an_endpoint() {
        let dir = repository(&[
            ("iris/1/model.onnx", "v1"),
            ("iris/2/model.onnx", "v2"),
            ("mlp/7/model.onnx", "v7"),
        ]);
        let repo = ModelRepository::open(dir.path()).expect("valid");
        assert_eq!(names(&repo), [("iris", "2"), ("mlp", "7")]);
        let iris = repo.models().next().expect("iris");
        let BackendKind::Onnx(onnx) = &iris.backend.kind else {
            panic!("{:?}", iris.backend.kind);
        };
        assert_eq!(onnx.model, dir.path().join("iris/2/model.onnx"));
        assert_eq!(onnx.version.as_deref(), Some("2"));
        assert_eq!(iris.backend.config.max_batch_size, Some(8));
        assert_eq!(iris.backend.config.batch_wait_timeout_ms, 2);
        assert_eq!(iris.endpoint.config.route.as_deref(), Some("/iris"));
        assert_eq!(iris.endpoint.config.methods, [http::Method::POST]);
        assert!(iris.endpoint.config.traffic.uses("iris"));
    }

    #[test]
    fn config_yaml_sets_backend_keys_over_the_defaults() {
        let dir = repository(&[
            ("iris/1/model.onnx", "v1"),
            (
                "iris/config.yaml",
                "# iris\nnum_replicas: 2\nmax_batch_size: 32\nonnx_threads: 2\n",
            ),
            ("mlp/1/model.onnx", "v1"),
            ("mlp/config.yaml", "# nothing yet\n"),
        ]);
        let repo = ModelRepository::open(dir.path()).expect("valid");
        let models: Vec<&ServedModel> = repo.models().collect();
        let iris = &models[0].backend;
        assert_eq!(iris.config.num_replicas, 2);
        assert_eq!(iris.config.max_batch_size, Some(32));
        assert_eq!(iris.config.batch_wait_timeout_ms, 2);
        assert!(matches!(&iris.kind, BackendKind::Onnx(o) if o.threads == 2));
        assert_eq!(models[1].backend.config.max_batch_size, Some(8));
    }

    #[test]
    fn a_bad_config_yaml_names_its_file_line_and_key() {
        let cases = [
            (
                "num_replicas: 2\nmax_batch_sise: 4\n",
                2,
                "max_batch_sise",
                "unknown field",
            ),
            ("num_replicas: 0\n", 1, "num_replicas", "at least 1"),
            ("\nnum_replicas: many\n", 2, "num_replicas", ""),
            ("onnx_threads: 0\n", 1, "onnx_threads", "between"),
            (
                "max_concurrent_queries: 4\n",
                1,
                "max_concurrent_queries",
                "max_batch_size (8)",
            ),
            ("onnx: other.onnx\n", 1, "onnx", "takes no kind"),
            ("env: {A: b}\n", 1, "env", "python:"),
        ];
        for (config, line, key, message) in cases {
            let dir = repository(&[("iris/3/model.onnx", "v3"), ("iris/config.yaml", config)]);
            let e = ModelRepository::open(dir.path()).expect_err(config);
            let file = dir.path().join("iris/config.yaml").display().to_string();
            assert_eq!(
                (e.file.as_str(), e.line, e.key.as_str()),
                (file.as_str(), line, key),
                "{config}: {e}"
            );
            assert!(e.message.contains(message), "{config}: {e}");
        }
    }

    #[test]
    fn a_model_without_a_version_or_a_route_is_an_error_naming_it() {
        let dir = repository(&[("iris/1/model.onnx", "v1"), ("mlp/1/weights.bin", "")]);
        let e = ModelRepository::open(dir.path()).expect_err("mlp has no model.onnx");
        assert_eq!(e.file, dir.path().join("mlp").display().to_string());
        assert!(e.message.contains("NAME/VERSION/model.onnx"), "{e}");
        let dir = repository(&[("v2/1/model.onnx", "v1")]);
        let e = ModelRepository::open(dir.path()).expect_err("/v2 is the protocol's");
        assert!(e.to_string().contains("route `/v2`"), "{e}");
        let e = ModelRepository::open(dir.path().join("nothing")).expect_err("no folder");
        assert!(
            e.message.contains("cannot read the model repository"),
            "{e}"
        );
    }

    #[test]
    fn models_key_is_relative_to_the_app_file_and_names_clash_clearly() {
        let dir = repository(&[("models/iris/1/model.onnx", "v1")]);
        let file = dir.path().join("app.yaml");
        let file = file.to_str().expect("utf-8");
        let yaml = "models: models\nbackends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {backend: echo, route: /echo}\n";
        let app = AppConfig::from_yaml(yaml, file, &ModelOnly).expect("valid");
        let names: Vec<&str> = app.spec.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["echo", "iris"]);
        assert_eq!(app.spec.endpoints[1].config.route.as_deref(), Some("/iris"));
        let (base, models) =
            AppConfig::from_yaml_without_models(yaml, file, &ModelOnly).expect("valid");
        assert_eq!(base.spec.backends.len(), 1);
        assert_eq!(models, Some(dir.path().join("models")));

        let e = AppConfig::from_yaml("http: {port: 0}\nmodels: nowhere\n", file, &ModelOnly)
            .expect_err("no folder");
        assert_eq!((e.line, e.key.as_str()), (2, "models"));
        for (yaml, line, key) in [
            (
                "models: models\nbackends:\n  iris: {builtin: echo}\n",
                3,
                "backends.iris",
            ),
            (
                "models: models\nbackends:\n  a: {builtin: echo}\nendpoints:\n  iris: {backend: a}\n",
                5,
                "endpoints.iris",
            ),
            (
                "models: models\nbackends:\n  a: {builtin: echo}\nendpoints:\n  e: {backend: a, route: /iris/}\n",
                5,
                "endpoints.e.route",
            ),
        ] {
            let e = AppConfig::from_yaml(yaml, file, &ModelOnly).expect_err(yaml);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.contains("model `iris`"), "{e}");
        }
    }

    #[test]
    fn a_rescan_takes_settled_versions_and_keeps_what_serves_on_trouble() {
        let dir = repository(&[("iris/1/model.onnx", "v1"), ("mlp/1/model.onnx", "v1")]);
        let root = dir.path();
        let mut repo = ModelRepository::open(root).expect("valid");
        let write = |path: &str, contents: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, contents).expect("written");
        };
        write("iris/2/model.onnx", "v2");
        write("new/1/model.onnx", "v1");
        let notes = repo.rescan();
        assert_eq!(names(&repo), [("iris", "1"), ("mlp", "1")], "{notes:?}");
        assert!(notes.problems.is_empty(), "{notes:?}");
        assert_eq!(notes.pending.len(), 2, "{notes:?}");
        assert!(
            notes.pending[0].contains("model `iris`: version 2"),
            "{notes:?}"
        );
        assert!(notes.pending[1].contains("model `new`"), "{notes:?}");
        let notes = repo.rescan();
        assert_eq!(notes, Rescan::default());
        assert_eq!(names(&repo), [("iris", "2"), ("mlp", "1"), ("new", "1")]);

        write("iris/config.yaml", "num_replicas: zero\n");
        std::fs::remove_dir_all(root.join("mlp")).expect("removed");
        std::fs::remove_file(root.join("new/1/model.onnx")).expect("removed");
        repo.rescan();
        let notes = repo.rescan().problems;
        assert_eq!(names(&repo), [("iris", "2"), ("new", "1")], "{notes:?}");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("config.yaml, line 1, key `num_replicas`"),
            "{notes:?}"
        );
        assert!(notes[0].contains("version 2 serves"), "{notes:?}");
        assert!(
            notes[1].contains("new") && notes[1].contains("version 1 serves"),
            "{notes:?}"
        );
        write("iris/config.yaml", "num_replicas: 2\n");
        repo.rescan();
        let notes = repo.rescan();
        assert!(
            notes.problems.iter().all(|n| !n.contains("iris")),
            "{notes:?}"
        );
        assert_eq!(
            repo.models().next().map(|m| m.backend.config.num_replicas),
            Some(2)
        );
    }
}
