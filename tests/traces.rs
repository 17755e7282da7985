//! Traces and the access log on the real binary: a W3C `traceparent` reaches the backend
//! and every handle call made from it, through Python workers, and `--access-log json`
//! writes one line per request saying which backend and replica served it.

mod common;

use std::time::{Duration, Instant};

use common::{client, spawn_cli_with};
use serde_json::Value;

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const MODULE: &str = r#"
from ferroserve import get_handle

async def front(request):
    # A Python backend behind HTTP calls another Python backend by handle...
    return await get_handle("middle").remote("from front")

def middle(arg):
    # ... which calls a Rust one from a worker thread (a sync method).
    return get_handle("echo").remote("from middle").result()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_follows_handle_calls_and_the_access_log_names_the_replica() {
    let app = "\
backends:
  front: {python: 'tracer:front', working_dir: .}
  middle: {python: 'tracer:middle', working_dir: .}
  echo: {builtin: echo}
endpoints:
  front: {route: /front, backend: front}
  middle: {backend: middle}
  echo: {route: /echo, backend: echo}
";
    let server = spawn_cli_with(app, &[("tracer.py", MODULE)], &["--access-log", "json"]);
    let http = client();

    // Straight to a Rust backend: it sees the header.
    let direct: Value = http
        .get(server.url("/echo"))
        .header("traceparent", TRACE)
        .header("x-request-id", "req-42")
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(direct["traceparent"], TRACE, "{direct:#}");

    // Through two Python backends and two handle calls.
    let response = http
        .get(server.url("/front"))
        .header("traceparent", TRACE)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let chained: Value = response.json().await.expect("JSON");
    assert_eq!(chained["traceparent"], TRACE, "{chained:#}");
    assert_eq!(chained["body"], "from middle");

    // Without one, none is made up.
    let plain: Value = http
        .get(server.url("/front"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert!(plain["traceparent"].is_null(), "{plain:#}");

    // The access log: one JSON line per HTTP request (handle calls are not HTTP).
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let printed = server.stdout.lock().expect("lock").clone();
        let lines: Vec<Value> = printed
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("latency_ms").is_some())
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["path"], "/echo");
    assert_eq!(first["endpoint"], "echo");
    assert_eq!(first["backend"], "echo");
    assert_eq!(first["replica"], "echo#1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "req-42");
    assert_eq!(first["traceparent"], TRACE);
    assert!(first["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert_eq!(lines[1]["backend"], "front");
    assert!(lines[2]["traceparent"].is_null());
}
