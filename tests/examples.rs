//! The programs and app files in `examples/`, run as a user runs them: every FAQ answer has
//! one, and each must run to the end and show what it promises.

mod common;

use std::process::Command;

use common::{
    client, cors_preflight, example_bin, fetch_text, get_json, spawn_example_app, spawn_listening,
};

/// Runs an example with `--port 0` to the end; returns its output.
fn run_example(name: &str) -> String {
    let output = Command::new(example_bin(name))
        .args(["--port", "0"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every program in `examples/` (as `cargo run --example NAME` builds it).
const PROGRAMS: [&str; 8] = [
    "async_concurrency",
    "batching",
    "custom_status",
    "embedded",
    "handles",
    "request_mirroring",
    "stateful_processor",
    "traffic",
];

/// Every example takes its port from `FERROSERVE_PORT` as from `--port` (the flag wins), as
/// the binary does; a port in use is named in words, not as an error's fields.
#[test]
fn examples_take_the_port_from_the_environment_and_say_when_it_is_taken() {
    let mut found: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
            .expect("examples/")
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(str::to_owned)
            })
            .collect();
    found.sort();
    assert_eq!(found, PROGRAMS, "a new example: add it to PROGRAMS");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port().to_string();
    for name in PROGRAMS {
        let output = Command::new(example_bin(name))
            .env("FERROSERVE_PORT", &port)
            .output()
            .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} served on a taken port");
        assert!(
            stderr.contains(&format!(
                "cannot listen on 127.0.0.1:{port}: port {port} is already in use"
            )) && !stderr.contains("CannotListen"),
            "{name}: {stderr}"
        );
    }
    // The flag over the variable; the variable alone.
    let output = Command::new(example_bin("traffic"))
        .args(["--port", "0"])
        .env("FERROSERVE_PORT", &port)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let output = Command::new(example_bin("traffic"))
        .env("FERROSERVE_PORT", "0")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    // A port that is not one: clap's error, exit 2.
    let output = Command::new(example_bin("traffic"))
        .args(["--port", "eighty"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid value 'eighty' for '--port"),
        "{output:?}"
    );
}

fn assert_lines(name: &str, output: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            output.contains(line),
            "example {name}: expected `{line}` in:\n{output}"
        );
    }
}

#[test]
fn stateful_processor_calls_other_method_by_header_and_handle() {
    let out = run_example("stateful_processor");
    assert_lines(
        "stateful_processor",
        &out,
        &[
            "X-SERVE-CALL-METHOD: other_method, 5 -> true",
            "remote(10) -> true",
        ],
    );
    // Calls one after another mostly stay on the replica used last (one choice in 1,024
    // starts from a random one): the 20 reads met one replica or both. Each count starts
    // at 1; the increments 5 and 10 landed where the router sent them.
    let counts: Vec<i64> = out
        .lines()
        .filter(|l| l.starts_with("counter#"))
        .filter_map(|l| l.split_once(r#"{"current":"#))
        .filter_map(|(_, rest)| rest.trim_end_matches('}').parse::<i64>().ok())
        .collect();
    match counts[..] {
        [one] => assert!([1, 6, 11, 16].contains(&one), "{out}"),
        [a, b] => assert_eq!(a + b, 1 + 1 + 5 + 10, "{out}"),
        _ => panic!("one or two replicas answer: {out}"),
    }
}

#[test]
fn custom_status_goes_on_the_wire_as_given() {
    let out = run_example("custom_status");
    assert_lines(
        "custom_status",
        &out,
        &[
            "HTTP/1.1 123 Informational | content-type: text/plain | Hello, world!",
            "handle: 123 Some(\"text/plain\") Hello, world!",
        ],
    );
}

#[test]
fn request_mirroring_reads_the_same_from_web_and_code() {
    let out = run_example("request_mirroring");
    for row in [
        "\"ada\"",
        "{\"a\":1}",
        "[[\"a\",\"b\"]]",
        "\"b\"",
        "\"long string\"",
    ] {
        let same = format!(
            "web {{\"origin\":\"web\",\"read\":{row}}} | code {{\"origin\":\"code\",\"read\":{row}}}"
        );
        assert!(out.contains(&same), "expected `{same}` in:\n{out}");
    }
    assert_lines(
        "request_mirroring",
        &out,
        &[
            "code {\"origin\":\"code\",\"read\":6.5}",
            "forwarded web request: {\"origin\":\"web\",\"read\":\"grace\"}",
        ],
    );
}

#[test]
fn async_concurrency_serves_fifty_at_once() {
    let out = run_example("async_concurrency");
    let line = out
        .lines()
        .find(|l| l.starts_with("50 requests"))
        .expect("the 50-request line");
    let ms: u64 = line
        .rsplit(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("milliseconds");
    assert!(line.contains("50 ok") && ms < 1000, "{line}");
    let line = out
        .lines()
        .find(|l| l.starts_with("5 requests"))
        .expect("the actor line");
    let ms: u64 = line
        .rsplit(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("milliseconds");
    assert!(line.contains("5 ok") && ms >= 500, "one at a time: {line}");
}

#[test]
fn batching_gathers_requests() {
    let out = run_example("batching");
    assert_lines(
        "batching",
        &out,
        &[
            "16 handle calls -> [\"0.0\", \"1.0\", \"2.0\"",
            "8 HTTP calls -> [\"0.0\", \"10.0\", \"20.0\"",
            "a method that is not a batch method: scorer v1",
        ],
    );
    let sizes = out
        .lines()
        .find(|l| l.starts_with("batch sizes"))
        .expect("sizes line");
    assert!(sizes.contains('8'), "full batches of 8: {sizes}");
}

#[test]
fn handles_dispatch_wait_and_compose() {
    let out = run_example("handles");
    assert_lines(
        "handles",
        &out,
        &[
            "classify(\"a good day\") -> positive",
            "-> 2 ready, 1 pending",
            "POST /pipeline -> a|good|model -> positive",
            "get_handle(\"nope\") -> error: endpoint `nope` does not exist",
        ],
    );
}

#[test]
fn traffic_splits_shadows_and_sticks() {
    let out = run_example("traffic");
    assert_lines(
        "traffic",
        &out,
        &[
            "every caller got an answer",
            "after set_traffic v2 = 1.0, 100 requests: {\"v2\": 100}",
        ],
    );
    let shard = out
        .lines()
        .find(|l| l.starts_with("shard key"))
        .expect("shard line");
    assert!(shard.contains(": 20}"), "one backend for the key: {shard}");
}

#[tokio::test]
async fn the_embedded_example_serves_its_registered_backends() {
    let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/embedded.yaml");
    let server = spawn_listening(&example_bin("embedded"), &[yaml, "--port", "0"], &[], None);
    let http = client();
    let v = get_json(&http, server.url("/counter")).await;
    assert_eq!(v, serde_json::json!({"current": 0}));
    let bump = http
        .post(server.url("/counter"))
        .header("X-SERVE-CALL-METHOD", "other_method")
        .body("5");
    assert_eq!(fetch_text(bump).await, "true");
    let v = get_json(&http, server.url("/counter")).await;
    assert_eq!(v, serde_json::json!({"current": 5}));
    let greeting = fetch_text(http.get(server.url("/greet?name=Ada"))).await;
    assert_eq!(greeting, "Hello, Ada!\n");
    assert_eq!(server.terminate().code(), Some(0));
}

#[tokio::test]
async fn the_cors_app_file_answers_a_real_preflight() {
    let server = spawn_example_app("examples/cors.yaml");
    let http = client();
    let preflight = cors_preflight(&http, server.url("/echo"))
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let actual = http
        .post(server.url("/echo"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(actual.headers()["access-control-allow-origin"], "*");
    assert!(actual.headers().contains_key("x-request-id"));
}
