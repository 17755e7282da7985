//! Python backends with real `python3` workers: the FAQ's examples, request mirroring,
//! async and batching, composition through handles, and failures — exceptions, crashed
//! workers, import errors, start timeouts.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::{
    BackendConfig, BackendFactory, CallOptions, ErrorKind, PythonBackend, Serve, ServeError,
};
use futures_util::future::join_all;
use http::Method;
use serde_json::{Value, json};

use common::{
    base_url, client, fetch_json, fetch_status, fetch_text, get_json, handle_json, handle_text,
    multipart_form, run_refused, serve, serve_backend, spawn_example_app, status_and_text,
};

fn examples_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"))
}

fn python(target: &str) -> PythonBackend {
    PythonBackend::new(target).working_dir(examples_dir())
}

async fn with_python(
    name: &str,
    backend: PythonBackend,
    config: BackendConfig,
    methods: &[Method],
) -> Serve {
    let serve = serve().await;
    add(&serve, name, backend, config, methods).await;
    serve
}

async fn add(
    serve: &Serve,
    name: &str,
    backend: PythonBackend,
    config: BackendConfig,
    methods: &[Method],
) {
    let route = format!("/{name}");
    let factory = BackendFactory::python(backend);
    serve_backend(serve, name, factory, config, route.as_str(), methods).await;
}

#[tokio::test]
async fn the_faq_stateful_processor_over_http_and_handles() {
    let serve = with_python(
        "counter",
        python("stateful:StatefulProcessor"),
        BackendConfig::default(),
        &[Method::GET, Method::POST],
    )
    .await;
    let url = format!("{}/counter", base_url(&serve));
    let http = client();
    let v = get_json(&http, &url).await;
    assert_eq!(v["current"], 1);
    // Through the header.
    let bump = http
        .post(&url)
        .header("X-SERVE-CALL-METHOD", "other_method")
        .body("5");
    assert_eq!(fetch_text(bump).await, "true");
    // Through a Rust handle: the method gets the number itself.
    let handle = serve.get_handle("counter").expect("handle");
    let answer = handle_text(&handle.method("other_method"), 10).await;
    assert_eq!(answer, "true");
    // Through a Python handle, from another Python backend.
    add(
        &serve,
        "bumper",
        python("stateful:Bumper"),
        BackendConfig::default(),
        &[Method::GET],
    )
    .await;
    let bumped = fetch_text(http.get(format!("{}/bumper", base_url(&serve)))).await;
    assert_eq!(bumped, "true");
    let v = get_json(&http, &url).await;
    assert_eq!(v["current"], 21, "1 + 5 + 10 + 5");
    // Unknown methods are a clear 404.
    let r = http
        .get(&url)
        .header("X-SERVE-CALL-METHOD", "nope")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    serve.shutdown().await;
}

#[tokio::test]
async fn two_replicas_are_two_processes_with_two_counts() {
    let config = BackendConfig::default().num_replicas(2);
    let backend = python("stateful:StatefulProcessor");
    let serve = with_python("counter", backend, config, &[Method::GET]).await;
    let handle = serve.get_handle("counter").expect("handle");
    for _ in 0..20 {
        handle_text(&handle.method("other_method"), 1).await;
    }
    // 40 calls at once reach both replicas (one after the other, they would all go to the
    // one used last).
    let mut counts = std::collections::BTreeMap::new();
    let answers = join_all((0..40).map(|_| handle_json::<Value>(&handle, ()))).await;
    for v in answers {
        counts.insert(
            v["pid"].as_i64().expect("pid"),
            v["current"].as_i64().expect("count"),
        );
    }
    assert_eq!(counts.len(), 2, "two worker processes: {counts:?}");
    assert_eq!(
        counts.values().sum::<i64>(),
        22,
        "two counts from 1, plus 20: {counts:?}"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn custom_statuses_with_starlette_and_ferroserve_responses() {
    if !common::python_dep("starlette", "the FAQ's Starlette response") {
        return;
    }
    let serve = with_python(
        "hello",
        python("custom_status:f"),
        BackendConfig::default(),
        &[Method::GET],
    )
    .await;
    add(
        &serve,
        "created",
        python("custom_status:g"),
        BackendConfig::default(),
        &[Method::GET],
    )
    .await;
    // The FAQ's Starlette Response, as written: 123 text/plain.
    let raw = common::raw_get(serve.local_addr().expect("addr"), "/hello").await;
    assert!(raw.starts_with("HTTP/1.1 123 "), "{raw}");
    assert!(raw.contains("content-type: text/plain"), "{raw}");
    assert!(raw.ends_with("Hello, world!"), "{raw}");
    let r = client()
        .get(format!("{}/created", base_url(&serve)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-model"], "v7");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.expect("body"), "Created!");
    serve.shutdown().await;
}

#[tokio::test]
async fn requests_mirror_http_for_http_and_handle_calls() {
    let backend = python("mirroring:Mirror");
    let serve = with_python("mirror", backend, BackendConfig::default(), &[Method::POST]).await;
    let over_http = fetch_json(
        client()
            .post(format!("{}/mirror?q=search", base_url(&serve)))
            .header("x-user", "ada")
            .body("payload"),
    )
    .await;
    let handle = serve.get_handle("mirror").expect("handle");
    let shaped = handle.options(
        CallOptions::new()
            .http_method(Method::POST)
            .header("X-User", "ada")
            .query_param("q", "search"),
    );
    let through_handle: Value = handle_json(&shaped, "payload").await;
    assert_eq!(over_http["origin"], "http");
    assert_eq!(through_handle["origin"], "handle");
    for key in ["method", "path", "user", "q", "body"] {
        assert_eq!(over_http[key], through_handle[key], "{key}");
    }
    // A plain handle call hands the method the value itself.
    let plain: Value = handle_json(&handle, "long string").await;
    assert_eq!(
        plain,
        json!({"origin": "python", "type": "str", "value": "'long string'"})
    );
    let plain: Value = handle_json(&handle, json!({"a": [1, 2]})).await;
    assert_eq!(plain["type"], "dict");
    // JSON and forms, over HTTP.
    let http = client();
    let mirror = format!("{}/mirror", base_url(&serve));
    let v = fetch_json(
        http.post(&mirror)
            .header("X-SERVE-CALL-METHOD", "json")
            .json(&json!({"k": [1, 2]})),
    )
    .await;
    assert_eq!(v["json"], json!({"k": [1, 2]}));
    let form = http.post(&mirror).header("X-SERVE-CALL-METHOD", "form");
    let form = multipart_form(form, ("user", "ada"), ("weights", "w.bin"));
    let v = fetch_json(form).await;
    assert_eq!(
        v,
        json!({"fields": {"user": "ada"}, "files": {"weights": ["w.bin", 10]}})
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn async_methods_run_concurrently_and_plain_ones_one_at_a_time() {
    let backend = python("sleepy:Sleeper");
    let serve = with_python("sleeper", backend, BackendConfig::default(), &[Method::GET]).await;
    let http = client();
    let url = format!("{}/sleeper", base_url(&serve));
    let started = Instant::now();
    let answers = join_all((0..50).map(|_| http.get(&url).send())).await;
    for answer in answers {
        assert_eq!(
            answer.expect("request").text().await.expect("body"),
            "slept"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "50 × 100 ms async: {:?}",
        started.elapsed()
    );
    let handle = serve
        .get_handle("sleeper")
        .expect("handle")
        .method("blocking");
    let started = Instant::now();
    let answers = join_all((0..5).map(|_| handle.remote(()))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "plain methods one at a time: {:?}",
        started.elapsed()
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn batch_methods_get_lists() {
    let config = BackendConfig::default()
        .max_batch_size(8)
        .batch_wait_timeout_ms(100);
    let backend = python("batched:Doubler");
    let serve = with_python("doubler", backend, config, &[Method::POST]).await;
    let handle = serve.get_handle("doubler").expect("handle");
    let answers = join_all((0..16).map(|i| handle.remote(i))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            answer.expect("answer").body_text().expect("text"),
            (i * 2).to_string()
        );
    }
    let doubled = fetch_text(
        client()
            .post(format!("{}/doubler", base_url(&serve)))
            .body("21"),
    )
    .await;
    assert_eq!(doubled, "42");
    let sizes: Vec<usize> = handle_json(&handle.method("sizes"), ()).await;
    assert!(
        sizes.starts_with(&[8, 8]),
        "two full batches first: {sizes:?}"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn a_worker_dying_in_a_batch_fails_each_caller_with_502() {
    let config = BackendConfig::default()
        .max_batch_size(3)
        .batch_wait_timeout_ms(300);
    let backend = python("batched:Doubler");
    let serve = with_python("doubler", backend, config, &[Method::POST]).await;
    let http = client();
    let url = format!("{}/doubler", base_url(&serve));
    let answers = join_all((0..3).map(|i| {
        http.post(&url)
            .header("X-SERVE-CALL-METHOD", "crash")
            .body(i.to_string())
            .send()
    }))
    .await;
    for answer in answers {
        let r = answer.expect("an answer, not a hang");
        assert_eq!(r.status(), 502);
        let body = r.text().await.expect("body");
        assert!(
            body.starts_with(
                "backend `doubler` (replica `doubler#1`) died: its worker process died"
            ),
            "{body}"
        );
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn a_pipeline_composes_endpoints_through_python_handles() {
    let serve = serve().await;
    for (name, target, init_args) in [
        ("tokenizer", "pipeline:tokenize", Value::Null),
        (
            "classifier",
            "pipeline:Classifier",
            json!({"positive_words": ["good", "great"]}),
        ),
    ] {
        let factory = BackendFactory::python(python(target));
        let config = BackendConfig::default().init_args(init_args);
        serve_backend(&serve, name, factory, config, None, &[]).await;
    }
    add(
        &serve,
        "pipeline",
        python("pipeline:Pipeline"),
        BackendConfig::default(),
        &[Method::POST],
    )
    .await;
    let pipeline = format!("{}/pipeline", base_url(&serve));
    let v = fetch_json(client().post(pipeline).body("a great day")).await;
    assert_eq!(v, json!({"label": "positive", "score": 1}));
    // From a plain method, with .result().
    let handle = serve.get_handle("pipeline").expect("handle");
    let v: Value = handle_json(&handle.method("sync_path"), ()).await;
    assert_eq!(v["label"], "positive");
    // A failing handle call is a clear error naming the exception.
    let err = serve
        .get_handle("tokenizer")
        .expect("h")
        .remote(5)
        .await
        .expect_err("tokenize wants a str");
    assert!(
        err.to_string().contains("TypeError: tokenize wants a str"),
        "{err}"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn init_args_and_user_config_reach_python_replicas() {
    let config = BackendConfig::default()
        .num_replicas(2)
        .init_args(json!({"model": "large"}))
        .user_config(json!({"threshold": 0.5}));
    let backend = python("configurable:Thresholded");
    let serve = with_python("cfg", backend, config.clone(), &[Method::GET]).await;
    let handle = serve.get_handle("cfg").expect("handle");
    for _ in 0..10 {
        let v: Value = handle_json(&handle, ()).await;
        assert_eq!(v, json!({"model": "large", "config": {"threshold": 0.5}}));
    }
    serve
        .update_backend_config("cfg", config.user_config(json!({"threshold": 0.9})))
        .await
        .expect("reconfigured");
    for _ in 0..10 {
        let v: Value = handle_json(&handle, ()).await;
        assert_eq!(
            v["config"],
            json!({"threshold": 0.9}),
            "every replica reconfigured"
        );
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn exceptions_become_500s_with_type_and_message() {
    let backend = python("crashy:Crashy");
    let serve = with_python("crashy", backend, BackendConfig::default(), &[Method::GET]).await;
    let crashy = format!("{}/crashy", base_url(&serve));
    let (status, body) =
        status_and_text(client().get(crashy).header("X-SERVE-CALL-METHOD", "fail")).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("ValueError: bad input: expected a number"),
        "{body}"
    );
    let err = serve
        .get_handle("crashy")
        .expect("h")
        .method("fail")
        .remote(())
        .await
        .expect_err("fails");
    assert!(matches!(err, ServeError::Backend { .. }), "{err:?}");
    serve.shutdown().await;
}

/// The worker pids that answer 20 calls made at once: calls at once reach every replica
/// (one after the other, they would all go to the one used last, whose caches are warm).
async fn pids_answering(handle: &ferroserve::Handle) -> std::collections::BTreeSet<i64> {
    let calls: Vec<_> = (0..20).map(|_| handle.remote(())).collect();
    let mut pids = std::collections::BTreeSet::new();
    for call in calls {
        if let Ok(r) = call.await {
            let v: Value = r.body_json().expect("JSON");
            pids.insert(v["pid"].as_i64().expect("pid"));
        }
    }
    pids
}

#[tokio::test]
async fn a_dying_worker_fails_its_requests_at_once_and_is_restarted() {
    let config = BackendConfig::default().num_replicas(2);
    let serve = with_python("crashy", python("crashy:Crashy"), config, &[Method::GET]).await;
    let handle = serve.get_handle("crashy").expect("handle");
    let pids = pids_answering(&handle).await;
    assert_eq!(pids.len(), 2);
    // Requests in flight on the replica that dies get a clear error at once, not a hang.
    let slow: Vec<_> = (0..4).map(|_| handle.method("slow").remote(())).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let exit = handle
        .method("exit")
        .remote(())
        .await
        .expect_err("the worker exits");
    assert!(matches!(exit, ServeError::ReplicaDied { .. }), "{exit:?}");
    assert!(exit.to_string().contains("died"), "{exit}");
    let (died, _) = ferroserve::wait(slow, 4, Some(Duration::from_secs(2))).await;
    let mut failed = 0;
    for r in died {
        if let Err(e) = r.await {
            assert_eq!(e.kind(), ErrorKind::ReplicaFailure, "{e}");
            failed += 1;
        }
    }
    assert!(
        failed >= 1,
        "the in-flight requests on the dead worker failed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        started.elapsed()
    );
    // The other replica serves meanwhile, over HTTP too.
    let status = fetch_status(client().get(format!("{}/crashy", base_url(&serve)))).await;
    assert_eq!(status, 200);
    // The dead one is restarted: two processes again, one of them new.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = pids_answering(&handle).await;
        if now.len() == 2 && now != pids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica was not restarted: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn a_segfault_is_a_clear_error_too() {
    let backend = python("crashy:Crashy");
    let serve = with_python("crashy", backend, BackendConfig::default(), &[Method::GET]).await;
    let crashy = format!("{}/crashy", base_url(&serve));
    let (status, body) = status_and_text(
        client()
            .get(&crashy)
            .header("X-SERVE-CALL-METHOD", "segfault"),
    )
    .await;
    assert_eq!(status, 502);
    assert!(body.contains("died") && body.contains("SIGSEGV"), "{body}");
    // While the only replica restarts, callers get a 503 or the restarted replica, never a hang.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client().get(&crashy).send().await.expect("request");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "{:?}", r.text().await);
        assert!(Instant::now() < deadline, "not restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.shutdown().await;
}

/// Runs `ferroserve run` on a Python app that cannot start; returns its stderr.
fn refused(yaml: &str) -> String {
    run_refused(&yaml.replace("WORKDIR", &examples_dir().display().to_string()))
}

#[test]
fn start_failures_stop_ferroserve_run_with_the_reason() {
    let stderr =
        refused("backends:\n  m:\n    python: no_such_module:Model\n    working_dir: WORKDIR\n");
    assert!(
        stderr.contains("cannot import module `no_such_module`")
            && stderr.contains("ModuleNotFoundError"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 2") && stderr.contains("backends.m"),
        "{stderr}"
    );
    let stderr =
        refused("backends:\n  m:\n    python: stateful:NoSuchClass\n    working_dir: WORKDIR\n");
    assert!(
        stderr.contains("module `stateful` has no attribute `NoSuchClass`"),
        "{stderr}"
    );
    let stderr =
        refused("backends:\n  m:\n    python: broken:FailingInit\n    working_dir: WORKDIR\n");
    assert!(
        stderr.contains("RuntimeError: the model file is missing"),
        "{stderr}"
    );
    let stderr = refused(
        "backends:\n  m:\n    python: slow_import:handler\n    working_dir: WORKDIR\n    start_timeout_s: 1\n",
    );
    assert!(
        stderr.contains("did not start within") && stderr.contains("killed"),
        "{stderr}"
    );
    let stderr = refused(
        "backends:\n  m:\n    python: stateful:StatefulProcessor\n    python_executable: /no/such/python\n",
    );
    assert!(
        stderr.contains("cannot run the Python interpreter `/no/such/python`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn env_and_working_dir_reach_the_worker() {
    let backend = python("env_probe:probe").env("MODEL_PATH", "/models/v3");
    let serve = with_python("probe", backend, BackendConfig::default(), &[Method::GET]).await;
    let v = get_json(&client(), format!("{}/probe", base_url(&serve))).await;
    assert_eq!(v, json!({"model_path": "/models/v3", "cwd_has_me": true}));
    serve.shutdown().await;
}

#[tokio::test]
async fn the_python_example_app_serves_with_the_stock_binary() {
    let server = spawn_example_app("examples/python/app.yaml");
    let http = client();
    let v = get_json(&http, server.url("/counter")).await;
    assert_eq!(v["current"], 1);
    let v = fetch_json(http.post(server.url("/pipeline")).body("a good day")).await;
    assert_eq!(v["label"], "positive");
    let doubled = fetch_text(http.post(server.url("/double")).body("21")).await;
    assert_eq!(doubled, "42");
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "workers stop with the server"
    );
}
