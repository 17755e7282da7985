//! The Python worker runtime the binary carries (`python/ferroserve/`), written out once so that workers can `import ferroserve` with nothing installed.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::fnv::{fnv1a, fnv1a_from};

/// The package's files, compiled into the binary.
const FILES: [(&str, &str); 14] = [
    (
        "__init__.py",
        include_str!("../../../../../python/ferroserve/__init__.py"),
    ),
    (
        "_api.py",
        include_str!("../../../../../python/ferroserve/_api.py"),
    ),
    (
        "_codec.py",
        include_str!("../../../../../python/ferroserve/_codec.py"),
    ),
    (
        "_protocol.py",
        include_str!("../../../../../python/ferroserve/_protocol.py"),
    ),
    (
        "_request.py",
        include_str!("../../../../../python/ferroserve/_request.py"),
    ),
    (
        "_worker.py",
        include_str!("../../../../../python/ferroserve/_worker.py"),
    ),
    (
        "_handles.py",
        include_str!("../../../../../python/ferroserve/_handles.py"),
    ),
    (
        "_spin.py",
        include_str!("../../../../../python/ferroserve/_spin.py"),
    ),
    (
        "_stream.py",
        include_str!("../../../../../python/ferroserve/_stream.py"),
    ),
    (
        "_starlette.py",
        include_str!("../../../../../python/ferroserve/_starlette.py"),
    ),
    // The client API, for backends that drive another server.
    (
        "serve.py",
        include_str!("../../../../../python/ferroserve/serve.py"),
    ),
    (
        "_client_stream.py",
        include_str!("../../../../../python/ferroserve/_client_stream.py"),
    ),
    (
        "_middlewares.py",
        include_str!("../../../../../python/ferroserve/_middlewares.py"),
    ),
    // numpy arrays to and from models served over the Open Inference Protocol.
    (
        "_oip.py",
        include_str!("../../../../../python/ferroserve/_oip.py"),
    ),
];

/// A directory to put on `PYTHONPATH`: it holds the `ferroserve` package of this binary.
pub(crate) fn import_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(write_package).clone()
}

fn write_package() -> Result<PathBuf, String> {
    // One directory per version of the files, so binaries of different versions on one
    // machine never mix them; written atomically by renaming a fresh copy into place.
    let digest = FILES.iter().fold(fnv1a([]), |hash, (name, text)| {
        fnv1a_from(hash, name.bytes().chain(text.bytes()))
    });
    let root = std::env::temp_dir().join(format!("ferroserve-python-{digest:016x}"));
    if root.join("ferroserve").join("_worker.py").is_file() {
        return Ok(root);
    }
    let fresh = std::env::temp_dir().join(format!(
        "ferroserve-python-{digest:016x}.{}",
        std::process::id()
    ));
    let package = fresh.join("ferroserve");
    let fail = |e: std::io::Error| {
        format!(
            "cannot write the Python runtime to {}: {e}",
            package.display()
        )
    };
    std::fs::create_dir_all(&package).map_err(fail)?;
    for (name, text) in FILES {
        std::fs::write(package.join(name), text).map_err(fail)?;
    }
    if std::fs::rename(&fresh, &root).is_err() {
        // Another process won the race; its copy is the same.
        let _ = std::fs::remove_dir_all(&fresh);
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_package_is_written_once() {
        let dir = super::import_dir().expect("writable temp dir");
        assert!(dir.join("ferroserve/__init__.py").is_file());
        assert_eq!(super::import_dir().expect("again"), dir);
    }
}
