//! The `onnx` backend kind on the real binary: models made by `tests/onnx/make_models.py`
//! (`onnx.helper` graphs) answer Open Inference Protocol v2 JSON requests with what Python
//! ONNX Runtime computes (`tests/onnx/reference.py`), malformed tensors are a 400 naming the
//! input, and a missing ONNX Runtime library is a clear start error.
//!
//! The models and the reference need Python's `onnx` and `onnxruntime` (the runtime library
//! Ferroserve loads is the one in that wheel). Without them the tests print a SKIP line,
//! unless `FERROSERVE_REQUIRE_ONNX=1` (CI) makes that a failure.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::onnx::{onnx_ready, python, run_script, serve_with_models};
use common::{Process, client, ferroserve_bin, write_config};
use http::StatusCode;
use serde_json::{Value, json};

/// The `libonnxruntime.so*` of the Python `onnxruntime` package.
fn runtime_lib() -> String {
    let find = "import glob, os, onnxruntime as o; \
                print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), \
                'capi', 'libonnxruntime.so*')))[0])";
    let out = Command::new(python())
        .args(["-c", find])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "no libonnxruntime.so in the wheel");
    String::from_utf8(out.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned()
}

/// `yaml` as `app.yaml` in a temporary directory that also holds `mlp.onnx` and
/// `mul_int64.onnx`.
fn app_with_models(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = write_config(yaml);
    run_script("make_models.py", &[dir.path()]);
    (dir, path)
}

/// `ferroserve run` on `yaml` beside the test models, with `envs`.
fn serve(yaml: &str, envs: &[(&str, &str)]) -> Process {
    serve_with_models(yaml, &[], envs)
}

/// Python ONNX Runtime's answer to `request` on the model `model` of `server`'s directory.
fn reference(server: &Process, model: &str, request: &Value) -> Value {
    let dir = server.dir_path();
    let inputs = dir.join(format!("{model}.inputs.json"));
    std::fs::write(&inputs, request.to_string()).expect("inputs written");
    let out = run_script(
        "reference.py",
        &[&dir.join(format!("{model}.onnx")), &inputs],
    );
    serde_json::from_str(&out).expect("reference.py prints JSON")
}

/// POSTs `body` to `route`; the status and the JSON answer.
async fn infer(server: &Process, route: &str, body: &Value) -> (StatusCode, Value) {
    let response = client()
        .post(server.url(route))
        .json(body)
        .send()
        .await
        .expect("answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{route} answered {status} with no JSON ({e}): {text}"));
    (status, value)
}

/// `count` deterministic floats in [-2, 2) (a linear congruential generator).
fn floats(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // The top 24 bits: exact in an f32.
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            unit * 4.0 - 2.0
        })
        .collect()
}

fn mlp_request(batch: usize, data: &[f32]) -> Value {
    json!({"inputs": [{"name": "x", "shape": [batch, 16], "datatype": "FP32", "data": data}]})
}

/// The numbers of `tensor["data"]`.
fn numbers(tensor: &Value) -> Vec<f64> {
    tensor["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {tensor}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("{x} is not a number")))
        .collect()
}

/// Ferroserve's answer `got` has the reference's outputs `want`: names, datatypes and shapes
/// equal, the data within `tolerance`.
fn assert_outputs_match(got: &Value, want: &Value, tolerance: f64) {
    let got = got["outputs"].as_array().expect("an outputs array");
    let want = want["outputs"].as_array().expect("reference outputs");
    assert_eq!(got.len(), want.len(), "outputs: {got:?}");
    for (got, want) in got.iter().zip(want) {
        for key in ["name", "datatype", "shape"] {
            assert_eq!(got[key], want[key], "{key} of output {}", want["name"]);
        }
        let (g, w) = (numbers(got), numbers(want));
        assert_eq!(g.len(), w.len(), "data length of {}", want["name"]);
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            assert!(
                (g - w).abs() <= tolerance,
                "output {}[{i}]: ferroserve {g}, onnxruntime {w}",
                want["name"]
            );
        }
    }
}

const MLP_APP: &str = "\
backends:
  mlp: {onnx: mlp.onnx, onnx_threads: 2}
endpoints:
  mlp: {route: /mlp, methods: [POST], backend: mlp}
";

/// The runtime library is found through the `onnxruntime` Python package (no key, no
/// `ORT_DYLIB_PATH` in CI); batches of 1 and 5 match onnxruntime within 1e-5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlp_matches_onnxruntime_at_batch_1_and_5() {
    if !onnx_ready() {
        return;
    }
    let server = serve(MLP_APP, &[]);
    for (batch, seed) in [(1, 1), (5, 2)] {
        let request = mlp_request(batch, &floats(batch * 16, seed));
        let (status, answer) = infer(&server, "/mlp", &request).await;
        assert_eq!(status, StatusCode::OK, "batch {batch}: {answer}");
        assert_eq!(answer["model_name"], "mlp", "{answer}");
        let outputs = &answer["outputs"];
        assert_eq!(outputs[0]["name"], "y", "{answer}");
        assert_eq!(outputs[0]["datatype"], "FP32", "{answer}");
        assert_eq!(outputs[0]["shape"], json!([batch, 4]), "{answer}");
        assert_outputs_match(&answer, &reference(&server, "mlp", &request), 1e-5);
    }
}

/// Integers survive exactly, beyond what an f64 holds (2^60 + 1); the runtime library
/// comes from `ORT_DYLIB_PATH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int64_model_answers_exactly() {
    if !onnx_ready() {
        return;
    }
    let app = "\
backends:
  mul: {onnx: mul_int64.onnx}
endpoints:
  mul: {route: /mul, methods: [POST], backend: mul}
";
    let lib = runtime_lib();
    let server = serve(app, &[("ORT_DYLIB_PATH", &lib)]);
    let big: i64 = (1 << 60) + 1;
    let a: [i64; 9] = [big, -big, 0, 1, -2, 3, i64::from(i32::MAX) + 7, -40, 12_345];
    let request =
        json!({"inputs": [{"name": "a", "shape": [3, 3], "datatype": "INT64", "data": a}]});
    let (status, answer) = infer(&server, "/mul", &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (scale, shift) = ([2, -3, 5], [7, 0, -1]);
    let expected: Vec<i64> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x * scale[i % 3] + shift[i % 3])
        .collect();
    let want =
        json!({"outputs": [{"name": "b", "datatype": "INT64", "shape": [3, 3], "data": expected}]});
    assert_eq!(answer["outputs"], want["outputs"], "{answer}");
    assert_eq!(
        reference(&server, "mul_int64", &request)["outputs"],
        want["outputs"],
        "the reference agrees"
    );
}

/// Whether `error` names the input `name` (quoted, or after the word "input").
fn names_input(error: &str, name: &str) -> bool {
    [
        format!("'{name}'"),
        format!("\"{name}\""),
        format!("`{name}`"),
        format!("input {name}"),
    ]
    .iter()
    .any(|form| error.contains(form.as_str()))
}

/// A malformed tensor is a 400 with `{"error": "..."}` naming the input; the model serves
/// on afterwards. The runtime library comes from the `onnx_runtime_lib` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tensors_are_a_400_naming_the_input() {
    if !onnx_ready() {
        return;
    }
    let app = format!(
        "\
backends:
  mlp: {{onnx: mlp.onnx, onnx_runtime_lib: '{lib}'}}
  mul: {{onnx: mul_int64.onnx, onnx_runtime_lib: '{lib}'}}
endpoints:
  mlp: {{route: /mlp, methods: [POST], backend: mlp}}
  mul: {{route: /mul, methods: [POST], backend: mul}}
",
        lib = runtime_lib()
    );
    let server = serve(&app, &[]);
    // (route, input, datatype, shape, how many values, what is wrong)
    let cases = [
        ("/mlp", "x", "FP32", json!([2, 15]), 30, "dimension 1"),
        ("/mlp", "x", "FP32", json!([32]), 32, "rank 1"),
        ("/mlp", "x", "FP32", json!([2, 1, 16]), 32, "rank 3"),
        ("/mlp", "x", "FP32", json!([2, 16]), 31, "short data"),
        ("/mlp", "x", "FP32", json!([1, 16]), 32, "long data"),
        ("/mlp", "x", "INT32", json!([2, 16]), 32, "datatype"),
        ("/mul", "a", "FP32", json!([1, 3]), 3, "FP32 for INT64"),
        ("/mul", "a", "INT64", json!([1, 4]), 4, "dimension 1"),
        ("/mlp", "nosuch", "FP32", json!([1, 16]), 16, "unknown"),
    ];
    for (route, input, datatype, shape, count, what) in cases {
        let data = if datatype.starts_with("INT") {
            json!((-3..).take(count).collect::<Vec<i64>>())
        } else {
            json!(floats(count, 3))
        };
        let tensor = json!({"name": input, "shape": shape, "datatype": datatype, "data": data});
        let body = json!({"inputs": [tensor]});
        let (status, answer) = infer(&server, route, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no \"error\" string in {answer}"));
        assert!(
            names_input(error, input),
            "{what}: the error names no input {input}: {error}"
        );
    }
    let request = mlp_request(2, &floats(32, 5));
    let (status, answer) = infer(&server, "/mlp", &request).await;
    assert_eq!(status, StatusCode::OK, "still serving: {answer}");
    assert_outputs_match(&answer, &reference(&server, "mlp", &request), 1e-5);
}

/// Runs `ferroserve run` on `yaml` beside the test models, changed by `configure`, which must
/// exit non-zero within 60 s without listening; its stderr.
fn start_fails(yaml: &str, configure: impl FnOnce(&mut Command, &Path)) -> String {
    let (dir, path) = app_with_models(yaml);
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(ferroserve_bin());
    command
        .args(["run", path.to_str().expect("utf-8 path"), "--port", "0"])
        .env("FERROSERVE_CONTROL_PORT", "0")
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"));
    configure(&mut command, dir.path());
    let mut child = command.spawn().expect("ferroserve runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferroserve did not exit within 60 s; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).expect("stdout read");
    let stderr = std::fs::read_to_string(&err).expect("stderr read");
    assert!(!status.success(), "the start must fail; stderr:\n{stderr}");
    assert!(
        !stdout.contains("listening"),
        "nothing must serve: {stdout}"
    );
    for needle in ["ONNX Runtime", "pip install onnxruntime"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    stderr
}

/// A runtime library that is not there: from the key, and found nowhere (no key, no
/// `ORT_DYLIB_PATH`, an interpreter without the `onnxruntime` package).
#[test]
fn a_missing_runtime_library_is_a_clear_start_error() {
    if !onnx_ready() {
        return;
    }
    start_fails(
        "\
backends:
  mlp: {onnx: mlp.onnx, onnx_runtime_lib: /nonexistent/libonnxruntime.so}
endpoints:
  mlp: {route: /mlp, methods: [POST], backend: mlp}
",
        |_, _| {},
    );
    start_fails(MLP_APP, |command, dir| {
        // The same interpreter without its site-packages, so without onnxruntime.
        let bare = dir.join("python-without-site");
        let text = format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", python());
        std::fs::write(&bare, text).expect("wrapper written");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755))
            .expect("wrapper is executable");
        command
            .env_remove("ORT_DYLIB_PATH")
            .env("FERROSERVE_PYTHON", bare);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_inference_protocol_routes_serve_each_endpoint_as_a_model() {
    if !onnx_ready() {
        return;
    }
    let server = serve(MLP_APP, &[]);
    let http = common::client();
    let get = |path: &str| {
        let (http, url) = (http.clone(), server.url(path));
        async move {
            let response = http.get(url).send().await.expect("answers");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, server_meta) = get("/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server_meta["name"], "ferroserve");
    assert_eq!(get("/v2/health/live").await.0, StatusCode::OK);
    assert_eq!(get("/v2/health/ready").await.0, StatusCode::OK);
    assert_eq!(get("/v2/models/mlp/ready").await.0, StatusCode::OK);
    for path in ["/v2/models/mlp", "/v2/models/mlp/versions/1"] {
        let (status, meta) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {meta}");
        assert_eq!(
            meta["inputs"],
            json!([{ "name": "x", "datatype": "FP32", "shape": [-1, 16] }])
        );
        assert_eq!(
            meta["outputs"],
            json!([{ "name": "y", "datatype": "FP32", "shape": [-1, 4] }])
        );
    }
    assert_eq!(
        get("/v2/models/mlp/versions/1/ready").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get("/v2/models/mlp/versions/2/ready").await,
        (
            StatusCode::BAD_REQUEST,
            json!({"name": "mlp", "ready": false})
        )
    );
    // A version the model does not serve is refused, by metadata and by inference.
    let (status, said) = get("/v2/models/mlp/versions/2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{said}");
    assert!(
        said["error"]
            .as_str()
            .is_some_and(|e| e.contains("no version `2`: it serves version 1")),
        "{said}"
    );
    let (status, said) = infer(
        &server,
        "/v2/models/mlp/versions/2/infer",
        &mlp_request(1, &floats(16, 5)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{said}");
    let (status, missing) = get("/v2/models/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope"))
    );
    // Inference by model name gives what the endpoint's route gives.
    let request = mlp_request(2, &floats(32, 3));
    let (status, by_name) = infer(&server, "/v2/models/mlp/infer", &request).await;
    assert_eq!(status, StatusCode::OK, "{by_name}");
    let (_, by_route) = infer(&server, "/mlp", &request).await;
    assert_eq!(by_name, by_route);
    let (status, bad) = infer(
        &server,
        "/v2/models/mlp/versions/1/infer",
        &mlp_request(1, &floats(15, 4)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    // The wrong method on a protocol route is a 405 that says the right one.
    let wrong = client()
        .get(server.url("/v2/models/mlp/infer"))
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "POST");
}
