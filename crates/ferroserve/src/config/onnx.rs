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
    /// The model file's size and modification time when a model repository took it
    /// (`1234 bytes, modified 1700000000.123456789`), `None` for a model named by its file.
    /// Not an app file key: part of the kind, so a `model.onnx` replaced in place (same
    /// path and version) replaces the replicas in a rolling update too, and every replica
    /// runs the file its backend was deployed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_stamp: Option<String>,
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
            file_stamp: None,
        }
    }

    /// Sets `version`.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets `file_stamp`.
    #[must_use]
    pub fn file_stamp(mut self, stamp: impl Into<String>) -> Self {
        self.file_stamp = Some(stamp.into());
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
        assert!(unversioned.get("file_stamp").is_none(), "{unversioned}");
    }

    #[test]
    fn a_file_replaced_in_place_is_a_new_kind() {
        let model = |stamp: &str| {
            BackendKind::Onnx(
                OnnxBackend::new("m/1/model.onnx")
                    .version("1")
                    .file_stamp(stamp),
            )
        };
        let before = model("10 bytes, modified 1.000000000");
        let after = model("10 bytes, modified 2.000000000");
        assert_ne!(before, after, "the controller rolls the replicas");
        let json = serde_json::to_value(&after).expect("serialises");
        assert_eq!(json["onnx"]["file_stamp"], "10 bytes, modified 2.000000000");
        let back: BackendKind = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, after, "a saved app deploys the same kind again");
    }
}
