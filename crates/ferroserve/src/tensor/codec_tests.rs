//! Tests of the inference request and answer bodies, JSON and binary.

use super::*;
use bytes::Bytes;
use half::f16;

fn spec(name: &str, datatype: Datatype, shape: Vec<i64>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: Some(datatype),
        shape,
    }
}

fn declared() -> Vec<TensorSpec> {
    vec![spec("x", Datatype::Fp32, vec![-1, 2])]
}

#[test]
fn nested_and_flat_data_are_the_same() {
    let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let nested =
        br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
    let a = parse_request(flat, None, &declared()).expect("parses");
    let b = parse_request(nested, None, &declared()).expect("parses");
    assert_eq!(a.inputs, b.inputs);
    assert_eq!(a.inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
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
            "input `x`: datatype `BF16` is not one of BOOL",
        ),
        (r#"{"inputs":[]}"#, "input `x`: missing"),
        (
            r#"{"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"FP32","data":[]}]}"#,
            "input `x`: shape [9223372036854775807, 4] is larger than the request can fill",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32"}]}"#,
            "input `x`: no `data` and no `binary_data_size`",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[[1,2],[3]]}]}"#,
            "input `x`: shape [1, 2] holds 2 elements, `data` has more",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,{"a":2}]}]}"#,
            "input `x`: `data` holds a value that is not a number",
        ),
        (
            r#"{"inputs":{"name":"x"}}"#,
            "the body is not an inference request",
        ),
        ("[1", "the body is not JSON"),
    ];
    for (body, said) in cases {
        let error = parse_request(body.as_bytes(), None, &declared()).expect_err(body);
        assert!(error.starts_with(said), "{body}: {error}");
    }
}

#[test]
fn every_datatype_reads_from_json() {
    let cases = [
        (
            Datatype::Bool,
            "[true, false]",
            TensorData::Bool(vec![true, false]),
        ),
        (Datatype::Uint8, "[0, 255]", TensorData::Uint8(vec![0, 255])),
        (
            Datatype::Uint16,
            "[0, 65535]",
            TensorData::Uint16(vec![0, 65535]),
        ),
        (
            Datatype::Uint32,
            "[0, 4294967295]",
            TensorData::Uint32(vec![0, u32::MAX]),
        ),
        (
            Datatype::Uint64,
            "[0, 18446744073709551615]",
            TensorData::Uint64(vec![0, u64::MAX]),
        ),
        (
            Datatype::Int8,
            "[-128, 127]",
            TensorData::Int8(vec![-128, 127]),
        ),
        (Datatype::Int16, "[-2, 2]", TensorData::Int16(vec![-2, 2])),
        (Datatype::Int32, "[-2, 2]", TensorData::Int32(vec![-2, 2])),
        (Datatype::Int64, "[-2, 2]", TensorData::Int64(vec![-2, 2])),
        (
            Datatype::Fp16,
            "[0.5, -2]",
            TensorData::Fp16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]),
        ),
        (
            Datatype::Fp32,
            "[0.5, -2]",
            TensorData::Fp32(vec![0.5, -2.0]),
        ),
        (
            Datatype::Fp64,
            "[0.5, -2]",
            TensorData::Fp64(vec![0.5, -2.0]),
        ),
        (
            Datatype::Bytes,
            r#"["ab", ""]"#,
            TensorData::Bytes(vec![Bytes::from_static(b"ab"), Bytes::new()]),
        ),
    ];
    for (datatype, data, want) in cases {
        let name = datatype.name();
        let body = format!(
            r#"{{"inputs":[{{"name":"t","shape":[2],"datatype":"{name}","data":{data}}}]}}"#
        );
        let declared = [spec("t", datatype, vec![2])];
        let request = parse_request(body.as_bytes(), None, &declared).expect(name);
        assert_eq!(request.inputs[0].data, want, "{name}");
        // And back: the binary form reads to the same elements.
        let raw = want.to_le();
        let again = by_datatype!(datatype, T => <T as Element>::read_le(&raw, 2)).expect(name);
        assert_eq!(again, want, "{name} binary");
    }
    let out_of_range = br#"{"inputs":[{"name":"t","shape":[1],"datatype":"UINT8","data":[256]}]}"#;
    let error = parse_request(out_of_range, None, &[spec("t", Datatype::Uint8, vec![1])])
        .expect_err("256 is no u8");
    assert!(error.contains("not an 8-bit unsigned integer"), "{error}");
}

#[test]
fn binary_inputs_follow_the_json_header() {
    let header = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&1.5f32.to_le_bytes());
    body.extend_from_slice(&(-2.0f32).to_le_bytes());
    let request = parse_request(&body, Some(header.len()), &declared()).expect("parses");
    assert_eq!(request.inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
    assert!(request.binary("y"));
    assert!(!request.binary("z"));
    // An output asked for without its own `binary_data` follows `binary_data_output`.
    let json_only = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"y"}],"parameters":{"binary_data_output":true}}"#;
    assert!(
        parse_request(json_only, None, &declared())
            .expect("parses")
            .binary("y")
    );
    // Too few bytes, too many, a header longer than the body: each a clear error.
    let short = &body[..body.len() - 1];
    let error = parse_request(short, Some(header.len()), &declared()).expect_err("short");
    assert!(error.contains("`binary_data_size` is 8, only 7"), "{error}");
    let mut long = body.clone();
    long.push(0);
    let error = parse_request(&long, Some(header.len()), &declared()).expect_err("long");
    assert!(error.contains("1 bytes follow"), "{error}");
    let error = parse_request(&body, Some(body.len() + 1), &declared()).expect_err("header");
    assert!(error.contains("Inference-Header-Content-Length"), "{error}");
}

#[test]
fn bytes_elements_are_length_prefixed_and_checked() {
    let data = TensorData::Bytes(vec![Bytes::from_static(b"hi"), Bytes::from_static(b"")]);
    let raw = data.to_le();
    assert_eq!(raw, [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
    assert_eq!(Bytes::read_le(&raw, 2).expect("two"), data);
    assert!(Bytes::read_le(&raw[..5], 2).is_err());
    assert!(Bytes::read_le(&raw, 3).is_err());
}

#[test]
fn answers_are_json_or_a_header_and_binary_outputs() {
    let outputs = [
        Tensor::new("y", vec![1, 2], TensorData::Fp32(vec![0.25, 1.0])).expect("fits"),
        Tensor::new("k", vec![1], TensorData::Int64(vec![7])).expect("fits"),
    ];
    let body =
        br#"{"id":"r1","inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#;
    let request = parse_request(body, None, &declared()).expect("parses");
    let (json, header) = encode_answer("m", "3", &request, &outputs).expect("encodes");
    assert_eq!(header, None);
    let answer: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!({"id": "r1", "model_name": "m", "model_version": "3", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 1.0]},
            {"name": "k", "datatype": "INT64", "shape": [1], "data": [7]},
        ]})
    );
    let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"parameters":{"binary_data_output":true}}"#;
    let request = parse_request(body, None, &declared()).expect("parses");
    let (answer, header) = encode_answer("m", "1", &request, &outputs).expect("encodes");
    let header = header.expect("binary outputs");
    let json: Value = serde_json::from_slice(&answer[..header]).expect("JSON header");
    assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert!(json["outputs"][0].get("data").is_none());
    assert_eq!(&answer[header..header + 4], 0.25f32.to_le_bytes());
    assert_eq!(answer.len(), header + 16);
}

#[test]
fn asked_outputs_are_the_only_ones_answered() {
    let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"k"}]}"#;
    let request = parse_request(body, None, &declared()).expect("parses");
    let made = vec![
        Tensor::new("y", vec![1], TensorData::Fp32(vec![0.0])).expect("fits"),
        Tensor::new("k", vec![1], TensorData::Int64(vec![7])).expect("fits"),
    ];
    let kept = request.select(made);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].name, "k");
}

#[test]
fn nan_and_infinity_travel_as_python_writes_them() {
    let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[NaN,-Infinity]}],"id":"say \"NaN\""}"#;
    let request = parse_request(body, None, &declared()).expect("Python's NaN and -Infinity");
    let TensorData::Fp32(data) = &request.inputs[0].data else {
        panic!("FP32 data");
    };
    assert!(data[0].is_nan() && data[1] == f32::NEG_INFINITY);
    assert_eq!(request.id, Some(Value::from("say \"NaN\"")));
    let outputs = [Tensor::new(
        "y",
        vec![3],
        TensorData::Fp64(vec![f64::NAN, f64::INFINITY, 0.5]),
    )
    .expect("fits")];
    let (answer, _) = encode_answer("m", "1", &request, &outputs).expect("encodes");
    let text = String::from_utf8(answer).expect("UTF-8");
    assert!(text.contains(r#""data":[NaN,Infinity,0.5]"#), "{text}");
}

#[test]
fn an_empty_tensor_cannot_claim_huge_dimensions() {
    let body =
        br#"{"inputs":[{"name":"x","shape":[4611686018427387904,0],"datatype":"FP32","data":[]}]}"#;
    let declared = [spec("x", Datatype::Fp32, vec![-1, -1])];
    let error = parse_request(body, None, &declared).expect_err("a huge empty tensor");
    assert!(
        error.contains("larger than the request can fill"),
        "{error}"
    );
    // Small empty tensors and full ones are fine.
    let body = br#"{"inputs":[{"name":"x","shape":[0,16],"datatype":"FP32","data":[]}]}"#;
    parse_request(body, None, &declared).expect("an empty batch");
    // A handle's tensor is checked the same way, and its data against its shape.
    let lying = Tensor {
        name: "x".into(),
        shape: vec![1 << 40, 1 << 40],
        data: TensorData::Fp32(Vec::new()),
    };
    let error = order_inputs(vec![lying], &declared).expect_err("shape and data disagree");
    assert!(error.contains("does not hold its 0 elements"), "{error}");
}

#[test]
fn classification_is_refused_not_ignored() {
    let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"y","parameters":{"classification":3}}]}"#;
    let error = parse_request(body, None, &declared()).expect_err("classification");
    assert!(error.contains("classification extension"), "{error}");
}
