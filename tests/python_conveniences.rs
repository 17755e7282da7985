//! Python backends answer as a model server should: a body that is not JSON is a 400 with
//! the parser's message, plain `def` methods read the body, model outputs become JSON, and
//! an `HTTPException` answers with its status.

mod common;

use std::path::PathBuf;

use ferroserve::{BackendConfig, BackendFactory, PythonBackend};
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
