//! What reading one image-sized Open Inference Protocol request costs: a [1, 3, 224, 224] FP32
//! tensor, as the ONNX rows of the benchmark send it (about 1 MB of JSON, 4 decimals), read
//! three ways:
//!
//! - `Value`: into a `serde_json::Value` tree, flattened and converted to `f32` (what the
//!   ONNX backend of issue 13 does today; copied here, as the backend's parser is private);
//! - typed: straight into a `Vec<f32>` by a visitor, no tree;
//! - binary: the same tensor as Triton's binary extension sends it (602 kB of
//!   little-endian `f32`), converted to a `Vec<f32>`.
//!
//! `cargo bench -p ferroserve-bench --bench oip_json`

use std::fmt;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

const ELEMENTS: usize = 3 * 224 * 224;

/// The request body, values uniform in [0, 1) with 4 decimals (a fixed LCG).
fn body() -> Vec<u8> {
    let mut state: u64 = 13;
    let mut data = String::with_capacity(ELEMENTS * 7);
    for i in 0..ELEMENTS {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let v = (state >> 33) % 10_000;
        if i > 0 {
            data.push(',');
        }
        data.push_str(&format!(
            "{}",
            f64::from(u32::try_from(v).unwrap_or(0)) / 10_000.0
        ));
    }
    format!(
        r#"{{"inputs":[{{"name":"data_0","shape":[1,3,224,224],"datatype":"FP32","data":[{data}]}}]}}"#
    )
    .into_bytes()
}

fn flatten<'a>(data: &'a Value, out: &mut Vec<&'a Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar),
    }
}

/// The `Value` path: tree, flatten, convert.
#[allow(clippy::cast_possible_truncation)]
fn by_value(body: &[u8]) -> Vec<f32> {
    let request: Value = serde_json::from_slice(body).expect("JSON");
    let data = &request["inputs"][0]["data"];
    let mut flat = Vec::with_capacity(ELEMENTS);
    flatten(data, &mut flat);
    flat.iter()
        .map(|v| v.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .expect("numbers")
}

/// Numbers, flat or nested, appended to a `Vec<f32>`.
struct Floats<'a>(&'a mut Vec<f32>);

impl<'de> DeserializeSeed<'de> for Floats<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Floats<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, flat or nested")
    }
    #[allow(clippy::cast_possible_truncation)]
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Floats(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[derive(Deserialize)]
struct TypedRequest {
    inputs: Vec<TypedInput>,
}

#[derive(Deserialize)]
struct TypedInput {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    shape: Vec<u64>,
    #[allow(dead_code)]
    datatype: String,
    #[serde(deserialize_with = "floats")]
    data: Vec<f32>,
}

fn floats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let mut out = Vec::with_capacity(ELEMENTS);
    Floats(&mut out).deserialize(d)?;
    Ok(out)
}

/// The typed path: no tree.
fn typed(body: &[u8]) -> Vec<f32> {
    let mut request: TypedRequest = serde_json::from_slice(body).expect("JSON");
    request.inputs.swap_remove(0).data
}

fn read_request(c: &mut Criterion) {
    let body = body();
    assert_eq!(by_value(&body), typed(&body));
    let binary: Vec<u8> = typed(&body).iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut group = c.benchmark_group("OIP request, FP32 [1,3,224,224]");
    group.sample_size(20);
    group.bench_function("JSON into serde_json::Value, flattened", |b| {
        b.iter(|| by_value(black_box(&body)));
    });
    group.bench_function("JSON typed, straight into Vec<f32>", |b| {
        b.iter(|| typed(black_box(&body)));
    });
    group.bench_function("binary extension, bytes into Vec<f32>", |b| {
        b.iter(|| {
            black_box(&binary)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>()
        });
    });
    group.finish();
}

criterion_group!(benches, read_request);
criterion_main!(benches);
