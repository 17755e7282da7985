//! Each element type's JSON scalar and raw little-endian forms (`BYTES`: length-prefixed), and the JSON form of whole tensors.

use bytes::Bytes;
use half::f16;
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::Value;

use super::TensorData;

/// A JSON number, or one of the strings `NaN`, `Infinity`, `-Infinity`.
fn float(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        number => number.as_f64(),
    }
}

/// An element type's JSON and little-endian forms.
pub(crate) trait Element: Sized {
    /// What a JSON element must be, for messages.
    const WHAT: &'static str;
    /// One element of JSON `data`.
    fn one(value: &Value) -> Option<Self>;
    /// The element's raw bytes, appended to `out`.
    fn put(&self, out: &mut Vec<u8>);
    /// `count` elements of raw bytes.
    fn read_le(bytes: &[u8], count: usize) -> Result<TensorData, String>;
    /// The elements in their variant.
    fn wrap(items: Vec<Self>) -> TensorData;
}

/// `count` fixed-size elements of `bytes`.
fn fixed<T, const N: usize>(
    bytes: &[u8],
    count: usize,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if Some(bytes.len()) != count.checked_mul(N) {
        return Err(format!(
            "{count} elements of {N} bytes are {} bytes, the binary data has {}",
            count.saturating_mul(N),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut raw = [0u8; N];
            raw.copy_from_slice(chunk);
            decode(raw)
        })
        .collect())
}

macro_rules! number {
    ($($t:ty => $variant:ident, $what:literal, $one:expr;)*) => {$(
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn one(value: &Value) -> Option<Self> {
                ($one)(value)
            }
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8], count: usize) -> Result<TensorData, String> {
                fixed(bytes, count, <$t>::from_le_bytes).map(TensorData::$variant)
            }
            fn wrap(items: Vec<Self>) -> TensorData {
                TensorData::$variant(items)
            }
        }
    )*};
}

/// A JSON integer as `T`, if it fits.
fn integer<T: TryFrom<i64> + TryFrom<u64>>(value: &Value) -> Option<T> {
    match value.as_i64() {
        Some(i) => T::try_from(i).ok(),
        None => T::try_from(value.as_u64()?).ok(),
    }
}

/// A JSON number as the nearest `f32`.
#[allow(clippy::cast_possible_truncation)]
fn single(value: &Value) -> Option<f32> {
    float(value).map(|f| f as f32)
}

number! {
    u8 => Uint8, "an 8-bit unsigned integer", integer::<u8>;
    u16 => Uint16, "a 16-bit unsigned integer", integer::<u16>;
    u32 => Uint32, "a 32-bit unsigned integer", integer::<u32>;
    u64 => Uint64, "a 64-bit unsigned integer", integer::<u64>;
    i8 => Int8, "an 8-bit integer", integer::<i8>;
    i16 => Int16, "a 16-bit integer", integer::<i16>;
    i32 => Int32, "a 32-bit integer", integer::<i32>;
    i64 => Int64, "a 64-bit integer", integer::<i64>;
    f16 => Fp16, "a number", |v: &Value| float(v).map(f16::from_f64);
    f32 => Fp32, "a number", single;
    f64 => Fp64, "a number", float;
}

impl Element for bool {
    const WHAT: &'static str = "true or false";
    fn one(value: &Value) -> Option<Self> {
        value.as_bool()
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn read_le(bytes: &[u8], count: usize) -> Result<TensorData, String> {
        fixed(bytes, count, |[b]: [u8; 1]| b != 0).map(TensorData::Bool)
    }
    fn wrap(items: Vec<Self>) -> TensorData {
        TensorData::Bool(items)
    }
}

/// `BYTES`: a JSON string each; in binary, each a 4-byte little-endian length, then it.
impl Element for Bytes {
    const WHAT: &'static str = "a string";
    fn one(value: &Value) -> Option<Self> {
        value.as_str().map(|s| Bytes::copy_from_slice(s.as_bytes()))
    }
    fn put(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self);
    }
    fn read_le(mut bytes: &[u8], count: usize) -> Result<TensorData, String> {
        let mut items = Vec::with_capacity(count.min(bytes.len() / 4));
        while !bytes.is_empty() {
            let (len, rest) = bytes
                .split_first_chunk::<4>()
                .ok_or("a BYTES element's 4-byte length is cut short")?;
            let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
            if len > rest.len() {
                return Err("a BYTES element is longer than the binary data left".to_owned());
            }
            let (item, rest) = rest.split_at(len);
            items.push(Bytes::copy_from_slice(item));
            bytes = rest;
        }
        if items.len() != count {
            return Err(format!(
                "the shape holds {count} elements, the binary data has {}",
                items.len()
            ));
        }
        Ok(TensorData::Bytes(items))
    }
    fn wrap(items: Vec<Self>) -> TensorData {
        TensorData::Bytes(items)
    }
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bool(v) => s.collect_seq(v),
            Self::Uint8(v) => s.collect_seq(v),
            Self::Uint16(v) => s.collect_seq(v),
            Self::Uint32(v) => s.collect_seq(v),
            Self::Uint64(v) => s.collect_seq(v),
            Self::Int8(v) => s.collect_seq(v),
            Self::Int16(v) => s.collect_seq(v),
            Self::Int32(v) => s.collect_seq(v),
            Self::Int64(v) => s.collect_seq(v),
            Self::Fp16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            Self::Fp32(v) => s.collect_seq(v),
            Self::Fp64(v) => s.collect_seq(v),
            Self::Bytes(v) => s.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b))),
        }
    }
}

impl TensorData {
    /// Its elements' raw little-endian bytes (BYTES: each length-prefixed).
    pub(crate) fn to_le(&self) -> Vec<u8> {
        let mut out = Vec::new();
        super::each_data!(self, v => v.iter().for_each(|x| x.put(&mut out)));
        out
    }
}
