//! The app `run` serves: its app file and its model repository (`--models`, `models:`), read again on SIGHUP and rescanned with `--poll-models`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ferroserve::{AppConfig, AppSpec, ConfigError, ModelRepository, RegisteredNames};

/// The model repository `run` serves beside (or without) an app file.
#[derive(Args, Debug, Default)]
pub(crate) struct ModelArgs {
    /// Serve every model of this model repository, `DIR/NAME/VERSION/model.onnx` (the
    /// highest VERSION), each as an `onnx` backend and an endpoint `NAME` on `/NAME`, with
    /// dynamic batching on; `DIR/NAME/config.yaml` may set the backend's keys. Overrides
    /// the app file's `models:`.
    #[arg(long, env = "FERROSERVE_MODELS", value_name = "DIR")]
    pub(crate) models: Option<PathBuf>,
    /// Rescan the model repository every `--poll-models-interval-ms` and roll out what
    /// changed, as a deploy does: a new version or model folder once its files are the same
    /// in two scans, a removed model folder taken away with its endpoint.
    #[arg(long, env = "FERROSERVE_POLL_MODELS")]
    pub(crate) poll_models: bool,
    /// How often `--poll-models` rescans the model repository, in milliseconds.
    #[arg(
        long,
        env = "FERROSERVE_POLL_MODELS_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(10..=3_600_000)
    )]
    pub(crate) poll_models_interval_ms: u64,
}

impl ModelArgs {
    /// How often to rescan, when polling.
    pub(crate) fn poll_period(&self) -> Option<Duration> {
        self.poll_models
            .then(|| Duration::from_millis(self.poll_models_interval_ms))
    }
}

/// The app file (when there is one) and the model repository (when there is one), and
/// what a rescan found wrong, logged once.
pub(crate) struct AppSource {
    file: Option<PathBuf>,
    models: Option<PathBuf>,
    base: AppConfig,
    repository: Option<ModelRepository>,
    /// The app last handed out to deploy.
    deployed: Option<AppSpec>,
    logged: Vec<String>,
}

impl AppSource {
    /// Reads the app file and the model repository (`models` over the file's `models:`).
    /// Neither is an error: there is no app.
    pub(crate) fn load(
        file: Option<PathBuf>,
        models: Option<PathBuf>,
        registry: &dyn RegisteredNames,
    ) -> Result<Self, ConfigError> {
        let (base, dir) = read(file.as_ref(), models.as_ref(), registry)?;
        let repository = dir.map(ModelRepository::open).transpose()?;
        Ok(Self {
            file,
            models,
            base,
            repository,
            deployed: None,
            logged: Vec::new(),
        })
    }

    /// Whether there is a model repository.
    pub(crate) fn has_repository(&self) -> bool {
        self.repository.is_some()
    }

    /// The app: the file's, with the repository's models; `None` with neither.
    pub(crate) fn app(&mut self) -> Result<Option<AppConfig>, ConfigError> {
        if self.file.is_none() && self.repository.is_none() {
            return Ok(None);
        }
        let app = match &self.repository {
            Some(repository) => self.base.with_models(repository)?,
            None => self.base.clone(),
        };
        self.deployed = Some(app.spec.clone());
        Ok(Some(app))
    }

    /// Reads the app file and the repository again, from scratch (SIGHUP); on an error
    /// nothing changes.
    pub(crate) fn reload(
        &mut self,
        registry: &dyn RegisteredNames,
    ) -> Result<Option<AppConfig>, ConfigError> {
        let (base, dir) = read(self.file.as_ref(), self.models.as_ref(), registry)?;
        let repository = dir.map(ModelRepository::open).transpose()?;
        let before = std::mem::replace(&mut self.base, base);
        let before_repository = std::mem::replace(&mut self.repository, repository);
        let app = self.app();
        if app.is_err() {
            self.base = before;
            self.repository = before_repository;
        }
        app
    }

    /// Rescans the model repository (`--poll-models`): the app to deploy when it differs
    /// from the last one handed out. What the rescan left as it was is logged once.
    pub(crate) fn rescan(&mut self) -> Option<AppConfig> {
        let notes = self.repository.as_mut()?.rescan();
        let mut now = Vec::new();
        for pending in notes.pending {
            if !self.logged.contains(&pending) {
                tracing::info!("model repository: {pending}");
            }
            now.push(pending);
        }
        for problem in notes.problems {
            if !self.logged.contains(&problem) {
                tracing::warn!("model repository: {problem}");
            }
            now.push(problem);
        }
        let deployed = self.deployed.clone();
        let app = match self.app() {
            Ok(app) => app,
            Err(e) => {
                let problem = format!("{e}; the app as it was serves");
                if !self.logged.contains(&problem) {
                    tracing::warn!("model repository: {problem}");
                }
                now.push(problem);
                self.deployed.clone_from(&deployed);
                None
            }
        };
        self.logged = now;
        app.filter(|app| deployed.as_ref() != Some(&app.spec))
    }
}

/// The app file without its models (an empty app without a file), and the repository
/// folder: `models`, else the file's `models:`.
fn read(
    file: Option<&PathBuf>,
    models: Option<&PathBuf>,
    registry: &dyn RegisteredNames,
) -> Result<(AppConfig, Option<PathBuf>), ConfigError> {
    let (base, from_file) = match file {
        Some(path) => AppConfig::load_without_models(path, registry)?,
        None => (
            AppConfig {
                file: models.map_or_else(String::new, |d| d.display().to_string()),
                http: ferroserve::HttpOptions::default(),
                spec: AppSpec::default(),
            },
            None,
        ),
    };
    Ok((base, models.cloned().or(from_file)))
}
