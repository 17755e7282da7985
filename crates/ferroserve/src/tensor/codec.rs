//! The Open Inference Protocol's inference request and answer bodies: JSON tensors (flat or nested row-major `data`) and Triton's binary tensor extension (a JSON header of `Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian bytes).

use bytes::Bytes;
use half::f16;
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::Value;

use super::{Datatype, Tensor, TensorData, TensorSpec, by_datatype, check_extent, elements};

/// The header that says how long a binary request's or answer's JSON part is (Triton's
/// `Inference-Header-Content-Length`).
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// An inference request, its inputs checked against the model's.
#[derive(Debug)]
pub(crate) struct InferRequest {
    /// The request's `id`, echoed in the answer.
    pub(crate) id: Option<Value>,
    /// The inputs, in the order the model declares them.
    pub(crate) inputs: Vec<Tensor>,
    /// The outputs asked for (`None`: all), each with whether it goes back binary (`None`:
    /// as `binary_output` says).
    pub(crate) outputs: Option<Vec<(String, Option<bool>)>>,
    /// Whether outputs not asked for by name go back binary (`binary_data_output`).
    pub(crate) binary_output: bool,
}

impl InferRequest {
    /// Whether the output `name` goes back binary.
    pub(crate) fn binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .and_then(|(_, binary)| *binary)
            .unwrap_or(self.binary_output)
    }

    /// The outputs to answer with, of those the model made.
    pub(crate) fn select(&self, mut made: Vec<Tensor>) -> Vec<Tensor> {
        if let Some(asked) = &self.outputs {
            made.retain(|t| asked.iter().any(|(n, _)| *n == t.name));
        }
        made
    }
}

/// Parses an inference request body. `header_len` is the `Inference-Header-Content-Length`
/// of a binary request: the JSON is that many bytes, the binary tensors follow it. Each
/// input is checked against `declared`, and the error names the input.
pub(crate) fn parse_request(
    body: &[u8],
    header_len: Option<usize>,
    declared: &[TensorSpec],
) -> Result<InferRequest, String> {
    let (header, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(format!(
                "Inference-Header-Content-Length is {n}, the body only {} bytes",
                body.len()
            ));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let request: Value = match serde_json::from_slice(header) {
        Ok(request) => request,
        // Python's `json` (and so tritonclient) writes NaN and ±Infinity bare.
        Err(e) => quote_non_finite(header)
            .and_then(|quoted| serde_json::from_slice(&quoted).ok())
            .ok_or_else(|| format!("the body is not JSON: {e}"))?,
    };
    let Some(items) = request.get("inputs").and_then(Value::as_array) else {
        return Err("the body has no `inputs` list".to_owned());
    };
    let budget = body.len();
    let given = items
        .iter()
        .map(|item| parse_input(item, &mut binary, budget))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(format!(
            "{} bytes follow the binary inputs that no input's `binary_data_size` accounts for",
            binary.len()
        ));
    }
    let inputs = order_inputs(given, declared)?;
    let outputs = match request.get("outputs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(asked)) => Some(
            asked
                .iter()
                .map(|o| {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("an item of `outputs` has no `name`")?;
                    if o.get("parameters")
                        .and_then(|p| p.get("classification"))
                        .is_some()
                    {
                        return Err(format!(
                            "output `{name}`: the classification extension is not served"
                        ));
                    }
                    Ok((name.to_owned(), flag(o, "binary_data")?))
                })
                .collect::<Result<Vec<_>, String>>()?,
        ),
        Some(_) => return Err("`outputs` must be a list".to_owned()),
    };
    Ok(InferRequest {
        id: request.get("id").cloned(),
        inputs,
        outputs,
        binary_output: flag(&request, "binary_data_output")?.unwrap_or(false),
    })
}

/// `body` with the bare `NaN`, `Infinity` and `-Infinity` that Python's `json` writes
/// outside strings quoted, so that JSON can read them (and the float types take them);
/// `None` when there are none.
fn quote_non_finite(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut at = 0;
    while at < body.len() {
        let byte = body[at];
        if in_string {
            in_string = escaped || byte != b'"';
            escaped = !escaped && byte == b'\\';
        } else if byte == b'"' {
            in_string = true;
        } else if let Some(token) = [&b"NaN"[..], b"Infinity", b"-Infinity"]
            .into_iter()
            .find(|t| body[at..].starts_with(t))
        {
            out.push(b'"');
            out.extend_from_slice(token);
            out.push(b'"');
            at += token.len();
            changed = true;
            continue;
        }
        out.push(byte);
        at += 1;
    }
    changed.then_some(out)
}

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

/// The `given` inputs, each checked against the model's `declared` inputs, in the model's
/// order; the error names the input.
pub(crate) fn order_inputs(
    mut given: Vec<Tensor>,
    declared: &[TensorSpec],
) -> Result<Vec<Tensor>, String> {
    for (at, tensor) in given.iter().enumerate() {
        if elements(&tensor.shape) != Some(tensor.data.len()) {
            return Err(format!(
                "input `{}`: shape {:?} does not hold its {} elements",
                tensor.name,
                tensor.shape,
                tensor.data.len()
            ));
        }
        check_extent(&tensor.shape, tensor.data.len())
            .map_err(|e| format!("input `{}`: {e}", tensor.name))?;
        let Some(wanted) = declared.iter().find(|d| d.name == tensor.name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "input `{}`: the model has no such input (its inputs: {})",
                tensor.name,
                names.join(", ")
            ));
        };
        wanted.check(tensor)?;
        if given[..at].iter().any(|t| t.name == tensor.name) {
            return Err(format!("input `{}`: given twice", tensor.name));
        }
    }
    let mut inputs = Vec::with_capacity(declared.len());
    for wanted in declared {
        let Some(at) = given.iter().position(|t| t.name == wanted.name) else {
            return Err(format!("input `{}`: missing", wanted.name));
        };
        inputs.push(given.swap_remove(at));
    }
    Ok(inputs)
}

/// The boolean `parameters.<key>` of a request or tensor.
fn flag(item: &Value, key: &str) -> Result<Option<bool>, String> {
    match item.get("parameters").and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("parameter `{key}` must be true or false")),
    }
}

/// One `inputs` item; a binary one takes its bytes off the front of `binary`. Its shape
/// may claim no more elements than `budget` (see [`check_extent`]).
fn parse_input(item: &Value, binary: &mut &[u8], budget: usize) -> Result<Tensor, String> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or("an input has no `name`")?
        .to_owned();
    let within = |message: String| format!("input `{name}`: {message}");
    let datatype = item
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| within("no `datatype`".to_owned()))?;
    let datatype = Datatype::parse(datatype).ok_or_else(|| {
        within(format!(
            "datatype `{datatype}` is not one of {}",
            Datatype::names()
        ))
    })?;
    let shape: Vec<i64> = item
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| within("no `shape` list".to_owned()))?
        .iter()
        .map(|d| d.as_i64().filter(|d| *d >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| within("`shape` must list whole numbers, none negative".to_owned()))?;
    check_extent(&shape, budget).map_err(within)?;
    let count = elements(&shape).ok_or_else(|| within("`shape` is too large".to_owned()))?;
    let binary_size = match item
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"))
    {
        None | Some(Value::Null) => None,
        Some(size) => Some(
            size.as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| within("`binary_data_size` must be a whole number".to_owned()))?,
        ),
    };
    let data = match binary_size {
        Some(size) => {
            if size > binary.len() {
                return Err(within(format!(
                    "`binary_data_size` is {size}, only {} binary bytes are left",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            by_datatype!(datatype, T => <T as Element>::read_le(mine, count)).map_err(within)?
        }
        None => {
            let data = item
                .get("data")
                .ok_or_else(|| within("no `data` and no `binary_data_size`".to_owned()))?;
            let mut flat = Vec::with_capacity(count.min(1 << 20));
            flatten(data, &mut flat);
            if flat.len() != count {
                return Err(within(format!(
                    "shape {shape:?} holds {count} elements, `data` has {}",
                    flat.len()
                )));
            }
            by_datatype!(datatype, T => <T as Element>::read_json(&flat)).map_err(within)?
        }
    };
    Tensor::new(name.clone(), shape, data).map_err(|_| {
        within(format!(
            "shape holds {count} elements, the binary data another number"
        ))
    })
}

/// `data`, flat or nested, into `out`, row-major.
fn flatten<'a>(data: &'a Value, out: &mut Vec<&'a Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar),
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

    /// Every element of JSON `data`.
    fn read_json(values: &[&Value]) -> Result<TensorData, String> {
        values
            .iter()
            .map(|v| Self::one(v))
            .collect::<Option<Vec<_>>>()
            .map(Self::wrap)
            .ok_or_else(|| format!("`data` holds a value that is not {}", Self::WHAT))
    }
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

/// Writes an output as the answer carries it: its data inline, or its size when it
/// follows binary.
fn write_output(
    out: &mut Vec<u8>,
    tensor: &Tensor,
    binary_size: Option<usize>,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(br#"{"name":"#);
    serde_json::to_writer(&mut *out, &tensor.name)?;
    out.extend_from_slice(br#","datatype":""#);
    out.extend_from_slice(tensor.datatype().name().as_bytes());
    out.extend_from_slice(br#"","shape":"#);
    serde_json::to_writer(&mut *out, &tensor.shape)?;
    match binary_size {
        Some(size) => {
            out.extend_from_slice(br#","parameters":{"binary_data_size":"#);
            out.extend_from_slice(size.to_string().as_bytes());
            out.push(b'}');
        }
        None => {
            out.extend_from_slice(br#","data":"#);
            match &tensor.data {
                TensorData::Fp16(v) => write_floats(out, v.iter().map(|x| f64::from(x.to_f32())))?,
                TensorData::Fp32(v) => write_floats(out, v.iter().copied())?,
                TensorData::Fp64(v) => write_floats(out, v.iter().copied())?,
                other => serde_json::to_writer(&mut *out, other)?,
            }
        }
    }
    out.push(b'}');
    Ok(())
}

/// Floats as a JSON list; NaN and ±Infinity bare, as Python's `json` and Triton write them.
fn write_floats<T: Serialize + Into<f64> + Copy>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let wide: f64 = x.into();
        if wide.is_nan() {
            out.extend_from_slice(b"NaN");
        } else if wide.is_infinite() {
            out.extend_from_slice(if wide > 0.0 {
                b"Infinity"
            } else {
                b"-Infinity"
            });
        } else {
            serde_json::to_writer(&mut *out, &x)?;
        }
    }
    out.push(b']');
    Ok(())
}

/// An answer's body, and the length of its JSON header when binary outputs follow it
/// (its `Inference-Header-Content-Length`).
pub(crate) fn encode_answer(
    model_name: &str,
    model_version: &str,
    request: &InferRequest,
    outputs: &[Tensor],
) -> Result<(Vec<u8>, Option<usize>), String> {
    let blobs: Vec<Option<Vec<u8>>> = outputs
        .iter()
        .map(|t| request.binary(&t.name).then(|| t.data.to_le()))
        .collect();
    let mut answer = serde_json::Map::new();
    if let Some(id) = &request.id {
        answer.insert("id".to_owned(), id.clone());
    }
    answer.insert("model_name".to_owned(), Value::from(model_name));
    answer.insert("model_version".to_owned(), Value::from(model_version));
    let mut body = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
    // Splice `"outputs": [...]` in before the closing brace, serialized from the tensors
    // directly rather than through a `Value`.
    body.pop();
    body.extend_from_slice(br#","outputs":["#);
    for (i, (tensor, blob)) in outputs.iter().zip(&blobs).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_output(&mut body, tensor, blob.as_ref().map(Vec::len)).map_err(|e| e.to_string())?;
    }
    body.extend_from_slice(b"]}");
    let header_len = blobs.iter().any(Option::is_some).then_some(body.len());
    for blob in blobs.into_iter().flatten() {
        body.extend_from_slice(&blob);
    }
    Ok((body, header_len))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
