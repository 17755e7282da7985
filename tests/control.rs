//! The control API of the real binary: declarative deploys, status, imperative changes,
//! errors, the token, readiness during start, SIGHUP reloads, and state that survives a
//! `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    client, ferroserve_bin, fetch_status, get_json, spawn_cli, spawn_listening, write_config,
};
use serde_json::{Value, json};

const ECHO: &str = "\
backends:
  echo: {builtin: echo}
endpoints:
  echo: {route: /echo, methods: [GET, POST], backend: echo}
";

/// Polls `GET /api/status` until `done` holds (at most 30 s); the last status.
async fn status_until(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = get_json(http, url).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status never got there: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn running(status: &Value) -> bool {
    status["status"] == "RUNNING"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_app_creates_changes_and_removes_and_status_shows_it() {
    let server = spawn_cli(ECHO);
    let http = client();
    let status_url = server.control_url("/api/status");
    let status = status_until(&http, &status_url, running).await;
    assert_eq!(
        status["backends"]["echo"]["status"], "HEALTHY",
        "{status:#}"
    );
    assert_eq!(
        status["backends"]["echo"]["replicas"][0]["state"],
        "RUNNING"
    );
    assert_eq!(status["endpoints"]["echo"]["route"], "/echo");
    assert_eq!(status["ready"], true);

    // A new app: echo scales to 2, a second backend and endpoint come, in the file's shape.
    let app = "\
backends:
  echo: {builtin: echo, num_replicas: 2}
  other: {builtin: echo}
endpoints:
  other: {route: /other, backend: other}
";
    let put = http
        .put(server.control_url("/api/app"))
        .body(app)
        .send()
        .await
        .expect("answers");
    assert_eq!(put.status(), 202);
    let status = status_until(&http, &status_url, |s| {
        running(s) && s["backends"]["echo"]["running_replicas"] == 2
    })
    .await;
    assert!(status["endpoints"].get("echo").is_none(), "{status:#}");
    assert_eq!(fetch_status(http.get(server.url("/other"))).await, 200);
    assert_eq!(
        fetch_status(http.get(server.url("/echo"))).await,
        404,
        "the endpoint no longer listed is removed"
    );

    // What GET returns can be PUT back unchanged.
    let deployed: Value = get_json(&http, server.control_url("/api/app")).await;
    assert_eq!(deployed["backends"].as_array().map(Vec::len), Some(2));
    let again = http
        .put(server.control_url("/api/app"))
        .json(&deployed)
        .send()
        .await
        .expect("answers");
    assert_eq!(again.status(), 202);
    status_until(&http, &status_url, running).await;

    // DELETE removes everything.
    let delete = http
        .delete(server.control_url("/api/app"))
        .send()
        .await
        .expect("answers");
    assert_eq!(delete.status(), 202);
    let status = status_until(&http, &status_url, |s| {
        running(s)
            && s["backends"]
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
    })
    .await;
    assert!(
        status["endpoints"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_changes_and_errors() {
    let server = spawn_cli(ECHO);
    let http = client();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, server.control_url(path))
            .json(&body)
            .send()
    };
    let created = call(
        reqwest::Method::POST,
        "/api/backends/canary",
        json!({"builtin": "echo", "num_replicas": 2}),
    )
    .await
    .expect("answers");
    assert_eq!(created.status(), 200);
    let traffic = call(
        reqwest::Method::PUT,
        "/api/endpoints/echo/traffic",
        json!({"echo": 0.5, "canary": 0.5}),
    )
    .await
    .expect("answers");
    assert_eq!(traffic.status(), 200);
    let status: Value = traffic.json().await.expect("the new status");
    assert_eq!(status["endpoints"]["echo"]["traffic"]["canary"], 0.5);
    let endpoint = call(
        reqwest::Method::POST,
        "/api/endpoints/side",
        json!({"route": "/side", "backend": "canary"}),
    )
    .await
    .expect("answers");
    assert_eq!(endpoint.status(), 200);
    assert_eq!(
        http.get(server.url("/side"))
            .send()
            .await
            .expect("answers")
            .status(),
        200
    );

    // Errors: JSON, a 4xx, and the reason (with the file loader's key where it applies).
    let bad = call(
        reqwest::Method::POST,
        "/api/backends/bad",
        json!({"builtin": "echo", "num_replicas": 0}),
    )
    .await
    .expect("answers");
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("JSON");
    assert_eq!(body["key"], "backends.bad.num_replicas", "{body}");
    let conflict = call(reqwest::Method::DELETE, "/api/backends/canary", Value::Null)
        .await
        .expect("answers");
    assert_eq!(conflict.status(), 409, "in use by endpoints");
    let missing = call(
        reqwest::Method::POST,
        "/api/endpoints/x",
        json!({"route": "/x", "backend": "nope"}),
    )
    .await
    .expect("answers");
    assert_eq!(missing.status(), 404);
    let yaml = http
        .put(server.control_url("/api/app"))
        .body("backends:\n  a: {builtin: echo, num_replicas: 0}\n")
        .send()
        .await
        .expect("answers");
    assert_eq!(yaml.status(), 400);
    let body: Value = yaml.json().await.expect("JSON");
    assert_eq!(body["line"], 2, "{body}");
    assert_eq!(body["key"], "backends.a.num_replicas", "{body}");
    assert_eq!(
        fetch_status(http.get(server.control_url("/api/nothing"))).await,
        404
    );
    let method = http
        .post(server.control_url("/api/status"))
        .send()
        .await
        .expect("answers");
    assert_eq!(method.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_asked_for_and_off_loopback_one_is_required() {
    let (dir, path) = write_config(ECHO);
    let path = path.to_str().expect("utf-8").to_owned();
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0", "--control-token", "s3cret"],
        &[],
        Some(dir),
    );
    let http = client();
    let url = server.control_url("/api/status");
    assert_eq!(fetch_status(http.get(&url)).await, 401);
    assert_eq!(fetch_status(http.get(&url).bearer_auth("guess")).await, 401);
    assert_eq!(
        fetch_status(http.get(&url).bearer_auth("s3cret")).await,
        200
    );

    let (_dir, path) = write_config(ECHO);
    let refused = Command::new(ferroserve_bin())
        .args(["run", path.to_str().expect("utf-8"), "--port", "0"])
        .args(["--control-host", "0.0.0.0", "--control-port", "0"])
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("off loopback, with no token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_503_not_404_until_the_app_is_deployed() {
    // A Python backend that takes a while to import: the proxy listens meanwhile.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("slowish.py"),
        "import time\ntime.sleep(2)\n\ndef handler(request):\n    return 'ready'\n",
    )
    .expect("written");
    let yaml = format!(
        "backends:\n  echo: {{builtin: echo}}\n  slow: {{python: 'slowish:handler', working_dir: '{}'}}\nendpoints:\n  echo: {{route: /echo, backend: echo}}\n  slow: {{route: /slow, backend: slow}}\n",
        dir.path().display()
    );
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, yaml).expect("written");
    let mut child = Command::new(ferroserve_bin())
        .args(["run", path.to_str().expect("utf-8"), "--port", "0"])
        .env("FERROSERVE_CONTROL_PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let proxy = loop {
        let line = lines.next().expect("a line").expect("text");
        if let Some(rest) = line.strip_prefix("ferroserve proxy on http://") {
            break rest.split(' ').next().expect("an address").to_owned();
        }
    };
    let http = client();
    let early = http
        .get(format!("http://{proxy}/slow"))
        .send()
        .await
        .expect("answers");
    assert_eq!(early.status(), 503, "never 404 for a route in the file");
    assert!(early.headers().contains_key("retry-after"));
    assert_eq!(
        fetch_status(http.get(format!("http://{proxy}/-/ready"))).await,
        503
    );
    assert_eq!(
        fetch_status(http.get(format!("http://{proxy}/-/healthz"))).await,
        200,
        "alive while deploying"
    );
    // Once "listening" is printed, the app is deployed.
    for line in lines.by_ref() {
        if line.expect("text").starts_with("ferroserve listening on") {
            break;
        }
    }
    assert_eq!(
        fetch_status(http.get(format!("http://{proxy}/slow"))).await,
        200
    );
    assert_eq!(
        fetch_status(http.get(format!("http://{proxy}/-/ready"))).await,
        200
    );
    assert_eq!(
        fetch_status(http.get(format!("http://{proxy}/nope"))).await,
        404,
        "after the deploy, unknown routes are 404"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_bad_file_keeps_the_old_app() {
    let server = spawn_cli(ECHO);
    let http = client();
    let path = server.dir_path().join("app.yaml");
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    std::fs::write(
        &path,
        format!("{ECHO}  more: {{route: /more, backend: echo}}\n"),
    )
    .expect("written");
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http
        .get(server.url("/more"))
        .send()
        .await
        .expect("answers")
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "the new endpoint never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&path, "backends: [this is not an app").expect("written");
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http.get(server.url("/more"))
            .send()
            .await
            .expect("answers")
            .status(),
        200,
        "the old app serves"
    );
    assert!(
        server
            .stderr
            .lock()
            .expect("lock")
            .contains("SIGHUP: the file is not applied"),
        "the error is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_app_survives_kill_9_with_a_state_dir() {
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().to_str().expect("utf-8").to_owned();
    let start = || {
        spawn_listening(
            &ferroserve_bin(),
            &["start", "--port", "0", "--state-dir", &state_dir],
            &[],
            None,
        )
    };
    let server = start();
    let http = client();
    let app = "\
backends:
  echo: {builtin: echo, num_replicas: 2, max_queued_requests: 7}
  canary: {builtin: echo, user_config: {a: 1}}
endpoints:
  api: {route: /api, methods: [GET, POST], traffic: {echo: 0.75, canary: 0.25}}
";
    let put = http
        .put(server.control_url("/api/app"))
        .body(app)
        .send()
        .await
        .expect("answers");
    assert_eq!(put.status(), 202);
    status_until(&http, &server.control_url("/api/status"), |s| {
        running(s) && s["backends"]["echo"]["running_replicas"] == 2
    })
    .await;
    let before: Value = get_json(&http, server.control_url("/api/app")).await;
    let killed = Command::new("kill")
        .args(["-9", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    drop(server);

    let again = start();
    let after: Value = get_json(&http, again.control_url("/api/app")).await;
    assert_eq!(
        after, before,
        "the same endpoints, routes, traffic and configs"
    );
    let answer = http
        .post(again.url("/api"))
        .body("hi")
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_resolves_working_dirs_against_the_file_not_the_server() {
    let server = spawn_listening(&ferroserve_bin(), &["start", "--port", "0"], &[], None);
    // Run from `examples/`, with a relative path: `working_dir: .` is examples/python.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let control = server.control_url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(ferroserve_bin())
            .args(["deploy", "python/app.yaml", "--timeout-s", "60"])
            .current_dir(examples)
            .env("FERROSERVE_ADDRESS", control)
            .output()
            .expect("runs")
    })
    .await
    .expect("no panic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("deployed in"), "{stderr}");
    let counter = client()
        .get(server.url("/counter"))
        .send()
        .await
        .expect("answers");
    assert_eq!(counter.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_one_machine_serves_without_a_control_api() {
    // The default control port taken (by this listener, or by whatever holds it already).
    let _taken = std::net::TcpListener::bind("127.0.0.1:8265");
    let (dir, path) = write_config(ECHO);
    let path = path.to_str().expect("utf-8").to_owned();
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0"],
        &[("FERROSERVE_CONTROL_PORT", "8265")],
        Some(dir),
    );
    assert_eq!(server.control, None);
    assert_eq!(fetch_status(client().get(server.url("/echo"))).await, 200);
    let log = server.stderr.lock().expect("lock").clone();
    assert!(log.contains("no control API"), "{log}");
    // `start` has no app without its control API: there, a busy port is an error.
    let refused = Command::new(ferroserve_bin())
        .args(["start", "--port", "0"])
        .env("FERROSERVE_CONTROL_PORT", "8265")
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_web_pages_cannot_reach_the_control_api() {
    let server = spawn_cli(ECHO);
    let http = client();
    let url = server.control_url("/api/status");
    let from_a_page = http
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("answers");
    assert_eq!(from_a_page.status(), 403);
    let rebound = http
        .get(&url)
        .header("host", "evil.example")
        .send()
        .await
        .expect("answers");
    assert_eq!(rebound.status(), 403);
    assert_eq!(
        fetch_status(http.get(&url)).await,
        200,
        "tools on this machine"
    );
}
