//! The Python quick start of `docs/python.md`, run as a user runs it: `examples/python/
//! quickstart/` copied to a fresh directory, a venv made there, `ferroserve run app.yaml`
//! from elsewhere, and the page's requests. The venv borrows this machine's numpy and
//! scikit-learn (`--system-site-packages`: the tests never reach PyPI), which
//! `tests/requirements.txt` pins.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{client, ferroserve_bin, spawn_listening, status_and_text};

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/quickstart")
}

/// The page shows the example's files as they are: its YAML whole, its Python line by line.
#[test]
fn the_page_shows_the_example_as_it_is() {
    let yaml = std::fs::read_to_string(quickstart().join("app.yaml")).expect("app.yaml");
    assert_eq!(common::doc_yaml("python.md", "## Quick start"), yaml);
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/python.md"))
            .expect("python.md");
    let model = std::fs::read_to_string(quickstart().join("model.py")).expect("model.py");
    let shown = page
        .split_once("## Quick start")
        .and_then(|(_, rest)| rest.split("```python\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("a python block in the quick start");
    for line in shown
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "...")
    {
        assert!(model.contains(line), "model.py has no line {line:?}");
    }
}

#[tokio::test]
async fn the_quick_start_serves_a_scikit_learn_model_from_its_venv() {
    if !common::python_dep("numpy, sklearn", "the Python quick start") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    for file in ["app.yaml", "model.py"] {
        std::fs::copy(quickstart().join(file), dir.path().join(file)).expect("copy");
    }
    let app = dir.path().join("app.yaml");
    let app = app.to_str().expect("UTF-8 path");

    // No venv yet: refused, naming the interpreter (relative to the file, not to here).
    let refused = Command::new(ferroserve_bin())
        .args(["run", app, "--port", "0", "--control-port", "0"])
        .output()
        .expect("ferroserve runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let venv_python = dir.path().join(".venv/bin/python");
    assert!(
        stderr.contains(&format!(
            "cannot run the Python interpreter `{}`",
            venv_python.display()
        )),
        "{stderr}"
    );

    let made = Command::new(common::python())
        .args(["-m", "venv", "--system-site-packages"])
        .arg(dir.path().join(".venv"))
        .output()
        .expect("python3 -m venv runs");
    assert!(made.status.success(), "{made:?}");
    let server = spawn_listening(&ferroserve_bin(), &["run", app, "--port", "0"], &[], None);
    let http = client();
    let (status, text) = status_and_text(
        http.post(server.url("/iris"))
            .body(r#"{"features": [5.9, 3.0, 5.1, 1.8]}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text,
        r#"{"class": "virginica", "probabilities": {"setosa": 0.0, "versicolor": 0.235, "virginica": 0.764}}"#
    );
    let (status, text) = status_and_text(
        http.post(server.url("/iris"))
            .body(r#"{"features": [1, 2]}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("backend `iris` (replica `iris#")
            && text
                .trim_end()
                .ends_with(r#"failed: send {"features": [four numbers]}"#),
        "{text}"
    );
    assert_eq!(server.terminate().code(), Some(0));
}
