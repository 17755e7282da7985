//! Helpers of the ONNX tests: the Python they run scripts of `tests/onnx` on, and whether the Python packages a test needs are there (a loud SKIP when not, a failure under `FERROSERVE_REQUIRE_ONNX=1`, as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

pub use super::python;

/// A script of `tests/onnx`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/onnx")
        .join(name)
}

/// Whether Python can import `modules` (`"onnx, onnxruntime"`); when not, says so loudly,
/// or fails when `FERROSERVE_REQUIRE_ONNX=1`. `install` is what to `pip install`.
pub fn python_has(modules: &str, install: &str) -> bool {
    let required = std::env::var("FERROSERVE_REQUIRE_ONNX").as_deref() == Ok("1");
    super::import_or_skip(
        modules,
        "an ONNX test",
        &format!("pip install {install}"),
        required.then_some("FERROSERVE_REQUIRE_ONNX=1"),
    )
}

/// Whether Python's `onnx` and `onnxruntime` are importable (see [`python_has`]).
pub fn onnx_ready() -> bool {
    python_has("onnx, onnxruntime", "onnx onnxruntime")
}

/// Runs a script of `tests/onnx` with `args`; its stdout.
pub fn run_script(name: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `ferroserve run` on `yaml` (as `app.yaml`, on port 0, with `envs`) in a temporary
/// directory that also holds the models of `make_models.py` and `files` (name, contents).
pub fn serve_with_models(
    yaml: &str,
    files: &[(&str, &str)],
    envs: &[(&str, &str)],
) -> super::Process {
    let (dir, path) = super::write_config(yaml);
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("file written");
    }
    run_script("make_models.py", &[dir.path()]);
    let path = path.to_str().expect("utf-8 path").to_owned();
    super::spawn_listening(
        &super::ferroserve_bin(),
        &["run", &path, "--port", "0"],
        envs,
        Some(dir),
    )
}
