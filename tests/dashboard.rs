//! The dashboard in a real browser: Debian's chromium, driven by puppeteer-core
//! (`dashboard/test/browser.mjs`), loads the page of a real server under traffic; what it
//! shows must match `/api/status`, its charts must have points, and a traffic change made
//! in its form must reach the server. Without `--cluster` it has no Cluster panel (cluster
//! mode is `dashboard_cluster.rs`'s). Screenshots go to `target/dashboard-screenshots/`.
//!
//! Without chromium (or node) the tests print a SKIP line, unless
//! `FERROSERVE_REQUIRE_BROWSER=1` (CI) makes that a failure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::browser::{browse, browser_ready, expected, rows, screenshots};
use common::{client, ferroserve_bin, get_json, spawn_cli, spawn_listening, write_config};
use serde_json::Value;

const APP: &str = "\
backends:
  echo: {builtin: echo, num_replicas: 2}
  hello: {builtin: static, init_args: {body: \"hello\\n\"}}
  hello_v2: {builtin: static, init_args: {body: \"hello v2\\n\"}}
endpoints:
  echo: {route: /echo, methods: [GET, POST], backend: echo}
  hello: {route: /hello, traffic: {hello: 0.9, hello_v2: 0.1}, shadow: {echo: 0.5}}
";

/// Polls `GET /api/status` (with `token`) until the app runs and is ready.
async fn running_status(http: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = common::fetch_json(request).await;
        if status["status"] == "RUNNING" && status["ready"] == true {
            return status;
        }
        assert!(Instant::now() < deadline, "never ready: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests to each route until `stop`, at most 2 minutes.
fn send_traffic(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for path in ["/hello", "/echo?x=1"] {
                let _ = http.get(format!("{base}{path}")).send().await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_app_charts_it_and_changes_traffic() {
    if !browser_ready() {
        return;
    }
    let started = Instant::now();
    let server = spawn_cli(APP);
    let http = client();
    let status_url = server.control_url("/api/status");
    let before = running_status(&http, &status_url, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(server.url(""), stop.clone());

    let shots = screenshots("");
    let control = server.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "hello", "hello=0.3,hello_v2=0.7"]).await;
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.expect("the traffic task ends");
    assert!(sent > 0);

    // The tables show what /api/status says.
    let [endpoints, backends, replicas] = expected(&before);
    let cols = ["name", "route", "methods", "traffic", "shadow"];
    assert_eq!(rows(&report, "endpoints", &cols), endpoints);
    assert_eq!(
        rows(&report, "backends", &["name", "status", "replicas"]),
        backends
    );
    let cols = ["id", "state", "pid", "restarts"];
    assert_eq!(rows(&report, "replicas", &cols), replicas);
    assert_eq!(replicas.len(), 4, "{before:#}");
    // A single node: no Cluster panel.
    assert_eq!(before.get("cluster"), None, "{before:#}");
    assert_eq!(report["cluster"], Value::Null, "{report:#}");

    // The charts have points.
    let points = &report["points"];
    assert!(
        points["rps"].as_u64() > Some(0),
        "no points in the endpoint's chart: {report:#}"
    );
    assert!(points["latency"].as_u64() > Some(0), "{report:#}");
    assert!(
        points["overall"].as_u64() > Some(0),
        "no points in the overall chart: {report:#}"
    );

    // The change made in the page reached the server.
    assert_eq!(report["result"]["outcome"], "ok", "{report:#}");
    assert!(
        report["confirmText"]
            .as_str()
            .is_some_and(|t| t.contains("hello 30%")),
        "{report:#}"
    );
    let after: Value = get_json(&http, &status_url).await;
    let weights = &after["endpoints"]["hello"]["traffic"];
    for (backend, wanted) in [("hello", 0.3), ("hello_v2", 0.7)] {
        let weight = weights[backend].as_f64().unwrap_or(f64::NAN);
        assert!((weight - wanted).abs() < 1e-9, "{backend}: {weights}");
    }
    assert!(shots.join("dashboard.png").exists());
    eprintln!(
        "dashboard test: {sent} requests sent, {:.1} s, screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it() {
    if !browser_ready() {
        return;
    }
    let (dir, path) = write_config(APP);
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0"],
        &[("FERROSERVE_CONTROL_TOKEN", "s3cret-token")],
        Some(dir),
    );
    let http = client();
    let status_url = server.control_url("/api/status");
    let status = running_status(&http, &status_url, Some("s3cret-token")).await;
    let shots = screenshots("token");
    let control = server.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "--token", "s3cret-token"]).await;
    assert_eq!(report["askedForToken"], true, "{report:#}");
    let [endpoints, _, _] = expected(&status);
    let names: Vec<&String> = endpoints.iter().map(|row| &row[0]).collect();
    let shown = rows(&report, "endpoints", &["name"]);
    let shown: Vec<&String> = shown.iter().map(|row| &row[0]).collect();
    assert_eq!(shown, names);
    assert_eq!(report["cluster"], Value::Null, "{report:#}");
}

/// What needs no browser: the page and its files without a token, the API still behind
/// it, and the Origin rule for token-less servers (the page's own origin only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_no_token_and_only_its_own_origin_may_write() {
    let (dir, path) = write_config(APP);
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let guarded = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0"],
        &[("FERROSERVE_CONTROL_TOKEN", "s3cret-token")],
        Some(dir),
    );
    let http = client();
    let page = http
        .get(guarded.control_url("/"))
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text()
            .await
            .expect("a body")
            .contains("/assets/app.js")
    );
    for (asset, kind) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        (
            "/assets/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let answer = http
            .get(guarded.control_url(asset))
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status(), 200, "{asset}");
        assert_eq!(answer.headers()["content-type"], kind, "{asset}");
        assert_eq!(answer.headers()["cache-control"], "no-cache", "{asset}");
    }
    let missing = http
        .get(guarded.control_url("/assets/nope.js"))
        .send()
        .await;
    assert_eq!(missing.expect("answers").status(), 404);
    let status = http.get(guarded.control_url("/api/status")).send().await;
    assert_eq!(status.expect("answers").status(), 401, "the API still asks");

    // Without a token: the page's own origin may write; any other origin may not.
    let open = spawn_cli(APP);
    let url = open.control_url("/api/endpoints/hello/traffic");
    let own = format!("http://{}", open.control.expect("a control API"));
    let body = serde_json::json!({"hello": 0.5, "hello_v2": 0.5});
    let from = |origin: &str| http.put(&url).header("origin", origin).json(&body).send();
    assert_eq!(from(&own).await.expect("answers").status(), 200);
    for other in ["http://localhost:1", "https://evil.example", "null"] {
        let refused = from(other).await.expect("answers");
        assert_eq!(refused.status(), 403, "{other}");
    }
}
