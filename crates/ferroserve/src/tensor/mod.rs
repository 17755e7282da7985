//! Tensors: named, shaped, typed arrays — the values of the Open Inference Protocol v2 — with their JSON and binary encodings (`codec`) and the joining of several requests' tensors into one batch and back (`batch`).
//!
//! A Rust handle can call an ONNX endpoint with tensors and get tensors back, in process,
//! with no encoding at all:
//!
//! ```
//! use ferroserve::tensor::{Tensor, TensorData};
//! let x = Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![0.5, 1.5])).expect("2 elements");
//! assert_eq!(x.datatype().name(), "FP32");
//! let y = Tensor::from_vec("y", vec![2], vec![7_i64, 8]).expect("2 elements");
//! assert_eq!(y.as_slice::<i64>(), Some(&[7, 8][..]));
//! ```
//!
//! With the `ndarray` feature, [`Tensor::from_array`] and [`Tensor::view`] go to and from
//! `ndarray` arrays.

pub(crate) mod batch;
pub(crate) mod codec;
pub(crate) mod element;
mod json_data;

use bytes::Bytes;
use half::f16;

/// An element type, by its Open Inference Protocol name (`FP32`, `INT64`, `BYTES`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: each element a byte string.
    Bytes,
}

impl Datatype {
    /// Every datatype, in the protocol's order.
    pub const ALL: [Datatype; 13] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bytes,
    ];

    /// The protocol's name of it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    /// The datatype of a protocol name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The names of every datatype, for messages.
    pub(crate) fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Bytes>),
}

/// `$body` with `$v` bound to the vector inside any variant of `$data`.
macro_rules! each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}
pub(crate) use each_data;

/// `$body` (a vector of the same element type) in the same variant as `$data`.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp16($v) => TensorData::Fp16($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}
pub(crate) use map_data;

/// `$body` with `$t` the element type of the datatype `$datatype`.
macro_rules! by_datatype {
    ($datatype:expr, $t:ident => $body:expr) => {
        match $datatype {
            Datatype::Bool => {
                type $t = bool;
                $body
            }
            Datatype::Uint8 => {
                type $t = u8;
                $body
            }
            Datatype::Uint16 => {
                type $t = u16;
                $body
            }
            Datatype::Uint32 => {
                type $t = u32;
                $body
            }
            Datatype::Uint64 => {
                type $t = u64;
                $body
            }
            Datatype::Int8 => {
                type $t = i8;
                $body
            }
            Datatype::Int16 => {
                type $t = i16;
                $body
            }
            Datatype::Int32 => {
                type $t = i32;
                $body
            }
            Datatype::Int64 => {
                type $t = i64;
                $body
            }
            Datatype::Fp16 => {
                type $t = half::f16;
                $body
            }
            Datatype::Fp32 => {
                type $t = f32;
                $body
            }
            Datatype::Fp64 => {
                type $t = f64;
                $body
            }
            Datatype::Bytes => {
                type $t = bytes::Bytes;
                $body
            }
        }
    };
}
pub(crate) use by_datatype;

impl TensorData {
    /// How many elements it holds.
    pub fn len(&self) -> usize {
        each_data!(self, v => v.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its element type.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Bool(_) => Datatype::Bool,
            Self::Uint8(_) => Datatype::Uint8,
            Self::Uint16(_) => Datatype::Uint16,
            Self::Uint32(_) => Datatype::Uint32,
            Self::Uint64(_) => Datatype::Uint64,
            Self::Int8(_) => Datatype::Int8,
            Self::Int16(_) => Datatype::Int16,
            Self::Int32(_) => Datatype::Int32,
            Self::Int64(_) => Datatype::Int64,
            Self::Fp16(_) => Datatype::Fp16,
            Self::Fp32(_) => Datatype::Fp32,
            Self::Fp64(_) => Datatype::Fp64,
            Self::Bytes(_) => Datatype::Bytes,
        }
    }
}

/// A Rust element type of a tensor: `bool`, `u8`–`u64`, `i8`–`i64`, `half::f16`, `f32`,
/// `f64`, or `bytes::Bytes` for `BYTES`.
pub trait TensorElement: Sized + 'static {
    /// The elements in their [`TensorData`] variant.
    fn into_data(items: Vec<Self>) -> TensorData;
    /// The elements of `data`, if they are of this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
}

macro_rules! element {
    ($($t:ty => $variant:ident),*) => {$(
        impl TensorElement for $t {
            fn into_data(items: Vec<Self>) -> TensorData {
                TensorData::$variant(items)
            }
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(items) => Some(items),
                    _ => None,
                }
            }
        }
    )*};
}

element!(
    bool => Bool, u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64, i8 => Int8,
    i16 => Int16, i32 => Int32, i64 => Int64, f16 => Fp16, f32 => Fp32, f64 => Fp64,
    Bytes => Bytes
);

/// One named tensor: an input or an output of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The input's or output's name.
    pub name: String,
    /// Its dimensions, row-major.
    pub shape: Vec<i64>,
    /// Its elements, as many as the shape holds.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor; an error when `data` does not hold as many elements as `shape` says.
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: TensorData) -> Result<Self, String> {
        let name = name.into();
        let elements = elements(&shape).ok_or_else(|| {
            format!("tensor `{name}`: shape {shape:?} has a negative or too large dimension")
        })?;
        if elements != data.len() {
            return Err(format!(
                "tensor `{name}`: shape {shape:?} holds {elements} elements, its data {}",
                data.len()
            ));
        }
        Ok(Self { name, shape, data })
    }

    /// A tensor of `items`; an error when they are not as many as `shape` holds.
    pub fn from_vec<T: TensorElement>(
        name: impl Into<String>,
        shape: Vec<i64>,
        items: Vec<T>,
    ) -> Result<Self, String> {
        Self::new(name, shape, T::into_data(items))
    }

    /// Its element type.
    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }

    /// Its elements, row-major, if they are `T`s.
    pub fn as_slice<T: TensorElement>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }
}

/// With the `ndarray` feature: tensors from and to `ndarray` arrays.
#[cfg(feature = "ndarray")]
impl Tensor {
    /// A tensor of an array's elements, in its logical (row-major) order.
    pub fn from_array<T: TensorElement + Clone, D: ndarray::Dimension>(
        name: impl Into<String>,
        array: &ndarray::Array<T, D>,
    ) -> Self {
        let shape = array
            .shape()
            .iter()
            .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
            .collect();
        Self {
            name: name.into(),
            shape,
            data: T::into_data(array.iter().cloned().collect()),
        }
    }

    /// A view of it as an array of `T`s; `None` when its elements are another type.
    pub fn view<T: TensorElement>(&self) -> Option<ndarray::ArrayViewD<'_, T>> {
        let shape: Vec<usize> = self
            .shape
            .iter()
            .map(|d| usize::try_from(*d).ok())
            .collect::<Option<_>>()?;
        ndarray::ArrayViewD::from_shape(shape, self.as_slice::<T>()?).ok()
    }
}

/// How many elements a shape holds; `None` for a negative dimension or an overflow.
pub(crate) fn elements(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
}

/// The least element budget [`check_extent`] allows, however small the request.
pub(crate) const MIN_EXTENT: usize = 4096;

/// Whether `shape` stays within `budget` elements, counting a zero dimension as one: a
/// tensor with no elements cannot claim dimensions larger than its request could fill, so
/// that a few bytes never ask a model for an output of gigabytes.
pub(crate) fn check_extent(shape: &[i64], budget: usize) -> Result<(), String> {
    let nominal = shape.iter().try_fold(1usize, |n, d| {
        let d = usize::try_from(*d).ok()?.max(1);
        n.checked_mul(d)
    });
    match nominal {
        Some(n) if n <= budget.max(MIN_EXTENT) => Ok(()),
        _ => Err(format!(
            "shape {shape:?} is larger than the request can fill (at most {} elements, \
             counting a zero dimension as one)",
            budget.max(MIN_EXTENT)
        )),
    }
}

/// A model's input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type; `None` for one the protocol cannot carry (a map, a sequence).
    pub datatype: Option<Datatype>,
    /// Its dimensions, `-1` for a dynamic one.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether `tensor` fits it: the same type, rank and fixed dimensions; the error names
    /// the tensor and what is wrong.
    pub fn check(&self, tensor: &Tensor) -> Result<(), String> {
        let name = &tensor.name;
        match self.datatype {
            Some(datatype) if datatype == tensor.datatype() => {}
            Some(datatype) => {
                return Err(format!(
                    "input `{name}`: the model takes {}, not {}",
                    datatype.name(),
                    tensor.datatype().name()
                ));
            }
            None => {
                return Err(format!(
                    "input `{name}`: its type is not a tensor the protocol can carry"
                ));
            }
        }
        let fits = tensor.shape.len() == self.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&self.shape)
                .all(|(given, declared)| *declared < 0 || given == declared);
        if fits {
            Ok(())
        } else {
            Err(format!(
                "input `{name}`: the model takes shape {:?} (-1: any), not {:?}",
                self.shape, tensor.shape
            ))
        }
    }

    /// Whether its first dimension is dynamic, so that tensors can be stacked along it.
    pub fn batchable(&self) -> bool {
        self.shape.first().is_some_and(|d| *d < 0)
    }
}
