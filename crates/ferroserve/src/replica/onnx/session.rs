//! One ONNX Runtime run: protocol tensors into `ort` values, the session run, and the declared outputs back into protocol tensors.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};

use crate::tensor::{Datatype, Tensor, TensorData, TensorSpec};

/// An input or output as the model declares it.
pub(super) fn spec(name: &str, value: &ValueType) -> TensorSpec {
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

/// One inference (blocking): `inputs` in, every one of `outputs` out.
pub(super) fn run(
    session: &Mutex<Session>,
    inputs: Vec<Tensor>,
    outputs: &[TensorSpec],
) -> Result<Vec<Tensor>, String> {
    let values = inputs
        .into_iter()
        .map(value_of)
        .collect::<Result<Vec<(String, DynValue)>, String>>()?;
    let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
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
