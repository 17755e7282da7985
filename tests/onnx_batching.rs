//! Dynamic batching of ONNX models and in-process tensor calls: concurrent requests to a
//! batchable model (every input and output with a dynamic first dimension) are stacked
//! along the first dimension into fewer runs, requests whose inner dimensions differ are
//! never stacked together, every caller gets exactly its own rows back; a Rust handle
//! calls an ONNX model with `Tensor`s made from `ndarray` arrays, no encoding; and a Python
//! backend calls it with numpy arrays (`handle.infer`).
//!
//! Needs Python's onnx and onnxruntime (the SKIP rules of `tests/common/onnx.rs`).

mod common;

use common::client;
use common::onnx::{onnx_ready, run_script, serve_with_models};
use ferroserve::tensor::{Tensor, TensorData};
use ferroserve::{Arg, BackendConfig, BackendFactory, OnnxBackend};
use http::StatusCode;
use serde_json::{Value, json};

/// `scale_any.onnx` (y = 2x + 1 on float [N, M]) behind `/scale`, batching up to 8
/// requests, each waiting up to 200 ms for the others.
const APP: &str = "\
backends:
  scale: {onnx: scale_any.onnx, max_batch_size: 8, batch_wait_timeout_ms: 200}
endpoints:
  scale: {route: /scale, methods: [POST], backend: scale}
";

/// One request's rows: `rows` × `width` values, distinct across requests.
fn values(request: usize, rows: usize, width: usize) -> Vec<f32> {
    (0..rows * width)
        .map(|i| f32::from(u16::try_from(request * 100 + i).expect("small")))
        .collect()
}

/// The `_sum` and `_count` of the batch size histogram of backend `scale`.
fn batch_sizes(metrics: &str) -> (f64, f64) {
    let read = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("deployment=\"scale\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        read("ray_serve_actual_batch_size_sum"),
        read("ray_serve_actual_batch_size_count"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_runs_but_never_mix_widths() {
    if !onnx_ready() {
        return;
    }
    let server = serve_with_models(APP, &[], &[]);
    let http = client();
    let meta: Value = http
        .get(server.url("/v2/models/scale"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(meta["parameters"]["max_batch_size"], 8, "{meta}");
    // 12 requests at once: widths 2 and 3, one or two rows each.
    let calls = (0..12).map(|n| {
        let (rows, width) = (1 + n % 2, 2 + (n / 2) % 2);
        let x = values(n, rows, width);
        let body = json!({"id": n.to_string(), "inputs": [
            {"name": "x", "shape": [rows, width], "datatype": "FP32", "data": x}
        ]});
        let (http, url) = (http.clone(), server.url("/v2/models/scale/infer"));
        async move {
            let response = http.post(url).json(&body).send().await.expect("answers");
            let status = response.status();
            let answer: Value = response.json().await.expect("JSON");
            (n, rows, width, x, status, answer)
        }
    });
    for (n, rows, width, x, status, answer) in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "request {n}: {answer}");
        assert_eq!(answer["id"], n.to_string(), "{answer}");
        let y = &answer["outputs"][0];
        assert_eq!(y["shape"], json!([rows, width]), "request {n}: {answer}");
        let want: Vec<f64> = x.iter().map(|v| f64::from(*v) * 2.0 + 1.0).collect();
        let got: Vec<f64> = y["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(got, want, "request {n} got another request's rows");
    }
    let metrics = http
        .get(server.control_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let (requests, batches) = batch_sizes(&metrics);
    assert_eq!(requests, 12.0, "every request went through the batch queue");
    assert!(
        batches < 12.0,
        "12 concurrent requests ran in {batches} batches: none were stacked"
    );
}

/// One request the model cannot run on (an index past its table), sent with good ones into
/// one batch, gets its own 400; the good ones get their answers. An empty tensor that
/// claims huge dimensions is refused before it reaches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_alone_in_its_batch() {
    if !onnx_ready() {
        return;
    }
    let app = "\
backends:
  lookup: {onnx: lookup.onnx, max_batch_size: 8, batch_wait_timeout_ms: 200}
endpoints:
  lookup: {route: /lookup, methods: [POST], backend: lookup}
";
    let server = serve_with_models(app, &[], &[]);
    let http = client();
    let calls = [3, 99, 7, 0].map(|id| {
        let body = json!({"inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [id]}]});
        let (http, url) = (http.clone(), server.url("/lookup"));
        async move {
            let response = http.post(url).json(&body).send().await.expect("answers");
            let status = response.status();
            (id, status, response.json::<Value>().await.expect("JSON"))
        }
    });
    for (id, status, answer) in futures_util::future::join_all(calls).await {
        if id == 99 {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("could not run on these inputs")),
                "{answer}"
            );
        } else {
            assert_eq!(status, StatusCode::OK, "id {id}: {answer}");
            let row = f64::from(u8::try_from(id).expect("small")) * 2.0;
            assert_eq!(
                answer["outputs"][0]["data"],
                json!([row, row + 1.0]),
                "id {id}"
            );
        }
    }
    let huge = json!({"inputs": [{"name": "ids", "shape": [4_611_686_018_427_387_904_i64, 0], "datatype": "INT64", "data": []}]});
    let response = http
        .post(server.url("/lookup"))
        .json(&huge)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let said: Value = response.json().await.expect("JSON");
    assert!(
        said["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than the request can fill")),
        "{said}"
    );
}

/// Callers that leave before their run starts cost no run: of 16 requests abandoned after
/// 30 ms, only those already running or answered use CPU, not all sixteen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_callers_that_left_are_skipped() {
    if !onnx_ready() {
        return;
    }
    let app = "\
backends:
  slow: {onnx: slow.onnx}
endpoints:
  slow: {route: /slow, methods: [POST], backend: slow}
";
    let server = serve_with_models(app, &[], &[]);
    let http = client();
    // Binary, so that reading a request costs next to nothing beside its run.
    let rows = 64;
    let header = json!({"inputs": [{"name": "x", "shape": [rows, 512], "datatype": "FP32",
        "parameters": {"binary_data_size": rows * 512 * 4}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0.5_f32.to_le_bytes(), rows * 512).flatten());
    let body = bytes::Bytes::from(body);
    let post = |timeout: Option<std::time::Duration>| {
        let request = http
            .post(server.url("/slow"))
            .header("inference-header-content-length", header.len())
            .body(body.clone());
        match timeout {
            Some(t) => request.timeout(t),
            None => request,
        }
    };
    let pid = server.child.id();
    // CPU time comes in ticks of 10 ms, about one request's cost: the minimum of single
    // requests rounded down to one tick (and failed CI once), so average over eight.
    let before = common::process::cpu_time(pid);
    for _ in 0..8 {
        let response = post(None).send().await.expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let one = common::process::cpu_time(pid).saturating_sub(before) / 8;
    let before = common::process::cpu_time(pid);
    // The first one or two may be answered in time; the rest leave while queued.
    let abandoned = (0..16).map(|_| post(Some(std::time::Duration::from_millis(30))).send());
    futures_util::future::join_all(abandoned).await;
    // Long enough for sixteen runs to finish, had they run.
    tokio::time::sleep(one * 16 + std::time::Duration::from_millis(500)).await;
    let spent = common::process::cpu_time(pid).saturating_sub(before);
    assert!(
        spent < one * 8,
        "one request costs {one:?} of CPU; 16 callers that left after 30 ms cost {spent:?}, \
         as if their runs had not been skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_handle_calls_a_model_with_tensors() {
    if !onnx_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    run_script("make_models.py", &[dir.path()]);
    let serve = common::serve().await;
    let model = OnnxBackend::new(dir.path().join("scale_any.onnx"));
    common::serve_backend(
        &serve,
        "scale",
        BackendFactory::onnx(model),
        BackendConfig::default(),
        None,
        &[],
    )
    .await;
    let handle = serve.get_handle("scale").expect("a handle");
    let x = ndarray::array![[0.0_f32, 1.0], [2.0, 3.0]];
    let answer = handle
        .remote(Arg::value(vec![Tensor::from_array("x", &x)]))
        .await
        .expect("answers");
    let outputs: Vec<Tensor> = answer.into_value().expect("tensors back, not bytes");
    assert_eq!(outputs[0].name, "y");
    let y = outputs[0].view::<f32>().expect("FP32 elements");
    assert_eq!(y, ndarray::array![[1.0_f32, 3.0], [5.0, 7.0]].into_dyn());
    assert_eq!(outputs[0].as_slice::<i64>(), None);
    // A wrong input is an answer saying so, not a failure of the call.
    let bad = Tensor::new("x", vec![1, 1], TensorData::Int64(vec![1])).expect("1 element");
    let refused = handle.remote(Arg::value(vec![bad])).await.expect("answers");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let said: Value = refused.body_json().expect("JSON error");
    assert!(
        said["error"]
            .as_str()
            .is_some_and(|e| e.contains("the model takes FP32, not INT64")),
        "{said}"
    );
    serve.shutdown().await;
}

/// A Python backend that calls the `scale` model with numpy arrays, from async and from
/// sync code, and answers what came back.
const CALLER: &str = r#"
import numpy as np
from ferroserve import ServeError, get_handle

async def twice(request):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = (await get_handle("scale").infer({"x": x}))["y"]
    assert isinstance(y, np.ndarray) and y.dtype == np.float32, type(y)
    return {"shape": list(y.shape), "y": y.ravel().tolist()}

def from_sync(request):
    y = get_handle("scale").infer({"x": np.ones((1, 2), dtype=np.float32)}, outputs=["y"]).result()
    try:
        get_handle("scale").infer({"x": np.ones((1, 2), dtype=np.int64)}).result()
    except ServeError as e:
        refused = str(e)
    return {"y": y["y"].tolist(), "refused": refused}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_backend_calls_a_model_with_numpy_arrays() {
    if !onnx_ready() || !common::onnx::python_has("numpy", "numpy") {
        return;
    }
    let app = "\
backends:
  scale: {onnx: scale_any.onnx, max_batch_size: 4, batch_wait_timeout_ms: 1}
  twice: {python: 'caller:twice', working_dir: .}
  sync: {python: 'caller:from_sync', working_dir: .}
endpoints:
  scale: {backend: scale}
  twice: {route: /twice, backend: twice}
  sync: {route: /sync, backend: sync}
";
    let server = serve_with_models(app, &[("caller.py", CALLER)], &[]);
    let http = client();
    let response = http
        .get(server.url("/twice"))
        .send()
        .await
        .expect("answers");
    let text = response.text().await.expect("text");
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(
        answer,
        json!({"shape": [2, 3], "y": [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]})
    );
    let sync: Value = http
        .get(server.url("/sync"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(sync["y"], json!([[3.0, 3.0]]), "{sync}");
    assert!(
        sync["refused"]
            .as_str()
            .is_some_and(|e| e.contains("the model takes FP32, not INT64")),
        "{sync}"
    );
}
