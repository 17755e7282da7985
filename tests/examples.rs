//! The programs and app files in `examples/`, run as a user runs them.

mod common;

use common::{client, example_bin, spawn_listening};

#[tokio::test]
async fn the_embedded_example_serves_its_registered_backends() {
    let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/embedded.yaml");
    let server = spawn_listening(&example_bin("embedded"), &[yaml, "0"], &[], None);
    let http = client();
    let v: serde_json::Value = http
        .get(server.url("/counter"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(v, serde_json::json!({"current": 0}));
    let r = http
        .post(server.url("/counter"))
        .header("X-SERVE-CALL-METHOD", "other_method")
        .body("5")
        .send()
        .await
        .expect("request");
    assert_eq!(r.text().await.expect("body"), "true");
    let v: serde_json::Value = http
        .get(server.url("/counter"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(v, serde_json::json!({"current": 5}));
    let r = http
        .get(server.url("/greet?name=Ada"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.text().await.expect("body"), "Hello, Ada!\n");
    assert_eq!(server.terminate().code(), Some(0));
}
