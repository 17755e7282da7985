//! The ONNX kind: a model file served with no code, run in process by ONNX Runtime (`ort`, its library loaded at run time), one session per replica, answering Open Inference Protocol v2 JSON inference requests.
//!
//! By job: `runtime` (finding and loading the library, once per process), `tensor` (the
//! protocol's JSON tensors, checked against the model). A session runs on a blocking
//! thread, so an inference never holds up the server's I/O.

mod runtime;
mod tensor;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use http::StatusCode;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, ValueType};
use serde_json::json;

use crate::backend::Instantiate;
use crate::backend::{Backend, BackendFactory, Instance, ReplicaContext, ReplicaEnv, Slots};
use crate::config::{BackendConfig, OnnxBackend};
use crate::error::BackendError;
use crate::request::Request;
use crate::response::Response;
use tensor::{Data, Declared, Tensor};

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
        _config: &'a BackendConfig,
        _env: &'a ReplicaEnv,
        _slots: &'a Arc<Slots>,
    ) -> BoxFuture<'a, Result<Instance, String>> {
        Box::pin(async move {
            self.0.validate()?;
            let (spec, name) = (self.0.clone(), ctx.backend.clone());
            let model = tokio::task::spawn_blocking(move || Model::load(&spec, name))
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
    /// `run` takes the session mutably: one inference at a time per replica.
    session: Arc<Mutex<Session>>,
    inputs: Arc<[Declared]>,
    outputs: Arc<[Declared]>,
}

impl Model {
    /// Opens `spec`'s model on `spec.threads` threads (blocking).
    fn load(spec: &OnnxBackend, name: String) -> Result<Self, String> {
        let environment = runtime::environment(spec.runtime_lib.as_deref())?;
        let session = open(&environment, &spec.model, spec.threads)
            .map_err(|e| format!("cannot load the model {}: {e}", spec.model.display()))?;
        let inputs: Arc<[Declared]> = session
            .inputs()
            .iter()
            .map(|outlet| declared(outlet.name(), outlet.dtype()))
            .collect();
        let outputs: Arc<[Declared]> = session
            .outputs()
            .iter()
            .map(|outlet| declared(outlet.name(), outlet.dtype()))
            .collect();
        Ok(Self {
            name,
            session: Arc::new(Mutex::new(session)),
            inputs,
            outputs,
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

/// An input or output as the model declares it.
fn declared(name: &str, value: &ValueType) -> Declared {
    let (datatype, shape) = match value {
        ValueType::Tensor { ty, shape, .. } => (datatype_of(*ty), shape.iter().copied().collect()),
        _ => (None, Vec::new()),
    };
    Declared {
        name: name.to_owned(),
        datatype,
        shape,
    }
}

/// The protocol's name of an element type this version serves.
fn datatype_of(ty: TensorElementType) -> Option<&'static str> {
    match ty {
        TensorElementType::Float32 => Some("FP32"),
        TensorElementType::Float64 => Some("FP64"),
        TensorElementType::Int32 => Some("INT32"),
        TensorElementType::Int64 => Some("INT64"),
        _ => None,
    }
}

impl Backend for Model {
    fn methods(&self) -> crate::backend::Methods {
        crate::backend::Methods::only([crate::request::DEFAULT_METHOD, METADATA_METHOD])
    }

    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        if req.method_name() == METADATA_METHOD {
            return Response::json(&self.metadata());
        }
        let body = req.body().map_err(|e| BackendError::msg(e.to_string()))?;
        let inputs = match tensor::parse_request(&body, &self.inputs) {
            Ok(inputs) => inputs,
            Err(why) => {
                return Ok(
                    Response::json(&json!({ "error": why }))?.with_status(StatusCode::BAD_REQUEST)
                );
            }
        };
        let (session, outputs) = (self.session.clone(), self.outputs.clone());
        let answered = tokio::task::spawn_blocking(move || run(&session, inputs, &outputs))
            .await
            .map_err(|e| BackendError::msg(format!("the inference failed: {e}")))?
            .map_err(BackendError::msg)?;
        let outputs: Vec<_> = answered.iter().map(Tensor::to_json).collect();
        Response::json(&json!({ "model_name": self.name, "outputs": outputs }))
    }
}

impl Model {
    /// Its Open Inference Protocol metadata: inputs and outputs with their types and
    /// shapes (-1 for a dynamic dimension).
    fn metadata(&self) -> serde_json::Value {
        let tensors = |declared: &[Declared]| -> Vec<serde_json::Value> {
            declared
                .iter()
                .map(|d| {
                    json!({
                        "name": d.name,
                        "datatype": d.datatype.unwrap_or("UNSUPPORTED"),
                        "shape": d.shape,
                    })
                })
                .collect()
        };
        json!({
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": tensors(&self.inputs),
            "outputs": tensors(&self.outputs),
        })
    }
}

/// One inference (blocking): `inputs` in, every declared output out.
fn run(
    session: &Mutex<Session>,
    inputs: Vec<Tensor>,
    outputs: &[Declared],
) -> Result<Vec<Tensor>, String> {
    let values = inputs
        .into_iter()
        .map(|t| {
            let value: DynValue = match t.data {
                Data::F32(d) => ort::value::Tensor::from_array((t.shape, d))?.into_dyn(),
                Data::F64(d) => ort::value::Tensor::from_array((t.shape, d))?.into_dyn(),
                Data::I32(d) => ort::value::Tensor::from_array((t.shape, d))?.into_dyn(),
                Data::I64(d) => ort::value::Tensor::from_array((t.shape, d))?.into_dyn(),
            };
            Ok((t.name, value))
        })
        .collect::<ort::Result<Vec<(String, DynValue)>>>()
        .map_err(|e| e.to_string())?;
    let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
    let results = session.run(values).map_err(|e| e.to_string())?;
    outputs
        .iter()
        .map(|o| {
            let value = results
                .get(&o.name)
                .ok_or_else(|| format!("output `{}` is missing from the run", o.name))?;
            let failed = |e: ort::Error| format!("output `{}`: {e}", o.name);
            let (datatype, shape, data) = match o.datatype {
                Some("FP32") => {
                    let (shape, data) = value.try_extract_tensor::<f32>().map_err(failed)?;
                    ("FP32", shape.to_vec(), Data::F32(data.to_vec()))
                }
                Some("FP64") => {
                    let (shape, data) = value.try_extract_tensor::<f64>().map_err(failed)?;
                    ("FP64", shape.to_vec(), Data::F64(data.to_vec()))
                }
                Some("INT32") => {
                    let (shape, data) = value.try_extract_tensor::<i32>().map_err(failed)?;
                    ("INT32", shape.to_vec(), Data::I32(data.to_vec()))
                }
                Some("INT64") => {
                    let (shape, data) = value.try_extract_tensor::<i64>().map_err(failed)?;
                    ("INT64", shape.to_vec(), Data::I64(data.to_vec()))
                }
                _ => {
                    return Err(format!(
                        "output `{}` is of a type this version does not serve (tensors of {})",
                        o.name,
                        tensor::DATATYPES.join(", ")
                    ));
                }
            };
            Ok(Tensor {
                name: o.name.clone(),
                datatype,
                shape,
                data,
            })
        })
        .collect()
}
