//! Tensors as the Open Inference Protocol v2 writes them in JSON (`name`, `shape`, `datatype`, flat or nested row-major `data`), checked against what a model declares.

use serde_json::{Value, json};

/// A model's input or output as the model declares it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Declared {
    pub(super) name: String,
    /// The OIP datatype (`FP32`, ...), `None` for a type this version does not serve.
    pub(super) datatype: Option<&'static str>,
    /// Its shape, `-1` for a dynamic dimension.
    pub(super) shape: Vec<i64>,
}

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// The elements as JSON numbers.
    fn to_json(&self) -> Value {
        match self {
            Self::F32(v) => json!(v),
            Self::F64(v) => json!(v),
            Self::I32(v) => json!(v),
            Self::I64(v) => json!(v),
        }
    }
}

/// One tensor of a request or an answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tensor {
    pub(super) name: String,
    pub(super) datatype: &'static str,
    pub(super) shape: Vec<i64>,
    pub(super) data: Data,
}

impl Tensor {
    /// As an answer's `outputs` item.
    pub(super) fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "datatype": self.datatype,
            "shape": self.shape,
            "data": self.data.to_json(),
        })
    }
}

/// The datatypes this version serves.
pub(super) const DATATYPES: [&str; 4] = ["FP32", "FP64", "INT32", "INT64"];

/// The inputs of an inference request body (`{"inputs": [...]}`), each checked against the
/// model's `declared` inputs, in the model's order; the error names the input.
pub(super) fn parse_request(body: &[u8], declared: &[Declared]) -> Result<Vec<Tensor>, String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(items) = request.get("inputs").and_then(Value::as_array) else {
        return Err("the body has no `inputs` list".to_owned());
    };
    let mut given = Vec::with_capacity(items.len());
    for item in items {
        let tensor = parse_input(item)?;
        let Some(wanted) = declared.iter().find(|d| d.name == tensor.name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "input `{}`: the model has no such input (its inputs: {})",
                tensor.name,
                names.join(", ")
            ));
        };
        check(&tensor, wanted)?;
        if given.iter().any(|t: &Tensor| t.name == tensor.name) {
            return Err(format!("input `{}`: given twice", tensor.name));
        }
        given.push(tensor);
    }
    let mut ordered = Vec::with_capacity(declared.len());
    for wanted in declared {
        let Some(at) = given.iter().position(|t| t.name == wanted.name) else {
            return Err(format!("input `{}`: missing", wanted.name));
        };
        ordered.push(given.swap_remove(at));
    }
    Ok(ordered)
}

/// One `inputs` item, its data the length its shape says.
fn parse_input(item: &Value) -> Result<Tensor, String> {
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
    let datatype = DATATYPES
        .iter()
        .copied()
        .find(|d| *d == datatype)
        .ok_or_else(|| {
            within(format!(
                "datatype `{datatype}` is not served yet (served: {})",
                DATATYPES.join(", ")
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
    let elements = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
        .ok_or_else(|| within("`shape` is too large".to_owned()))?;
    let mut flat = Vec::with_capacity(elements.min(1 << 20));
    flatten(
        item.get("data")
            .ok_or_else(|| within("no `data`".to_owned()))?,
        &mut flat,
    );
    if flat.len() != elements {
        return Err(within(format!(
            "shape {shape:?} holds {elements} elements, `data` has {}",
            flat.len()
        )));
    }
    let not_a = |kind: &str| within(format!("`data` holds a value that is not {kind}"));
    let data = match datatype {
        "FP32" => Data::F32(
            #[allow(clippy::cast_possible_truncation)]
            flat.iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| not_a("a number"))?,
        ),
        "FP64" => Data::F64(
            flat.iter()
                .map(|v| v.as_f64())
                .collect::<Option<_>>()
                .ok_or_else(|| not_a("a number"))?,
        ),
        "INT32" => Data::I32(
            flat.iter()
                .map(|v| v.as_i64().and_then(|i| i32::try_from(i).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| not_a("a 32-bit integer"))?,
        ),
        _ => Data::I64(
            flat.iter()
                .map(|v| v.as_i64())
                .collect::<Option<_>>()
                .ok_or_else(|| not_a("a 64-bit integer"))?,
        ),
    };
    Ok(Tensor {
        name,
        datatype,
        shape,
        data,
    })
}

/// `data`, flat or nested, into `out`, row-major.
fn flatten<'a>(data: &'a Value, out: &mut Vec<&'a Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar),
    }
}

/// Whether `tensor` fits the input the model declares.
fn check(tensor: &Tensor, wanted: &Declared) -> Result<(), String> {
    let name = &tensor.name;
    match wanted.datatype {
        Some(datatype) if datatype == tensor.datatype => {}
        Some(datatype) => {
            return Err(format!(
                "input `{name}`: the model takes {datatype}, not {}",
                tensor.datatype
            ));
        }
        None => return Err(format!("input `{name}`: its type is not served yet")),
    }
    let fits = tensor.shape.len() == wanted.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&wanted.shape)
            .all(|(given, declared)| *declared < 0 || given == declared);
    if !fits {
        return Err(format!(
            "input `{name}`: the model takes shape {} (-1: any), not {:?}",
            shape_text(&wanted.shape),
            tensor.shape
        ));
    }
    debug_assert_eq!(
        tensor.data.len(),
        tensor
            .shape
            .iter()
            .map(|d| usize::try_from(*d).unwrap_or(0))
            .product::<usize>()
    );
    Ok(())
}

/// `[-1, 16]`.
pub(super) fn shape_text(shape: &[i64]) -> String {
    format!("{shape:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Declared> {
        vec![Declared {
            name: "x".into(),
            datatype: Some("FP32"),
            shape: vec![-1, 2],
        }]
    }

    #[test]
    fn nested_and_flat_data_are_the_same() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let a = parse_request(flat, &declared()).expect("parses");
        assert_eq!(a, parse_request(nested, &declared()).expect("parses"));
        assert_eq!(a[0].data, Data::F32(vec![1.0, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn errors_name_the_input_and_what_is_wrong() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#,
                "input `x`: the model takes shape [-1, 2]",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT64","data":[1,2]}]}"#,
                "input `x`: the model takes FP32, not INT64",
            ),
            (
                r#"{"inputs":[{"name":"y","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "input `y`: the model has no such input",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1]}]}"#,
                "input `x`: shape [1, 2] holds 2 elements, `data` has 1",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,"a"]}]}"#,
                "input `x`: `data` holds a value that is not a number",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"BF16","data":[1,2]}]}"#,
                "input `x`: datatype `BF16` is not served yet",
            ),
            (r#"{"inputs":[]}"#, "input `x`: missing"),
            (
                r#"{"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"FP32","data":[]}]}"#,
                "input `x`: `shape` is too large",
            ),
            ("[1", "the body is not JSON"),
        ];
        for (body, said) in cases {
            let error = parse_request(body.as_bytes(), &declared()).expect_err(body);
            assert!(error.starts_with(said), "{body}: {error}");
        }
    }
}
