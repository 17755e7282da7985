//! The ONNX kind's data: a model file run in process by ONNX Runtime, where the runtime library is, and how many threads a replica's session may use.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An ONNX model served with no code: one ONNX Runtime session per replica, in process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxBackend {
    /// The `.onnx` file.
    pub model: PathBuf,
    /// `libonnxruntime.so`; default `$ORT_DYLIB_PATH`, else the library of the
    /// `onnxruntime` Python package (`pip install onnxruntime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_lib: Option<PathBuf>,
    /// Threads one replica's session runs an inference on (ONNX Runtime's intra-op
    /// threads): replicas × threads should fit the cores.
    #[serde(default = "one_thread")]
    pub threads: usize,
    /// The model's version: the version folder it was taken from in a model repository
    /// (`DIR/NAME/VERSION/model.onnx`), `None` for a model named by its file. Part of the
    /// kind, so a new version replaces the replicas in a rolling update, as a new file does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn one_thread() -> usize {
    1
}

/// The most threads a replica's session may use.
pub const MAX_ONNX_THREADS: usize = 256;

impl OnnxBackend {
    /// The model at `model`, on one thread per replica.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            runtime_lib: None,
            threads: 1,
            version: None,
        }
    }

    /// Sets `version`.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Checks the values; a message for the key `onnx` or `onnx_threads`.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.as_os_str().is_empty() {
            return Err("names no model file".to_owned());
        }
        super::limits::within(self.threads, 1, MAX_ONNX_THREADS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;

    #[test]
    fn a_new_version_is_a_new_kind() {
        // The controller rolls a backend's replicas when its kind differs.
        let one = BackendKind::Onnx(OnnxBackend::new("m/model.onnx").version("1"));
        let two = BackendKind::Onnx(OnnxBackend::new("m/model.onnx").version("2"));
        assert_ne!(one, two);
        let json = serde_json::to_value(&one).expect("serialises");
        assert_eq!(json["onnx"]["version"], "1");
        let back: BackendKind = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, one);
        let unversioned = serde_json::to_value(OnnxBackend::new("m.onnx")).expect("serialises");
        assert!(unversioned.get("version").is_none(), "{unversioned}");
    }
}
