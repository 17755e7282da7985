//! Python backends answer as a model server should: a body that is not JSON is a 400 with
//! the parser's message, plain `def` methods read the body, model outputs become JSON, and
//! an `HTTPException` answers with its status; and each worker's numerical libraries get
//! their share of the cores (`OMP_NUM_THREADS`).

mod common;

use std::path::PathBuf;

use ferroserve::{AppConfig, BackendConfig, BackendFactory, BackendKind, PythonBackend, Registry};
use http::Method;
use serde_json::json;

use common::{base_url, client, fetch_json, serve, serve_backend, status_and_text};

#[tokio::test]
async fn json_errors_sync_bodies_model_outputs_and_http_exceptions() {
    let serve = serve().await;
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    let model = BackendFactory::python(PythonBackend::new("conveniences:Model").working_dir(dir));
    serve_backend(
        &serve,
        "model",
        model,
        BackendConfig::default(),
        "/model",
        &[Method::POST],
    )
    .await;
    let url = format!("{}/model", base_url(&serve));
    let http = client();

    let answer = fetch_json(http.post(&url).body(r#"{"x": [1, 2, 3]}"#)).await;
    assert_eq!(answer, json!({"sum": 6, "day": "2026-11-28", "price": 1.5}));

    let (status, body) = status_and_text(http.post(&url).body("{not json")).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("the request body is not valid JSON: Expecting property name"),
        "{body}"
    );
    assert!(!body.contains("Traceback"), "{body}");

    let plain = http
        .post(&url)
        .header("X-SERVE-CALL-METHOD", "plain")
        .body(r#"[1, "a"]"#);
    assert_eq!(fetch_json(plain).await, json!({"echo": [1, "a"]}));

    let missing = http.post(&url).header("X-SERVE-CALL-METHOD", "missing");
    let (status, body) = status_and_text(missing).await;
    assert_eq!(status, 404);
    assert!(body.ends_with("no model named `nope`\n"), "{body}");
    serve.shutdown().await;
}

/// What `OMP_NUM_THREADS` a worker of `backend` sees, served with `config`.
async fn threads_seen(backend: PythonBackend, config: BackendConfig) -> String {
    let serve = serve().await;
    serve_backend(
        &serve,
        "threads",
        BackendFactory::python(backend),
        config,
        "/threads",
        &[Method::GET],
    )
    .await;
    let url = format!("{}/threads", base_url(&serve));
    let (status, body) = status_and_text(client().get(&url)).await;
    assert_eq!(status, 200, "{body}");
    serve.shutdown().await;
    body
}

#[tokio::test]
async fn numerical_libraries_get_a_share_of_the_cores_per_replica() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("threads.py"),
        "import os\n\nasync def threads(request):\n    return os.environ.get('OMP_NUM_THREADS', 'unset')\n",
    )
    .expect("the module is written");
    let backend = || PythonBackend::new("threads:threads").working_dir(dir.path());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    // Two replicas share the cores; `num_cpus` says how many a replica gets; the backend's
    // own `env` wins over both.
    let shared = threads_seen(backend(), BackendConfig::default().num_replicas(2)).await;
    assert_eq!(shared, (cores / 2).max(1).to_string());
    let one_cpu = BackendConfig {
        num_cpus: 1.0,
        ..BackendConfig::default()
    };
    assert_eq!(threads_seen(backend(), one_cpu).await, "1");
    let own = backend().env("OMP_NUM_THREADS", "3");
    assert_eq!(threads_seen(own, BackendConfig::default()).await, "3");
}

#[test]
fn the_docs_thread_example_parses_with_its_own_limit() {
    let yaml = common::doc_yaml("python.md", "## Threads of numerical libraries");
    let app = AppConfig::from_yaml(&yaml, "docs/python.md", &Registry::new())
        .expect("the example parses");
    let backend = &app.spec.backends[0];
    let BackendKind::Python(python) = &backend.kind else {
        panic!("a Python backend");
    };
    assert_eq!(python.env["OMP_NUM_THREADS"], "4");
    assert_eq!(backend.config.num_replicas, 2);
}
