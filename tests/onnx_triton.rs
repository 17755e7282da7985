//! Triton's own Python client (`tritonclient[http]`) against Ferroserve: conformance cases
//! from the `onnx` wheel (node cases with their own inputs and outputs, light_squeezenet),
//! the `onnxruntime` wheel's `logreg_iris.onnx`, a scikit-learn model through skl2onnx and
//! the tiny MLP, served with no code; health, metadata and inference in binary and JSON
//! modes, every output against the reference within float tolerance
//! (`tests/onnx/conformance.py`).
//!
//! Needs Python's onnx, onnxruntime, scikit-learn, skl2onnx and tritonclient[http]; without
//! them the test prints a SKIP line, unless `FERROSERVE_REQUIRE_ONNX=1` (CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::onnx::{python, python_has, run_script, script};
use common::{ferroserve_bin, spawn_listening, write_config};
use serde_json::Value;

/// An app file serving each case of `dir/cases.json` as a backend and an endpoint of its
/// name, batching the ones whose shapes allow it.
fn app_of_cases(dir: &Path) -> String {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("cases.json")).expect("cases.json written"),
    )
    .expect("cases.json is JSON");
    let mut backends = String::new();
    let mut endpoints = String::new();
    for case in &cases {
        let name = case["name"].as_str().expect("a name");
        let model = case["model"].as_str().expect("a model path");
        backends.push_str(&format!(
            "  {name}: {{onnx: {model}, max_batch_size: 8, batch_wait_timeout_ms: 2}}\n"
        ));
        endpoints.push_str(&format!(
            "  {name}: {{route: /{name}, methods: [POST], backend: {name}}}\n"
        ));
    }
    format!("backends:\n{backends}endpoints:\n{endpoints}")
}

#[test]
fn tritonclient_passes_the_conformance_cases_in_binary_and_json_modes() {
    if !python_has(
        "onnx, onnxruntime, sklearn, skl2onnx, tritonclient.http",
        "onnx onnxruntime scikit-learn skl2onnx tritonclient[http]",
    ) {
        return;
    }
    let (dir, _) = write_config("");
    run_script("conformance.py", &[Path::new("prepare"), dir.path()]);
    let yaml = app_of_cases(dir.path());
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, yaml).expect("app written");
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", path.to_str().expect("utf-8 path"), "--port", "0"],
        &[],
        Some(dir),
    );
    let url = server.url("");
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let out = Command::new(python())
        .arg(script("conformance.py"))
        .args(["check", &host])
        .arg(server.dir_path())
        .output()
        .expect("python runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("all 16 cases passed"), "{said}");
}
