//! The app `run` serves: its app file and its model repository (`--models`, `models:`), read again on SIGHUP and rescanned with `--poll-models`, and the deploys of them whose outcome is awaited (a failed one is tried again).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use ferroserve::{AppConfig, AppSpec, BackendKind, ConfigError, ModelRepository, RegisteredNames};

/// How long after a failed deploy it is first tried again (if nothing changed meanwhile).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a deploy that keeps failing: each try doubles it.
const LAST_RETRY: Duration = Duration::from_secs(300);

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
    /// changed, as a deploy does: a new version or model folder, or a `model.onnx` replaced
    /// in place, once its files are the same in two scans; a removed model folder taken
    /// away with its endpoint. A deploy that fails is tried again on later scans.
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

/// The app file (when there is one) and the model repository (when there is one), the
/// deploys of them handed out and how they went, and what a rescan found wrong, logged
/// once.
pub(crate) struct AppSource {
    file: Option<PathBuf>,
    models: Option<PathBuf>,
    base: AppConfig,
    repository: Option<ModelRepository>,
    /// The app last deployed in full; `None` after a deploy that failed (what of it did
    /// not fail runs).
    deployed: Option<AppSpec>,
    /// The deploy handed out last, while its outcome is not known.
    deploying: Option<Deploying>,
    /// How many deploys were handed out: the number of the last.
    handed: u64,
    /// The last deploy that failed, tried again later unless the app changes.
    failed: Option<Failed>,
    logged: Vec<String>,
    /// Whether the repository is rescanned (`--poll-models`), so a failed deploy is tried
    /// again.
    polling: bool,
}

/// A deploy to run, then to report with [`AppSource::finished`]: its number and the app.
pub(crate) struct Deploy {
    pub(crate) id: u64,
    pub(crate) app: AppConfig,
}

/// A deploy handed out and not finished.
struct Deploying {
    id: u64,
    spec: AppSpec,
    /// From a SIGHUP, else from a rescan.
    reload: bool,
}

/// A deploy that failed.
struct Failed {
    spec: AppSpec,
    /// When to try it again, and how long the wait was.
    retry_at: Instant,
    wait: Duration,
}

impl AppSource {
    /// Reads the app file and the model repository (`models` over the file's `models:`).
    /// Neither is an error: there is no app. `polling`: [`rescan`](Self::rescan) will be
    /// called.
    pub(crate) fn load(
        file: Option<PathBuf>,
        models: Option<PathBuf>,
        registry: &dyn RegisteredNames,
        polling: bool,
    ) -> Result<Self, ConfigError> {
        let (base, dir) = read(file.as_ref(), models.as_ref(), registry)?;
        let repository = dir.map(ModelRepository::open).transpose()?;
        let logged = skipped(repository.as_ref());
        Ok(Self {
            file,
            models,
            base,
            repository,
            deployed: None,
            deploying: None,
            handed: 0,
            failed: None,
            logged,
            polling,
        })
    }

    /// Whether there is a model repository.
    pub(crate) fn has_repository(&self) -> bool {
        self.repository.is_some()
    }

    /// The app to deploy at start, taken as deployed (the server stops if it fails): the
    /// file's, with the repository's models; `None` with neither.
    pub(crate) fn app(&mut self) -> Result<Option<AppConfig>, ConfigError> {
        let app = self.build()?;
        self.deployed = app.as_ref().map(|app| app.spec.clone());
        Ok(app)
    }

    /// The file's app with the repository's models; `None` with neither.
    fn build(&self) -> Result<Option<AppConfig>, ConfigError> {
        if self.file.is_none() && self.repository.is_none() {
            return Ok(None);
        }
        match &self.repository {
            Some(repository) => self.base.with_models(repository).map(Some),
            None => Ok(Some(self.base.clone())),
        }
    }

    /// Reads the app file and the repository again, from scratch (SIGHUP): the deploy to
    /// run. On an error nothing changes.
    pub(crate) fn reload(
        &mut self,
        registry: &dyn RegisteredNames,
    ) -> Result<Option<Deploy>, ConfigError> {
        let (base, dir) = read(self.file.as_ref(), self.models.as_ref(), registry)?;
        let repository = dir.map(ModelRepository::open).transpose()?;
        let before = std::mem::replace(&mut self.base, base);
        let before_repository = std::mem::replace(&mut self.repository, repository);
        match self.build() {
            Ok(app) => {
                self.logged = skipped(self.repository.as_ref());
                Ok(app.map(|app| self.hand_out(app, true)))
            }
            Err(e) => {
                self.base = before;
                self.repository = before_repository;
                Err(e)
            }
        }
    }

    /// Rescans the model repository (`--poll-models`): the deploy to run when the app
    /// differs from the one last deployed, none while one is under way, and a failed one
    /// again once its wait is over. What the rescan left as it was is logged once, each
    /// line saying which version of the model the server runs (`serving`: its app now).
    pub(crate) fn rescan(&mut self, serving: &AppSpec) -> Option<Deploy> {
        self.rescan_at(serving, Instant::now())
    }

    fn rescan_at(&mut self, serving: &AppSpec, now: Instant) -> Option<Deploy> {
        let notes = self
            .repository
            .as_mut()?
            .rescan(|name| version_of(serving, name));
        let mut lines = Vec::new();
        for pending in notes.pending {
            if !self.logged.contains(&pending) {
                tracing::info!("model repository: {pending}");
            }
            lines.push(pending);
        }
        for problem in notes.problems {
            if !self.logged.contains(&problem) {
                tracing::warn!("model repository: {problem}");
            }
            lines.push(problem);
        }
        let app = match self.build() {
            Ok(app) => app,
            Err(e) => {
                let problem = format!("{e}; the app as it was serves");
                if !self.logged.contains(&problem) {
                    tracing::warn!("model repository: {problem}");
                }
                lines.push(problem);
                None
            }
        };
        self.logged = lines;
        let app = app?;
        if self.deploying.is_some() || self.deployed.as_ref() == Some(&app.spec) {
            return None;
        }
        if let Some(failed) = &self.failed
            && failed.spec == app.spec
        {
            if now < failed.retry_at {
                return None;
            }
            tracing::debug!("model repository: trying the deploy that failed again");
        } else {
            tracing::info!("the model repository changed: deploying it");
        }
        Some(self.hand_out(app, false))
    }

    /// Notes `app` as being deployed: the deploy to run.
    fn hand_out(&mut self, app: AppConfig, reload: bool) -> Deploy {
        self.handed += 1;
        self.deploying = Some(Deploying {
            id: self.handed,
            spec: app.spec.clone(),
            reload,
        });
        Deploy {
            id: self.handed,
            app,
        }
    }

    /// The outcome of the deploy numbered `id` (an error: what [`ferroserve::Serve::deploy`]
    /// said), logged: a failure once, not again while the same app fails (its message may
    /// name another replica each time).
    /// The outcome of a deploy that a later one overtook is not the app's: it is ignored.
    pub(crate) fn finished(&mut self, id: u64, outcome: Result<(), String>) {
        self.finished_at(id, outcome, Instant::now());
    }

    /// [`finished`](Self::finished); the error line logged, if one was.
    fn finished_at(
        &mut self,
        id: u64,
        outcome: Result<(), String>,
        now: Instant,
    ) -> Option<String> {
        let deploying = self.deploying.take_if(|d| d.id == id)?;
        let error = match outcome {
            Ok(()) => {
                if deploying.reload {
                    tracing::info!(file = self.base.file, "app deployed");
                } else {
                    let models = served_versions(&deploying.spec);
                    tracing::info!("the model repository is deployed: {models}");
                }
                self.deployed = Some(deploying.spec);
                self.failed = None;
                return None;
            }
            Err(error) => error,
        };
        self.deployed = None;
        let again = self.failed.take().filter(|f| f.spec == deploying.spec);
        let wait = again
            .as_ref()
            .map_or(FIRST_RETRY, |f| (f.wait * 2).min(LAST_RETRY));
        let said = if again.is_some() {
            tracing::debug!("deploy failed again, tried again in {wait:?}: {error}");
            None
        } else {
            let retried = if self.polling {
                "; tried again on later rescans"
            } else {
                ""
            };
            let line =
                format!("deploy failed (what failed keeps what ran before{retried}): {error}");
            tracing::error!("{line}");
            Some(line)
        };
        self.failed = Some(Failed {
            spec: deploying.spec,
            retry_at: now + wait,
            wait,
        });
        said
    }
}

/// What [`ModelRepository::open`] skipped, as it warned: not logged again by a rescan.
fn skipped(repository: Option<&ModelRepository>) -> Vec<String> {
    repository.map_or_else(Vec::new, |r| r.skipped().to_vec())
}

/// The version of model `name` that `app` runs: its `onnx` backend's.
fn version_of(app: &AppSpec, name: &str) -> Option<String> {
    app.backends
        .iter()
        .find(|b| b.name == name)
        .and_then(|b| match &b.kind {
            BackendKind::Onnx(onnx) => onnx.version.clone(),
            _ => None,
        })
}

/// `iris (version 2), mlp (version 3)`: the models of a repository `app` serves.
fn served_versions(app: &AppSpec) -> String {
    let models: Vec<String> = app
        .backends
        .iter()
        .filter_map(|b| version_of(app, &b.name).map(|v| format!("{} (version {v})", b.name)))
        .collect();
    if models.is_empty() {
        "no model".to_owned()
    } else {
        models.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(root: &Path, path: &str, contents: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, contents).expect("written");
    }

    /// A polled repository of `iris/1`, its app deployed at start.
    fn source() -> (tempfile::TempDir, AppSource) {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "iris/1/model.onnx", "v1");
        let models = Some(dir.path().to_path_buf());
        let registry = ferroserve::Registry::new();
        let mut source = AppSource::load(None, models, &registry, true).expect("valid");
        assert!(source.app().expect("valid").is_some());
        (dir, source)
    }

    /// The `file_stamp` of backend `name` of `deploy`.
    fn stamp(deploy: &Deploy, name: &str) -> String {
        let backend = deploy.app.spec.backends.iter().find(|b| b.name == name);
        match backend.map(|b| &b.kind) {
            Some(BackendKind::Onnx(onnx)) => onnx.file_stamp.clone().expect("a stamp"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_deploy_is_tried_again_later_and_said_once() {
        let (dir, mut source) = source();
        let runs = AppSpec::default();
        let t0 = Instant::now();
        write(dir.path(), "late/1/model.onnx", "cut sh");
        assert!(source.rescan_at(&runs, t0).is_none(), "a new file waits");
        let first = source.rescan_at(&runs, t0).expect("settled: deployed");
        assert!(
            source.rescan_at(&runs, t0).is_none(),
            "one deploy at a time"
        );
        let said = source.finished_at(first.id, Err("cannot load".into()), t0);
        assert!(
            said.is_some_and(|l| l.starts_with("deploy failed (") && l.contains("rescans")),
            "the failure is said"
        );
        assert!(source.rescan_at(&runs, t0).is_none(), "it waits");
        let retry = t0 + FIRST_RETRY;
        let second = source.rescan_at(&runs, retry).expect("tried again");
        assert_eq!(second.app.spec, first.app.spec);
        let said = source.finished_at(second.id, Err("cannot load".into()), retry);
        assert_eq!(said, None, "the same failure is said once");
        assert!(
            source.rescan_at(&runs, retry + FIRST_RETRY).is_none(),
            "twice the wait"
        );
        let retry = retry + FIRST_RETRY * 2;
        let third = source.rescan_at(&runs, retry).expect("tried again");
        let said = source.finished_at(third.id, Err("replica 3: cannot load".into()), retry);
        assert_eq!(said, None, "the same app's failure is said once");
        let retry = retry + FIRST_RETRY * 4;
        let fourth = source.rescan_at(&runs, retry).expect("tried again");
        assert_eq!(source.finished_at(fourth.id, Ok(()), retry), None);
        let later = retry + LAST_RETRY;
        assert!(source.rescan_at(&runs, later).is_none(), "deployed: done");
    }

    #[test]
    fn a_model_file_replaced_in_place_is_deployed_again() {
        let (dir, mut source) = source();
        let runs = AppSpec::default();
        let t0 = Instant::now();
        assert!(source.rescan_at(&runs, t0).is_none(), "nothing changed");
        write(dir.path(), "iris/1/model.onnx", "v1, replaced");
        assert!(
            source.rescan_at(&runs, t0).is_none(),
            "it may be half written"
        );
        let replaced = source.rescan_at(&runs, t0).expect("settled: deployed");
        assert!(stamp(&replaced, "iris").starts_with("12 bytes"));
        source.finished_at(replaced.id, Err("cannot load".into()), t0);
        // Another file does not wait for the failed one's retry.
        write(dir.path(), "iris/1/model.onnx", "v1, fixed");
        assert!(
            source.rescan_at(&runs, t0).is_none(),
            "it may be half written"
        );
        let fixed = source
            .rescan_at(&runs, t0)
            .expect("another app: deployed at once");
        assert!(stamp(&fixed, "iris").starts_with("9 bytes"));
        // A deploy overtaken by a later one does not count.
        assert_eq!(source.finished_at(replaced.id, Ok(()), t0), None);
        assert!(
            source.rescan_at(&runs, t0 + LAST_RETRY).is_none(),
            "still deploying"
        );
        source.finished_at(fixed.id, Ok(()), t0);
        assert!(
            source.rescan_at(&runs, t0 + LAST_RETRY).is_none(),
            "deployed"
        );
    }
}
