//! Replicas on another node (issue 14, point 4): two servers in one process, A running the
//! replicas and listening for peers, B routing to them over one HTTP/2 connection. B knows
//! the backends either with no replica of its own (`create_remote_backend`), so that every
//! call must reach A, or with one local replica plus A's (for local preference and
//! ejection). Everything is asserted through B's HTTP proxy and handles.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Methods, PythonBackend,
    RemoteTarget, Request, Response, Serve,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{base_url, client, fetch_json, serve, status_and_text};

fn examples_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"))
}

fn python(target: &str) -> BackendFactory {
    BackendFactory::python(PythonBackend::new(target).working_dir(examples_dir()))
}

fn endpoint(backend: &str, route: &str) -> EndpointConfig {
    EndpointConfig::backend(backend)
        .route(route)
        .methods([Method::GET, Method::POST])
}

/// Node A: a server listening for peers; its address.
async fn node_a() -> (Serve, SocketAddr) {
    let a = serve().await;
    let peers = a
        .listen_peers("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("A listens for peers");
    (a, peers)
}

/// The ids of `backend`'s replicas on `serve`, as targets for another node.
fn targets(serve: &Serve, backend: &str, addr: SocketAddr) -> Vec<RemoteTarget> {
    serve.status().backends[backend]
        .replicas
        .iter()
        .map(|r| RemoteTarget {
            node: "a".to_owned(),
            addr,
            replica: r.id.clone(),
        })
        .collect()
}

/// A Rust backend that says which node ran it and what it got; any method name: `fail`
/// fails with 418, `slow` takes 2 s, `hold` waits until `released`.
struct Reporter {
    node: &'static str,
    released: Arc<tokio::sync::Notify>,
}

impl Backend for Reporter {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        match req.method_name() {
            "fail" => {
                Err(BackendError::msg("the teapot is empty").with_status(StatusCode::IM_A_TEAPOT))
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(Response::from("late"))
            }
            "hold" => {
                self.released.notified().await;
                Ok(Response::from("released"))
            }
            method => Response::json(&json!({
                "node": self.node,
                "method": method,
                "body": req.text()?,
                "token": req.header("x-token"),
                "query": req.query_param("q"),
            }))
            .map(|r| r.with_status(StatusCode::CREATED)),
        }
    }

    fn methods(&self) -> Methods {
        Methods::Any
    }
}

fn reporter_released(node: &'static str, released: Arc<tokio::sync::Notify>) -> BackendFactory {
    BackendFactory::new(move |_ctx| {
        Ok(Reporter {
            node,
            released: released.clone(),
        })
    })
}

fn reporter(node: &'static str) -> BackendFactory {
    reporter_released(node, Arc::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_b_run_on_a_with_their_errors_and_timeouts() {
    let (a, peers) = node_a().await;
    let config = BackendConfig::default().num_replicas(2);
    a.create_backend("b", reporter("a"), config.clone())
        .await
        .expect("A's backend");
    let timeout = Duration::from_millis(300);
    a.create_endpoint("slow", endpoint("b", "/slow").request_timeout(timeout))
        .await
        .expect("A's endpoint");

    let b = serve().await;
    b.create_remote_backend("b", config)
        .await
        .expect("known on B");
    b.create_endpoint("b", endpoint("b", "/b"))
        .await
        .expect("endpoint");
    b.create_endpoint("slow", endpoint("b", "/slow").request_timeout(timeout))
        .await
        .expect("endpoint");
    let ready = format!("{}/-/ready", base_url(&b));
    assert_eq!(
        client().get(&ready).send().await.expect("ready").status(),
        503
    );
    b.set_remote_replicas("b", targets(&a, "b", peers));
    assert_eq!(
        client().get(&ready).send().await.expect("ready").status(),
        200
    );

    let url = format!("{}/b?q=1", base_url(&b));
    let answer = client()
        .post(&url)
        .header("x-token", "t0k")
        .header("X-SERVE-CALL-METHOD", "predict")
        .body("hello")
        .send()
        .await
        .expect("answer");
    let status = answer.status();
    let text = answer.text().await.expect("text");
    assert_eq!(status, StatusCode::CREATED, "A's status: {text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v,
        json!({"node": "a", "method": "predict", "body": "hello", "token": "t0k", "query": "1"})
    );
    // A handle call on B, with a JSON argument.
    let handle = b.get_handle("b").expect("handle");
    let v: Value = handle
        .remote(json!({"x": 1}))
        .await
        .expect("answer")
        .body_json()
        .expect("json");
    assert_eq!(v["node"], "a");
    assert_eq!(v["body"], r#"{"x":1}"#);

    // A backend error keeps its status and message.
    let (status, text) =
        status_and_text(client().get(&url).header("X-SERVE-CALL-METHOD", "fail")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert!(text.contains("the teapot is empty"), "{text}");
    let err = handle.method("fail").remote(()).await.expect_err("fails");
    assert!(
        err.to_string().contains("replica `a/b#"),
        "named as B sees it: {err}"
    );

    // A timeout is the same answer as on A itself.
    let slow = |serve: &Serve| {
        client()
            .get(format!("{}/slow", base_url(serve)))
            .header("X-SERVE-CALL-METHOD", "slow")
    };
    let on_a = status_and_text(slow(&a)).await;
    let started = Instant::now();
    let on_b = status_and_text(slow(&b)).await;
    assert_eq!(on_a.0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(on_b, on_a);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A Rust value cannot cross: refused before it is sent.
    let err = handle
        .remote(ferroserve::Arg::value(5u8))
        .await
        .expect_err("no Rust values across nodes");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{err}");

    // One call's latency, local and remote (recorded, not asserted).
    let time = |url: String| async move {
        let http = client();
        let started = Instant::now();
        for _ in 0..200 {
            http.get(&url).send().await.expect("answer");
        }
        started.elapsed() / 200
    };
    a.create_endpoint("b", endpoint("b", "/b"))
        .await
        .expect("endpoint");
    let local = time(format!("{}/b", base_url(&a))).await;
    let remote = time(format!("{}/b", base_url(&b))).await;
    eprintln!("one call: {local:?} on A, {remote:?} through B to A");

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_fails_fast_then_is_ejected_and_traffic_goes_local() {
    let (a, peers) = node_a().await;
    a.create_backend("b", reporter("a"), BackendConfig::default())
        .await
        .expect("A's backend");

    // B runs one replica of its own, which takes one call at a time; `hold` keeps it busy.
    let b = serve().await;
    let released = Arc::new(tokio::sync::Notify::new());
    let local = reporter_released("b", released.clone());
    let config = BackendConfig::default().max_concurrent_queries(1);
    b.create_backend("b", local, config)
        .await
        .expect("B's backend");
    b.create_endpoint("b", endpoint("b", "/b"))
        .await
        .expect("endpoint");
    b.set_remote_replicas("b", targets(&a, "b", peers));
    let url = format!("{}/b", base_url(&b));

    // Idle, B's own replica serves.
    assert_eq!(fetch_json(client().get(&url)).await["node"], "b");
    // Busy, A's does.
    let holding = tokio::spawn(
        client()
            .get(&url)
            .header("X-SERVE-CALL-METHOD", "hold")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fetch_json(client().get(&url)).await["node"], "a");

    // A goes away: each call fails at once with a 502 naming the node, five times.
    a.shutdown().await;
    for i in 0..5 {
        let started = Instant::now();
        let (status, text) = status_and_text(client().get(&url)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "call {i}: {text}");
        assert!(text.contains("node `a`"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no hang: {:?}",
            started.elapsed()
        );
    }
    // Ejected: the next call waits for B's own replica instead of failing.
    let waiting = tokio::spawn(client().get(&url).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "queued, not sent to the dead node");
    released.notify_one();
    let answer = waiting.await.expect("task").expect("answer");
    assert_eq!(answer.status(), StatusCode::CREATED);
    let v: Value = answer.json().await.expect("json");
    assert_eq!(v["node"], "b");
    let held = holding.await.expect("task").expect("answer");
    assert_eq!(held.text().await.expect("text"), "released");
    for _ in 0..5 {
        assert_eq!(fetch_json(client().get(&url)).await["node"], "b");
    }
    b.shutdown().await;
}

/// A's stats of its Cancellable replica, through A's own endpoint.
async fn stats(a: &Serve) -> Value {
    fetch_json(
        client()
            .get(format!("{}/c", base_url(a)))
            .header("X-SERVE-CALL-METHOD", "stats"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_objects_errors_and_cancellation_cross_nodes() {
    let (a, peers) = node_a().await;
    let classifier =
        BackendConfig::default().init_args(json!({"positive_words": ["good", "great"]}));
    for (name, target, config) in [
        ("tokenizer", "pipeline:tokenize", BackendConfig::default()),
        ("classifier", "pipeline:Classifier", classifier.clone()),
        ("c", "cancellable:Cancellable", BackendConfig::default()),
    ] {
        a.create_backend(name, python(target), config)
            .await
            .expect("A's Python backend");
    }
    a.create_endpoint("c", endpoint("c", "/c"))
        .await
        .expect("endpoint");

    // B runs the pipeline itself; its handles reach A's tokenizer and classifier.
    let b = serve().await;
    for (name, config) in [
        ("tokenizer", BackendConfig::default()),
        ("classifier", classifier),
        ("c", BackendConfig::default()),
    ] {
        b.create_remote_backend(name, config)
            .await
            .expect("known on B");
        b.create_endpoint(name, endpoint(name, &format!("/{name}")))
            .await
            .expect("endpoint");
        b.set_remote_replicas(name, targets(&a, name, peers));
    }
    b.create_backend(
        "pipeline",
        python("pipeline:Pipeline"),
        BackendConfig::default(),
    )
    .await
    .expect("B's pipeline");
    b.create_endpoint("pipeline", endpoint("pipeline", "/pipeline"))
        .await
        .expect("endpoint");
    let timeout = Duration::from_millis(300);
    b.create_endpoint(
        "c-timeout",
        endpoint("c", "/c-timeout").request_timeout(timeout),
    )
    .await
    .expect("endpoint");

    // Python objects (a list of tokens, a dict back) cross pickled, both ways.
    let v = fetch_json(
        client()
            .post(format!("{}/pipeline", base_url(&b)))
            .body("a great day"),
    )
    .await;
    assert_eq!(v, json!({"label": "positive", "score": 1}));
    let v = fetch_json(
        client()
            .post(format!("{}/pipeline", base_url(&b)))
            .header("X-SERVE-CALL-METHOD", "sync_path"),
    )
    .await;
    assert_eq!(v["label"], "positive");
    // A Python exception on A is a clear error on B.
    let err = b
        .get_handle("tokenizer")
        .expect("handle")
        .remote(5)
        .await
        .expect_err("tokenize wants a str");
    assert!(
        err.to_string().contains("TypeError: tokenize wants a str"),
        "{err}"
    );
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // A caller of B that hangs up cancels the call on A's worker.
    let before = stats(&a).await["cancelled"].as_u64().expect("count");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gave_up = impatient
        .get(format!("{}/c", base_url(&b)))
        .header("X-SERVE-CALL-METHOD", "hang")
        .send()
        .await;
    assert!(gave_up.is_err(), "the caller gave up");
    // And so does B's request_timeout_s, with the answer A would give.
    let (status, text) = status_and_text(
        client()
            .get(format!("{}/c-timeout", base_url(&b)))
            .header("X-SERVE-CALL-METHOD", "hang"),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(text, "no answer within the 0.3s request_timeout_s allows\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = stats(&a).await;
    while now["cancelled"].as_u64() != Some(before + 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = stats(&a).await;
    }
    assert_eq!(now["cancelled"].as_u64(), Some(before + 2), "{now}");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_nodes_chunk_by_chunk() {
    let (a, peers) = node_a().await;
    a.create_backend(
        "streamer",
        python("streaming:Streamer"),
        BackendConfig::default(),
    )
    .await
    .expect("A's streaming backend");
    a.create_endpoint("streamer", endpoint("streamer", "/stream"))
        .await
        .expect("endpoint");
    let b = serve().await;
    b.create_remote_backend("streamer", BackendConfig::default())
        .await
        .expect("known on B");
    b.create_endpoint("streamer", endpoint("streamer", "/stream"))
        .await
        .expect("endpoint");
    b.set_remote_replicas("streamer", targets(&a, "streamer", peers));
    // B's own Python backend reads A's generator through a handle, object by object.
    b.create_backend(
        "relayer",
        python("streaming:Streamer"),
        BackendConfig::default(),
    )
    .await
    .expect("B's relay");
    b.create_endpoint("relayer", endpoint("relayer", "/relay"))
        .await
        .expect("endpoint");
    let on = |serve: &Serve, path: &str, method: &str| {
        client()
            .get(format!("{}{path}", base_url(serve)))
            .header("X-SERVE-CALL-METHOD", method)
    };

    // The first token crosses before the generator on A pauses.
    let started = Instant::now();
    let mut response = on(&b, "/stream?n=3&pause=1", "__call__")
        .send()
        .await
        .expect("headers");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let first = response.chunk().await.expect("read").expect("a chunk");
    assert_eq!(&first[..], b"token 0\n");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("read") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"token 1\ntoken 2\n");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Pickled objects, one chunk each, from A's generator to B's Python code.
    let relayed = on(&b, "/relay?n=3", "relay")
        .send()
        .await
        .expect("headers")
        .text()
        .await
        .expect("body");
    assert_eq!(relayed, "0:0\n1:1\n2:4\n");

    // An error on A cuts B's answer short.
    let read = async {
        on(&b, "/stream", "fails_midway")
            .send()
            .await?
            .bytes()
            .await
    };
    assert!(read.await.is_err(), "the answer was not cut short");

    // A client of B that leaves closes the generator on A.
    let mut endless = on(&b, "/stream", "endless").send().await.expect("headers");
    for _ in 0..3 {
        endless.chunk().await.expect("read").expect("a chunk");
    }
    drop(endless);
    common::cluster::wait_until(
        Duration::from_secs(5),
        "the generator on A closed",
        || async { fetch_json(on(&a, "/stream", "stats")).await["closed"] == json!(1) },
    )
    .await;
    b.shutdown().await;
    a.shutdown().await;
}
