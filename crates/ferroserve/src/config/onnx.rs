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
        }
    }

    /// Checks the values; a message for the key `onnx` or `onnx_threads`.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.as_os_str().is_empty() {
            return Err("names no model file".to_owned());
        }
        super::limits::within(self.threads, 1, MAX_ONNX_THREADS)
    }
}
