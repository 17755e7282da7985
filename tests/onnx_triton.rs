//! Triton's own Python client (`tritonclient[http]`) against Ferroserve: conformance cases
//! from the `onnx` wheel (node cases with their own inputs and outputs, light_squeezenet),
//! the `onnxruntime` wheel's `logreg_iris.onnx`, a scikit-learn model through skl2onnx and
//! the tiny MLP, served as a model repository with no app file and no code; health, metadata and inference in binary and JSON
//! modes, every output against the reference within float tolerance
//! (`tests/onnx/conformance.py`).
//!
//! Needs Python's onnx, onnxruntime, scikit-learn, skl2onnx and tritonclient[http]; without
//! them the test prints a SKIP line, unless `FERROSERVE_REQUIRE_ONNX=1` (CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::onnx::{python, python_has, run_script, script};
use common::{ferroserve_bin, spawn_listening};

#[test]
fn tritonclient_passes_the_conformance_cases_in_binary_and_json_modes() {
    if !python_has(
        "onnx, onnxruntime, sklearn, skl2onnx, tritonclient.http",
        "onnx onnxruntime scikit-learn skl2onnx tritonclient[http]",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    run_script("conformance.py", &[Path::new("prepare"), dir.path()]);
    // A model repository, served with no app file and no code.
    let models = dir.path().join("models");
    let server = spawn_listening(
        &ferroserve_bin(),
        &[
            "run",
            "--models",
            models.to_str().expect("utf-8 path"),
            "--port",
            "0",
        ],
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
