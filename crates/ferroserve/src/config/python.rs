//! The Python kind's data: a class or function (`module:attr`) run in one worker process per replica, and how to start it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Python backend: a class or function (`module:attr`) that runs in one worker process
/// per replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonBackend {
    /// `module:attr`: a class (instantiated once per replica with `init_args`) or a function.
    pub target: String,
    /// Added to the import path, and the worker's working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// The interpreter; default `$FERROSERVE_PYTHON`, else `python3` on `PATH`.
    #[serde(default)]
    pub python_executable: Option<String>,
    /// Extra environment variables for the worker.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long a worker may take to import and start before it is killed and reported.
    #[serde(
        rename = "start_timeout_s",
        with = "seconds",
        default = "default_start_timeout"
    )]
    pub start_timeout: Duration,
    /// The class or function itself, pickled (cloudpickle) and base64-encoded: for one
    /// defined in a script or a notebook, which no module can import. `target` then only
    /// names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickled: Option<String>,
}

fn default_start_timeout() -> Duration {
    DEFAULT_START_TIMEOUT
}

/// A duration as a number of seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(duration.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(d)?;
        Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                serde::de::Error::custom(format!("{seconds} is not a positive number of seconds"))
            })
    }
}

/// Default time a Python worker may take to start.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

impl PythonBackend {
    /// The class or function `module:attr`, with the defaults.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            working_dir: None,
            python_executable: None,
            env: BTreeMap::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            pickled: None,
        }
    }

    /// Sets the directory the code lives in.
    #[must_use]
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the interpreter.
    #[must_use]
    pub fn python_executable(mut self, python: impl Into<String>) -> Self {
        self.python_executable = Some(python.into());
        self
    }

    /// Adds an environment variable for the worker.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the start timeout.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Checks the target's form (`module:attr`) and the start timeout's range.
    pub fn validate(&self) -> Result<(), String> {
        let (module, attr) = self.target.split_once(':').unwrap_or(("", ""));
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if !ident(module) || !ident(attr) {
            return Err(format!(
                "`{}` is not of the form module:attr (e.g. models:Classifier)",
                self.target
            ));
        }
        super::limits::duration(self.start_timeout).map_err(|m| format!("start_timeout_s {m}"))
    }
}

#[cfg(test)]
mod tests {
    use super::PythonBackend;

    #[test]
    fn targets_must_name_module_and_attribute() {
        assert!(PythonBackend::new("models:Classifier").validate().is_ok());
        assert!(
            PythonBackend::new("pkg.models:make_model")
                .validate()
                .is_ok()
        );
        assert!(PythonBackend::new("models").validate().is_err());
        assert!(PythonBackend::new("models:").validate().is_err());
        assert!(PythonBackend::new("mod els:X").validate().is_err());
    }
}
