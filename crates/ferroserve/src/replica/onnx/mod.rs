//! The ONNX kind: a model file served with no code, run in process by ONNX Runtime (`ort`, its library loaded at run time), one session per replica, answering Open Inference Protocol v2 JSON inference requests.
//!
//! By job: `runtime` (finding and loading the library, once per process), `session`
//! (tensors into and out of a run), `infer` (answering requests, one at a time or in
//! batches). A session runs on a blocking thread, so an inference never holds up the
//! server's I/O.

mod infer;
mod runtime;
mod session;

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde_json::json;

use crate::backend::Instantiate;
use crate::backend::{BackendFactory, Instance, ReplicaContext, ReplicaEnv, Slots};
use crate::config::{BackendConfig, OnnxBackend};
use crate::tensor::TensorSpec;

/// The method a model answers its Open Inference Protocol metadata with (its inputs and
/// outputs, their types and shapes; `GET /v2/models/NAME`).
pub(crate) const METADATA_METHOD: &str = "metadata";

impl BackendFactory {
    /// An ONNX model, run in process by ONNX Runtime, one session per replica; it answers
    /// Open Inference Protocol v2 JSON inference requests.
    ///
    /// ```
    /// use ferroserve::{BackendFactory, OnnxBackend};
    /// let factory = BackendFactory::onnx(OnnxBackend::new("models/mlp.onnx"));
    /// # let _ = factory;
    /// ```
    pub fn onnx(backend: OnnxBackend) -> Self {
        Self::of_kind(OnnxKind(backend))
    }
}

/// Makes ONNX replicas: loads the runtime (once) and opens a session on the model.
struct OnnxKind(OnnxBackend);

impl Instantiate for OnnxKind {
    fn instantiate<'a>(
        &'a self,
        ctx: &'a ReplicaContext,
        config: &'a BackendConfig,
        _env: &'a ReplicaEnv,
        _slots: &'a Arc<Slots>,
    ) -> BoxFuture<'a, Result<Instance, String>> {
        Box::pin(async move {
            self.0.validate()?;
            let (spec, name) = (self.0.clone(), ctx.backend.clone());
            let batch = config.max_batch_size.filter(|n| *n > 1);
            let model = tokio::task::spawn_blocking(move || Model::load(&spec, name, batch))
                .await
                .map_err(|e| format!("loading the model failed: {e}"))??;
            Ok(Instance {
                backend: Arc::new(model),
                configured: false,
            })
        })
    }

    fn check(&self) -> Result<(), String> {
        self.0.validate()?;
        if !self.0.model.is_file() {
            return Err(format!("`{}` is not a file", self.0.model.display()));
        }
        Ok(())
    }
}

/// One replica's model: its session and what it declares.
struct Model {
    /// The backend's name, the answers' `model_name`.
    name: String,
    /// The version the answers' `model_version` says.
    version: String,
    /// `run` takes the session mutably: one inference at a time per replica.
    session: Arc<Mutex<Session>>,
    inputs: Arc<[TensorSpec]>,
    /// The outputs the protocol can carry (a sequence or a map output is left out).
    outputs: Arc<[TensorSpec]>,
    /// The most requests one run stacks, when the model is batchable and the backend sets
    /// `max_batch_size`; `None`: one request per run.
    batch: Option<usize>,
}

impl Model {
    /// Opens `spec`'s model on `spec.threads` threads (blocking).
    fn load(spec: &OnnxBackend, name: String, batch: Option<usize>) -> Result<Self, String> {
        let environment = runtime::environment(spec.runtime_lib.as_deref())?;
        let session = open(&environment, &spec.model, spec.threads)
            .map_err(|e| format!("cannot load the model {}: {e}", spec.model.display()))?;
        let inputs: Arc<[TensorSpec]> = session
            .inputs()
            .iter()
            .map(|outlet| session::spec(outlet.name(), outlet.dtype()))
            .collect();
        if let Some(input) = inputs.iter().find(|i| i.datatype.is_none()) {
            return Err(format!(
                "the model {}: input `{}` is not a tensor of a type the Open Inference Protocol \
                 can carry",
                spec.model.display(),
                input.name
            ));
        }
        let (outputs, left_out): (Vec<TensorSpec>, Vec<TensorSpec>) = session
            .outputs()
            .iter()
            .map(|outlet| session::spec(outlet.name(), outlet.dtype()))
            .partition(|o| o.datatype.is_some());
        if !left_out.is_empty() {
            let names: Vec<&str> = left_out.iter().map(|o| o.name.as_str()).collect();
            tracing::warn!(
                "model {}: outputs {} are not tensors the Open Inference Protocol can carry \
                 (a sequence or a map); they are left out of the answers",
                spec.model.display(),
                names.join(", ")
            );
        }
        let batchable = inputs.iter().chain(&outputs).all(TensorSpec::batchable);
        Ok(Self {
            name,
            version: spec.version.clone().unwrap_or_else(|| "1".to_owned()),
            session: Arc::new(Mutex::new(session)),
            inputs,
            outputs: outputs.into(),
            batch: batch.filter(|_| batchable),
        })
    }

    /// Its Open Inference Protocol metadata: inputs and outputs with their types and
    /// shapes (-1 for a dynamic dimension).
    fn metadata(&self) -> serde_json::Value {
        let tensors = |declared: &[TensorSpec]| -> Vec<serde_json::Value> {
            declared
                .iter()
                .map(|d| {
                    json!({
                        "name": d.name,
                        "datatype": d.datatype.map_or("UNSUPPORTED", |t| t.name()),
                        "shape": d.shape,
                    })
                })
                .collect()
        };
        json!({
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": tensors(&self.inputs),
            "outputs": tensors(&self.outputs),
            "parameters": { "max_batch_size": self.batch.unwrap_or(0) },
        })
    }
}

/// A session on the model at `path`.
fn open(environment: &Environment, path: &Path, threads: usize) -> ort::Result<Session> {
    Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .commit_from_file(path)
}
