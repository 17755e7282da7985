//! The ONNX kind: a model file served with no code, run in process by ONNX Runtime (`ort`, its library loaded at run time), one session per replica, answering Open Inference Protocol v2 JSON inference requests.
//!
//! By job: `engine` (the small trait a model runs behind), `session` (ONNX Runtime as
//! that engine: tensors into and out of a session run), `runtime` (finding and loading the
//! library, once per process), `infer` (answering requests, one at a time or in batches).
//! A run happens on a blocking thread, so an inference never holds up the server's I/O.

mod engine;
mod infer;
mod runtime;
mod session;

use std::sync::Arc;

use futures_util::future::BoxFuture;
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
                backend: Arc::new(infer::Shared::new(model)),
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

/// One replica's model: its engine and what it declares.
struct Model {
    /// The backend's name, the answers' `model_name`.
    name: String,
    /// The version the answers' `model_version` says.
    version: String,
    /// Runs the model: one inference at a time per replica.
    engine: Box<dyn engine::Engine>,
    /// The most requests one run stacks, when the model is batchable and the backend sets
    /// `max_batch_size`; `None`: one request per run.
    batch: Option<usize>,
}

impl Model {
    /// Opens `spec`'s model (blocking).
    fn load(spec: &OnnxBackend, name: String, batch: Option<usize>) -> Result<Self, String> {
        let engine = session::OrtEngine::open(spec)?;
        let batchable = engine::batchable(&engine);
        Ok(Self {
            name,
            version: spec.version.clone().unwrap_or_else(|| "1".to_owned()),
            engine: Box::new(engine),
            batch: batch.filter(|_| batchable),
        })
    }

    /// The inputs the model declares.
    fn inputs(&self) -> &[TensorSpec] {
        self.engine.inputs()
    }

    /// The outputs the model declares that the protocol can carry.
    fn outputs(&self) -> &[TensorSpec] {
        self.engine.outputs()
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
            "platform": self.engine.platform(),
            "inputs": tensors(self.inputs()),
            "outputs": tensors(self.outputs()),
            "parameters": { "max_batch_size": self.batch.unwrap_or(0) },
        })
    }
}
