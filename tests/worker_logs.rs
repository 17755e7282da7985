//! What Python workers print is captured per replica: echoed to the server's stderr tagged
//! with the replica's id, and kept for `GET /api/replicas/ID/logs`, even after the worker
//! crashed. The real binary, a real `python3` worker.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{client, ferroserve_bin, get_json, spawn_listening, status_and_text, write_config};

/// Prints to stdout and stderr as it starts and on each call; `crash` prints its last
/// words and exits at once.
const NOISY: &str = r#"
import os
import sys


class Noisy:
    def __init__(self):
        print("hello from init")
        print("a warning at start", file=sys.stderr)

    def __call__(self, request):
        print("called")
        return "ok"

    def crash(self, request):
        print("last words")
        print("Traceback: it all went wrong", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
"#;

/// `id` percent-encoded for a path segment.
fn encoded(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ids of `backend`'s replicas in the status.
fn replica_ids(status: &Value, backend: &str) -> Vec<String> {
    status["backends"][backend]["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// (stream, line) of each line in a logs answer.
fn lines(answer: &Value) -> Vec<(String, String)> {
    answer["lines"]
        .as_array()
        .expect("a list of lines")
        .iter()
        .map(|l| {
            assert!(l["at_s"].as_f64().is_some_and(|t| t > 1e9), "{l}");
            (
                l["stream"].as_str().expect("stream").to_owned(),
                l["line"].as_str().expect("line").to_owned(),
            )
        })
        .collect()
}

fn pair(stream: &str, line: &str) -> (String, String) {
    (stream.to_owned(), line.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_output_is_kept_per_replica_even_after_a_crash() {
    let code = tempfile::tempdir().expect("temp dir");
    std::fs::write(code.path().join("noisy.py"), NOISY).expect("written");
    let yaml = format!(
        "backends:\n  noisy:\n    python: noisy:Noisy\n    working_dir: '{}'\n  echo: {{builtin: echo}}\nendpoints:\n  noisy: {{route: /noisy, backend: noisy}}\n",
        code.path().display()
    );
    let (dir, path) = write_config(&yaml);
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", path.to_str().expect("utf-8"), "--port", "0"],
        &[],
        Some(dir),
    );
    let http = client();
    let (status, text) = status_and_text(http.get(server.url("/noisy"))).await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "ok"));

    let app = get_json(&http, server.control_url("/api/status")).await;
    let first = replica_ids(&app, "noisy");
    assert_eq!(first.len(), 1, "{app}");
    let first = &first[0];
    let logs_of = |id: &str, query: &str| {
        server.control_url(&format!("/api/replicas/{}/logs{query}", encoded(id)))
    };
    let answer = get_json(&http, logs_of(first, "")).await;
    assert_eq!(answer["replica"], first.as_str());
    let seen = lines(&answer);
    assert_eq!(
        seen.iter()
            .filter(|(s, _)| s == "stdout")
            .collect::<Vec<_>>(),
        [
            &pair("stdout", "hello from init"),
            &pair("stdout", "called")
        ],
        "oldest first: {answer}"
    );
    assert!(
        seen.contains(&pair("stderr", "a warning at start")),
        "{answer}"
    );
    let answer = get_json(&http, logs_of(first, "?tail=1")).await;
    assert_eq!(lines(&answer), [pair("stdout", "called")], "{answer}");

    // A Rust replica captures nothing; an unknown one is a 404.
    let echo = replica_ids(&app, "echo");
    let answer = get_json(&http, logs_of(&echo[0], "")).await;
    assert_eq!(answer["lines"], serde_json::json!([]), "{answer}");
    let missing = http
        .get(logs_of("nobody#7", ""))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("nobody#7")),
        "{error}"
    );

    // The worker crashes; a new replica takes its place, and the dead one's lines stay.
    let crashed = http
        .get(server.url("/noisy"))
        .header("X-SERVE-CALL-METHOD", "crash")
        .send()
        .await
        .expect("answers");
    assert_eq!(crashed.status(), 502);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let app = get_json(&http, server.control_url("/api/status")).await;
        let now = replica_ids(&app, "noisy");
        if app["backends"]["noisy"]["status"] == "HEALTHY" && !now.contains(first) {
            break;
        }
        assert!(Instant::now() < deadline, "not replaced: {app}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = get_json(&http, logs_of(first, "?tail=3")).await;
    let seen = lines(&answer);
    assert!(
        seen.ends_with(&[pair("stdout", "last words")])
            || seen.ends_with(&[pair("stderr", "Traceback: it all went wrong")]),
        "{answer}"
    );
    assert!(seen.contains(&pair("stdout", "last words")), "{answer}");
    assert!(
        seen.contains(&pair("stderr", "Traceback: it all went wrong")),
        "{answer}"
    );

    // Users still see what their workers print, tagged with the replica.
    let stderr = server.stderr.lock().expect("lock").clone();
    for line in ["hello from init", "a warning at start", "last words"] {
        assert!(stderr.contains(&format!("[{first}] {line}\n")), "{stderr}");
    }
}
