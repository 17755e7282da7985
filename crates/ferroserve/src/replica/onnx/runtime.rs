//! Finding and loading ONNX Runtime's library once per process: the backend's `onnx_runtime_lib`, else `$ORT_DYLIB_PATH`, else the library of the `onnxruntime` Python package.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;

/// The loaded runtime, and the library it came from (the first load wins for the process).
static LOADED: Mutex<Option<(PathBuf, Arc<Environment>)>> = Mutex::new(None);

/// How to get the library, for every error that lacks it.
const HOW: &str = "set `onnx_runtime_lib` on the backend, or ORT_DYLIB_PATH, to a libonnxruntime.so, or `pip install onnxruntime` for the Python Ferroserve runs ($FERROSERVE_PYTHON, else python3 on PATH; Ferroserve then uses its onnxruntime/capi/libonnxruntime.so*)";

/// The ONNX Runtime environment, loading the library first if this process has not.
/// Blocking (it may ask `python3` where its `onnxruntime` package is).
pub(super) fn environment(configured: Option<&Path>) -> Result<Arc<Environment>, String> {
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((path, environment)) = &*loaded {
        if configured.is_some_and(|c| c != path) {
            tracing::warn!(
                "ONNX Runtime is already loaded from {}: one library per process, `onnx_runtime_lib` {} is not used",
                path.display(),
                configured
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
        }
        return Ok(environment.clone());
    }
    let (path, from) = locate(configured)?;
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load ONNX Runtime from {} ({from}): {}; {HOW}",
            path.display(),
            load_error(&e)
        )
    })?;
    let environment = builder
        .with_name("ferroserve")
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
    let environment = Arc::new(environment);
    tracing::info!("ONNX Runtime loaded from {} ({from})", path.display());
    *loaded = Some((path, environment.clone()));
    Ok(environment)
}

/// Where the library is, and what said so.
fn locate(configured: Option<&Path>) -> Result<(PathBuf, &'static str), String> {
    if let Some(path) = configured {
        return Ok((path.to_path_buf(), "onnx_runtime_lib"));
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(path), "ORT_DYLIB_PATH"));
    }
    python_package_library()
        .map(|path| (path, "the onnxruntime Python package"))
        .ok_or_else(|| format!("ONNX Runtime's library was not found: {HOW}"))
}

/// The newest `libonnxruntime.so*` of the `onnxruntime` package the server's Python has
/// (the wheels ship only a versioned name).
fn python_package_library() -> Option<PathBuf> {
    const WHERE: &str = "import importlib.util as u, os\n\
s = u.find_spec('onnxruntime')\n\
print(os.path.join(os.path.dirname(s.origin), 'capi') if s and s.origin else '')\n";
    let python = std::env::var("FERROSERVE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = std::process::Command::new(python)
        .args(["-c", WHERE])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if dir.is_empty() {
        return None;
    }
    let mut libraries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so."))
        })
        .collect();
    libraries.sort_by_key(|path| version_of(path));
    libraries.pop()
}

/// The numbers of a library's version suffix (`libonnxruntime.so.1.17.0`: 1, 17, 0), so
/// that 1.17 sorts after 1.9.
fn version_of(path: &std::path::Path) -> Vec<u64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so"))
        .unwrap_or_default()
        .split('.')
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The reason a load failed (the dlopen error is the cause of ort's, not in its text).
fn load_error(e: &ort::LoadDynamicError) -> String {
    use std::error::Error as _;
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => error
            .source()
            .map_or_else(|| error.to_string(), ToString::to_string),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_versions_sort_by_number() {
        let mut names = [
            "libonnxruntime.so.1.17.0",
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so",
        ]
        .map(std::path::PathBuf::from);
        names.sort_by_key(|p| super::version_of(p));
        assert_eq!(
            names[2],
            std::path::PathBuf::from("libonnxruntime.so.1.17.0")
        );
    }
}
