//! ONNX Runtime as the engine: a session on the model file, protocol tensors into `ort` values, the session run, and the declared outputs back into protocol tensors.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, ValueType};

use super::engine::Engine;
use super::runtime;
use crate::config::OnnxBackend;
use crate::tensor::{Datatype, Tensor, TensorData, TensorSpec};

/// A session on one model; `run` takes it mutably, so one inference at a time.
pub(super) struct OrtEngine {
    session: Mutex<Session>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

impl OrtEngine {
    /// Opens `spec`'s model on `spec.threads` threads, loading the runtime first if this
    /// process has not (blocking).
    pub(super) fn open(spec: &OnnxBackend) -> Result<Self, String> {
        let environment = runtime::environment(spec.runtime_lib.as_deref())?;
        let session = open(&environment, &spec.model, spec.threads)
            .map_err(|e| format!("cannot load the model {}: {e}", spec.model.display()))?;
        let inputs: Vec<TensorSpec> = session
            .inputs()
            .iter()
            .map(|outlet| self::spec(outlet.name(), outlet.dtype()))
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
            .map(|outlet| self::spec(outlet.name(), outlet.dtype()))
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
        Ok(Self {
            session: Mutex::new(session),
            inputs,
            outputs,
        })
    }
}

impl Engine for OrtEngine {
    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// ONNX string tensors hold UTF-8 text without NUL bytes.
    fn check(&self, inputs: &[Tensor]) -> Result<(), String> {
        for input in inputs {
            if let TensorData::Bytes(items) = &input.data
                && items
                    .iter()
                    .any(|b| b.contains(&0) || std::str::from_utf8(b).is_err())
            {
                return Err(format!(
                    "input `{}`: a BYTES element is not UTF-8 text without NUL bytes, which \
                     ONNX string tensors must be",
                    input.name
                ));
            }
        }
        Ok(())
    }

    fn run(&self, inputs: Vec<Tensor>, wanted: &dyn Fn() -> bool) -> Result<Vec<Tensor>, String> {
        run(&self.session, inputs, &self.outputs, wanted)
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
fn spec(name: &str, value: &ValueType) -> TensorSpec {
    let (datatype, shape) = match value {
        ValueType::Tensor { ty, shape, .. } => (datatype_of(*ty), shape.iter().copied().collect()),
        _ => (None, Vec::new()),
    };
    TensorSpec {
        name: name.to_owned(),
        datatype,
        shape,
    }
}

/// The protocol's datatype of an ONNX element type (`None`: one it cannot carry).
fn datatype_of(ty: TensorElementType) -> Option<Datatype> {
    Some(match ty {
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Float16 => Datatype::Fp16,
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        TensorElementType::String => Datatype::Bytes,
        _ => return None,
    })
}

/// One inference (blocking): `inputs` in, every one of `outputs` out, unless `wanted` says
/// no once the session is ours.
fn run(
    session: &Mutex<Session>,
    inputs: Vec<Tensor>,
    outputs: &[TensorSpec],
    wanted: &dyn Fn() -> bool,
) -> Result<Vec<Tensor>, String> {
    let values = inputs
        .into_iter()
        .map(value_of)
        .collect::<Result<Vec<(String, DynValue)>, String>>()?;
    let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
    if !wanted() {
        return Err("the caller has gone; the run was skipped".to_owned());
    }
    let results = session.run(values).map_err(|e| e.to_string())?;
    outputs
        .iter()
        .map(|o| {
            let value = results
                .get(&o.name)
                .ok_or_else(|| format!("output `{}` is missing from the run", o.name))?;
            let datatype = o.datatype.ok_or_else(|| {
                format!("output `{}` is not a tensor the protocol can carry", o.name)
            })?;
            let (shape, data) =
                tensor_of(value, datatype).map_err(|e| format!("output `{}`: {e}", o.name))?;
            Ok(Tensor {
                name: o.name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

/// An input as an `ort` value.
fn value_of(tensor: Tensor) -> Result<(String, DynValue), String> {
    let Tensor { name, shape, data } = tensor;
    let failed = |e: ort::Error| format!("input `{name}`: {e}");
    macro_rules! value {
        ($($variant:ident),*) => {
            match data {
                $(TensorData::$variant(v) => {
                    ort::value::Tensor::from_array((shape, v)).map_err(failed)?.into_dyn()
                })*
                TensorData::Bytes(v) => {
                    let strings = v
                        .into_iter()
                        .map(|b| String::from_utf8(b.to_vec()))
                        .collect::<Result<Vec<String>, _>>()
                        .map_err(|_| format!("input `{name}`: a BYTES element is not UTF-8, \
                                              which ONNX string tensors must be"))?;
                    ort::value::Tensor::from_string_array((shape, &*strings))
                        .map_err(failed)?
                        .into_dyn()
                }
            }
        };
    }
    let value = value!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64
    );
    Ok((name, value))
}

/// An output's shape and elements, read as `datatype`.
fn tensor_of(value: &DynValue, datatype: Datatype) -> ort::Result<(Vec<i64>, TensorData)> {
    macro_rules! read {
        ($($variant:ident => $t:ty),*) => {
            match datatype {
                $(Datatype::$variant => {
                    let (shape, data) = value.try_extract_tensor::<$t>()?;
                    (shape.to_vec(), TensorData::$variant(data.to_vec()))
                })*
                Datatype::Bytes => {
                    let (shape, strings) = value.try_extract_strings()?;
                    let shape = shape.to_vec();
                    (shape, TensorData::Bytes(strings.into_iter().map(Bytes::from).collect()))
                }
            }
        };
    }
    Ok(read!(
        Bool => bool, Uint8 => u8, Uint16 => u16, Uint32 => u32, Uint64 => u64,
        Int8 => i8, Int16 => i16, Int32 => i32, Int64 => i64,
        Fp16 => half::f16, Fp32 => f32, Fp64 => f64
    ))
}
