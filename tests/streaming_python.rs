//! Streaming answers from Python backends (examples/python/streaming.py): generators and
//! `StreamingResponse`s go out chunk by chunk, a client that leaves closes the generator,
//! a slow client slows it, server-sent events reach `curl -N` and `httpx`, and Python code
//! reads streams through handles.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, PythonBackend, Serve};
use serde_json::Value;

use common::{base_url, client, fetch_json, python, python_dep, serve, serve_backend};

async fn streamer(config: BackendConfig) -> Serve {
    let serve = serve().await;
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    let factory = BackendFactory::python(PythonBackend::new("streaming:Streamer").working_dir(dir));
    serve_backend(&serve, "streamer", factory, config, "/stream", &[]).await;
    serve
}

fn get(serve: &Serve, method: &str, query: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!("{}/stream?{query}", base_url(serve)))
        .header("X-SERVE-CALL-METHOD", method)
}

async fn stats(serve: &Serve) -> Value {
    fetch_json(get(serve, "stats", "")).await
}

/// Waits up to 5 s for the worker's stats to satisfy `done`.
async fn eventually(serve: &Serve, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = stats(serve).await;
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a streamed answer: the time to its first chunk, the time to its end, its text.
async fn timed(request: reqwest::RequestBuilder) -> (Duration, Duration, String) {
    let started = Instant::now();
    let mut response = request.send().await.expect("headers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut text = Vec::new();
    let first = response.chunk().await.expect("read").expect("a chunk");
    let to_first = started.elapsed();
    text.extend_from_slice(&first);
    while let Some(chunk) = response.chunk().await.expect("read") {
        text.extend_from_slice(&chunk);
    }
    (
        to_first,
        started.elapsed(),
        String::from_utf8(text).expect("UTF-8"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_arrives_before_the_generator_finishes() {
    let serve = streamer(BackendConfig::default()).await;
    let expected = "token 0\ntoken 1\ntoken 2\n";
    // The generator pauses 1.5 s after its first token.
    for method in ["__call__", "plain"] {
        let (first, whole, text) = timed(get(&serve, method, "n=3&pause=1.5")).await;
        assert_eq!(text, expected, "{method}");
        assert!(
            first < Duration::from_millis(1000),
            "{method}: first chunk after {first:?}"
        );
        assert!(
            whole >= Duration::from_millis(1500),
            "{method}: whole after {whole:?}"
        );
    }
    let response = get(&serve, "__call__", "n=1")
        .send()
        .await
        .expect("headers");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_closes_the_generator_and_frees_the_slot() {
    // Two slots: one for the stream, one for the stats; a slot kept by a stream whose
    // client left would leave none for the next stream.
    let serve = streamer(BackendConfig::default().max_concurrent_queries(2)).await;
    for (round, method) in ["endless", "endless_plain", "endless"].iter().enumerate() {
        let mut response = get(&serve, method, "").send().await.expect("headers");
        for _ in 0..3 {
            response.chunk().await.expect("read").expect("a chunk");
        }
        drop(response);
        let key = if *method == "endless" {
            "closed"
        } else {
            "closed_sync"
        };
        let closed = if round == 2 { 2 } else { 1 };
        let now = eventually(&serve, |s| s[key] == closed).await;
        assert_eq!(
            now[key], closed,
            "{method}: the generator was not closed: {now}"
        );
    }
    // Nothing more is made once every client left.
    let made = stats(&serve).await["made"].as_u64().expect("made");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats(&serve).await["made"].as_u64(), Some(made));
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_the_generator() {
    let serve = streamer(BackendConfig::default()).await;
    // 64 KiB chunks, read by nobody: the generator waits for the window, not the end.
    let response = get(&serve, "endless", "size=65536")
        .send()
        .await
        .expect("headers");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stalled = stats(&serve).await["made"].as_u64().expect("made");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = stats(&serve).await["made"].as_u64().expect("made");
    // Socket buffers, the connection's buffer and the window: a few megabytes.
    assert!(
        stalled < 200,
        "{stalled} chunks of 64 KiB made for a client that reads none"
    );
    assert_eq!(stalled, later, "the generator went on without a reader");
    drop(response);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_responses_keep_their_status_and_headers() {
    let serve = streamer(BackendConfig::default()).await;
    if python_dep("starlette", "Starlette's StreamingResponse") {
        let response = get(&serve, "starlette", "").send().await.expect("headers");
        assert_eq!(response.status(), 201);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        assert_eq!(response.headers()["x-parts"], "3");
        assert_eq!(response.text().await.expect("body"), "abc");
    }
    // An error after the first chunk: the client sees the answer cut short.
    let read = async { get(&serve, "fails_midway", "").send().await?.bytes().await };
    assert!(read.await.is_err(), "the answer was not cut short");
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_read_the_events() {
    let serve = streamer(BackendConfig::default()).await;
    let url = format!("{}/stream?n=3&delay=0.05", base_url(&serve));
    let events = "event: token\ndata: t0\n\nevent: token\ndata: t1\n\nevent: token\ndata: t2\n\n";
    let out = tokio::process::Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "10",
            "-H",
            "X-SERVE-CALL-METHOD: sse",
            &url,
        ])
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), events);
    // httpx, streaming: each event as its own lines, as they come.
    if python_dep("httpx", "the httpx client") {
        let script = r#"
import sys, httpx
with httpx.stream("GET", sys.argv[1], headers={"X-SERVE-CALL-METHOD": "sse"}, timeout=10) as r:
    assert r.headers["content-type"] == "text/event-stream", r.headers
    data = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
print(",".join(data))
"#;
        let out = tokio::process::Command::new(python())
            .args(["-c", script, &url])
            .output()
            .await
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t0,t1,t2");
    }
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handles_read_streams() {
    let serve = streamer(BackendConfig::default()).await;
    // `async for` over handle.options(stream=True).remote(...), passed on as a stream.
    let (_, _, text) = timed(get(&serve, "relay", "n=4")).await;
    assert_eq!(text, "0:0\n1:1\n2:4\n3:9\n");
    // `for` in a plain method.
    let squares = fetch_json(get(&serve, "relay_plain", "n=40")).await;
    let expected: Vec<u64> = (0..40).map(|i| i * i).collect();
    assert_eq!(squares, serde_json::json!(expected));
    // Without stream=True: the list of what the generator yielded.
    let whole = fetch_json(get(&serve, "whole", "n=3")).await;
    assert_eq!(
        whole,
        serde_json::json!([{"i": 0, "square": 0}, {"i": 1, "square": 1}, {"i": 2, "square": 4}])
    );
    // A stream dropped after its first item closes the generator behind it.
    let first = fetch_json(get(&serve, "first_only", "")).await;
    assert_eq!(first, serde_json::json!({"first": 0}));
    let now = eventually(&serve, |s| s["closed"] == 1).await;
    assert_eq!(
        now["closed"], 1,
        "the generator behind the dropped stream: {now}"
    );
    // A Rust caller gets each object pickled, one chunk each.
    let handle = serve.get_handle("streamer").expect("endpoint");
    let answer = handle.method("hundred").remote(()).await.expect("answer");
    let text = answer
        .collected(1 << 20)
        .await
        .expect("whole")
        .body_text()
        .expect("text");
    assert_eq!(text.lines().count(), 100);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_dropped_early_free_their_slots() {
    // Four slots: a caller and its stream take two; a stream whose slot leaked would soon
    // leave none, and the calls would queue for ever.
    let serve = streamer(BackendConfig::default().max_concurrent_queries(4)).await;
    for round in 0..12 {
        let call = if round % 2 == 0 {
            "drop_at_once"
        } else {
            "first_only"
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), get(&serve, call, "").send())
            .await
            .unwrap_or_else(|_| panic!("{call} (round {round}) queued: a slot leaked"))
            .expect("an answer");
        assert_eq!(answer.status(), 200, "{call}");
    }
    // Every stream that started was closed.
    let now = eventually(&serve, |s| s["closed"].as_u64() >= Some(6)).await;
    assert!(now["closed"].as_u64() >= Some(6), "{now}");
    serve.shutdown().await;
}

/// The ```python blocks of docs/streaming.md, in order.
fn doc_blocks() -> Vec<String> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/streaming.md"))
        .expect("docs/streaming.md");
    page.split("```python\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_classes_stream() {
    let blocks = doc_blocks();
    assert_eq!(blocks.len(), 2, "docs/streaming.md has a Chat and a Relay");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("chat_doc.py"), &blocks[0]).expect("written");
    std::fs::write(dir.path().join("relay_doc.py"), &blocks[1]).expect("written");
    let serve = serve().await;
    for (name, target, route) in [
        ("chat", "chat_doc:Chat", "/chat"),
        ("relay", "relay_doc:Relay", "/relay"),
    ] {
        let factory = BackendFactory::python(PythonBackend::new(target).working_dir(dir.path()));
        serve_backend(
            &serve,
            name,
            factory,
            BackendConfig::default(),
            route,
            &[http::Method::GET, http::Method::POST],
        )
        .await;
    }
    let chat = format!("{}/chat", base_url(&serve));
    let (first, whole, text) = timed(client().post(&chat).body("one two three")).await;
    assert_eq!(text, "one two three ");
    assert!(first < whole, "{first:?} then {whole:?}");
    let events = client()
        .get(&chat)
        .header("X-SERVE-CALL-METHOD", "events")
        .send()
        .await
        .expect("headers");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert_eq!(
        events.text().await.expect("body"),
        "event: token\ndata: t0\n\nevent: token\ndata: t1\n\nevent: token\ndata: t2\n\n"
    );
    let (_, _, relayed) = timed(client().get(format!("{}/relay", base_url(&serve)))).await;
    assert_eq!(relayed, "HELLO\nTHERE\n");
    serve.shutdown().await;
}
