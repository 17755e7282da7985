//! The Open Inference Protocol's inference request and answer bodies: JSON tensors (flat or nested row-major `data`) and Triton's binary tensor extension (a JSON header of `Inference-Header-Content-Length` bytes, then each binary tensor's raw little-endian bytes).

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::element::Element;
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
    let (header, binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(format!(
                "Inference-Header-Content-Length is {n}, the body only {} bytes",
                body.len()
            ));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    match serde_json::from_slice::<Header<'_>>(header) {
        Ok(request) => read_request(request, binary, body.len(), declared),
        // Python's `json` (and so tritonclient) writes NaN and ±Infinity bare.
        Err(e) => {
            let quoted = quote_non_finite(header).ok_or_else(|| not_json(&e))?;
            let request =
                serde_json::from_slice::<Header<'_>>(&quoted).map_err(|_| not_json(&e))?;
            read_request(request, binary, body.len(), declared)
        }
    }
}

/// Why a body is refused as an inference request.
fn not_json(e: &serde_json::Error) -> String {
    if e.is_data() {
        format!("the body is not an inference request: {e}")
    } else {
        format!("the body is not JSON: {e}")
    }
}

/// An inference request's JSON, each input's `data` left unread until its datatype and
/// shape are known.
#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, borrow)]
    inputs: Option<Vec<Item<'a>>>,
    #[serde(default)]
    outputs: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// One item of `inputs`.
#[derive(serde::Deserialize)]
struct Item<'a> {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    datatype: Option<Value>,
    #[serde(default)]
    shape: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The request of a parsed header; `binary` holds the binary inputs, `budget` bounds shapes.
fn read_request(
    request: Header<'_>,
    mut binary: &[u8],
    budget: usize,
    declared: &[TensorSpec],
) -> Result<InferRequest, String> {
    let Some(items) = request.inputs else {
        return Err("the body has no `inputs` list".to_owned());
    };
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
    let outputs = match &request.outputs {
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
                    Ok((name.to_owned(), flag(o.get("parameters"), "binary_data")?))
                })
                .collect::<Result<Vec<_>, String>>()?,
        ),
        Some(_) => return Err("`outputs` must be a list".to_owned()),
    };
    Ok(InferRequest {
        id: request.id,
        inputs,
        outputs,
        binary_output: flag(request.parameters.as_ref(), "binary_data_output")?.unwrap_or(false),
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
fn flag(parameters: Option<&Value>, key: &str) -> Result<Option<bool>, String> {
    match parameters.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("parameter `{key}` must be true or false")),
    }
}

/// One `inputs` item; a binary one takes its bytes off the front of `binary`. Its shape
/// may claim no more elements than `budget` (see [`check_extent`]).
fn parse_input(item: &Item<'_>, binary: &mut &[u8], budget: usize) -> Result<Tensor, String> {
    let name = item
        .name
        .as_ref()
        .and_then(Value::as_str)
        .ok_or("an input has no `name`")?
        .to_owned();
    let within = |message: String| format!("input `{name}`: {message}");
    let datatype = item
        .datatype
        .as_ref()
        .and_then(Value::as_str)
        .ok_or_else(|| within("no `datatype`".to_owned()))?;
    let datatype = Datatype::parse(datatype).ok_or_else(|| {
        within(format!(
            "datatype `{datatype}` is not one of {}",
            Datatype::names()
        ))
    })?;
    let shape: Vec<i64> = item
        .shape
        .as_ref()
        .and_then(Value::as_array)
        .ok_or_else(|| within("no `shape` list".to_owned()))?
        .iter()
        .map(|d| d.as_i64().filter(|d| *d >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| within("`shape` must list whole numbers, none negative".to_owned()))?;
    check_extent(&shape, budget).map_err(within)?;
    let count = elements(&shape).ok_or_else(|| within("`shape` is too large".to_owned()))?;
    let binary_size = match item
        .parameters
        .as_ref()
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
                .data
                .ok_or_else(|| within("no `data` and no `binary_data_size`".to_owned()))?;
            by_datatype!(datatype, T => super::json_data::read::<T>(data, count))
                .map_err(|e| within(e.replace("the shape", &format!("shape {shape:?}"))))?
        }
    };
    Tensor::new(name.clone(), shape, data).map_err(|_| {
        within(format!(
            "shape holds {count} elements, the binary data another number"
        ))
    })
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
