//! `/metrics`, the dashboard's series and the history of changes, on the real binary: known
//! traffic gives known counts under Ray Serve's names, `promtool` accepts the text, and the
//! series and history show what happened.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, fetch_status, get_json, spawn_cli};
use serde_json::{Value, json};

const APP: &str = "\
backends:
  hello: {builtin: static, init_args: {body: hi}}
  echo: {builtin: echo, num_replicas: 2}
endpoints:
  hello: {route: /hello, backend: hello}
  echo: {route: /echo, methods: [GET, POST], backend: echo}
";

/// The value of the one sample of `text` whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect();
    assert_eq!(values.len(), 1, "one sample for {series} in:\n{text}");
    values[0]
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    let kind = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.expect("text")
}

/// `promtool check metrics` on `text`: its exit status and what it said. `None` without
/// promtool, unless `FERROSERVE_REQUIRE_PROMTOOL` is set (CI installs it).
fn promtool(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("FERROSERVE_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here (apt-get install prometheus): {e}"
            );
            common::skip(&format!(
                "promtool is not installed (apt-get install prometheus): {e}"
            ));
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("promtool reads");
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), said))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_known_counts_under_rays_names() {
    let server = spawn_cli(APP);
    let http = client();
    for _ in 0..7 {
        assert_eq!(fetch_status(http.get(server.url("/hello"))).await, 200);
    }
    for _ in 0..3 {
        assert_eq!(
            fetch_status(http.post(server.url("/echo")).body("x")).await,
            200
        );
    }
    assert_eq!(fetch_status(http.delete(server.url("/echo"))).await, 405);
    assert_eq!(fetch_status(http.get(server.url("/nowhere"))).await, 404);

    let text = scrape(&http, &server.control_url("/metrics")).await;
    let app = r#"application="default""#;
    for (series, value) in [
        (
            format!(
                r#"ray_serve_num_http_requests_total{{route="/hello",method="GET",{app},status_code="200"}}"#
            ),
            7.0,
        ),
        (
            format!(
                r#"ray_serve_num_http_requests_total{{route="/echo",method="POST",{app},status_code="200"}}"#
            ),
            3.0,
        ),
        (
            format!(
                r#"ray_serve_num_http_error_requests_total{{route="/echo",method="DELETE",{app},error_code="405"}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"ray_serve_num_http_error_requests_total{{route="",method="GET",{app},error_code="404"}}"#
            ),
            1.0,
        ),
        (
            format!(r#"ray_serve_http_request_latency_ms_count{{route="/hello",{app}}}"#),
            7.0,
        ),
        (
            format!(
                r#"ray_serve_http_request_latency_ms_bucket{{le="+Inf",route="/hello",{app}}}"#
            ),
            7.0,
        ),
        (
            format!(r#"ray_serve_deployment_request_counter_total{{deployment="hello",{app}}}"#),
            7.0,
        ),
        (
            format!(r#"ray_serve_deployment_request_counter_total{{deployment="echo",{app}}}"#),
            3.0,
        ),
        (
            format!(r#"ray_serve_deployment_error_counter_total{{deployment="echo",{app}}}"#),
            0.0,
        ),
        (
            format!(
                r#"ray_serve_deployment_processing_latency_ms_count{{deployment="echo",{app}}}"#
            ),
            3.0,
        ),
        (
            format!(r#"ferroserve_deployment_queue_seconds_count{{deployment="echo",{app}}}"#),
            3.0,
        ),
        (
            format!(r#"ferroserve_deployment_compute_seconds_count{{deployment="echo",{app}}}"#),
            3.0,
        ),
        (
            format!(r#"ray_serve_deployment_replica_starts_total{{deployment="echo",{app}}}"#),
            2.0,
        ),
        (
            format!(
                r#"ray_serve_deployment_replica_healthy{{deployment="echo",replica="echo#1",{app}}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"ray_serve_replica_processing_queries{{deployment="echo",replica="echo#2",{app}}}"#
            ),
            0.0,
        ),
        (
            format!(r#"ray_serve_deployment_queued_queries{{deployment="echo",{app}}}"#),
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), value, "{series}");
    }
    if let Some((ok, said)) = promtool(&text) {
        // Only what Ray's own names break: units in the name (`_ms`) and `counter` in it.
        let inherited = |line: &str| {
            line.starts_with("ray_serve_")
                && (line.ends_with("metric names should not contain abbreviated units")
                    || line.ends_with("metric name should not include type 'counter'"))
        };
        let problems: Vec<&str> = said.lines().filter(|l| !inherited(l)).collect();
        assert!(
            problems.is_empty() && (ok || said.lines().count() > 0),
            "promtool: {said}\n{text}"
        );
    }
    // A scraper that asks for OpenMetrics gets it.
    let open = http
        .get(server.control_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .expect("answers");
    assert!(
        open.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|k| k.starts_with("application/openmetrics-text"))
    );
    let open = open.text().await.expect("text");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    assert!(open.contains("# TYPE ray_serve_num_http_requests counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_history_and_scaling_show_what_happened() {
    let server = spawn_cli(APP);
    let http = client();
    // A second of traffic, then wait for the sampler to take it.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut sent = 0;
    while Instant::now() < until {
        assert_eq!(fetch_status(http.get(server.url("/hello"))).await, 200);
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let series: Value = get_json(&http, &server.control_url("/api/series?endpoint=hello")).await;
    let rps: Vec<f64> = serde_json::from_value(series["rps"].clone()).expect("numbers");
    assert!(!rps.is_empty(), "{series:#}");
    let counted: f64 = rps.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let sent = sent as f64;
    assert!(
        counted <= sent && counted >= sent * 0.5,
        "{counted} of {sent} requests in {series:#}"
    );
    assert_eq!(series["t"].as_array().map(Vec::len), Some(rps.len()));
    assert!(
        series["p99_ms"]
            .as_array()
            .expect("list")
            .iter()
            .any(Value::is_number)
    );
    let last = series["t"].as_array().and_then(|t| t.last()).cloned();
    let later: Value = get_json(
        &http,
        &server.control_url(&format!(
            "/api/series?endpoint=hello&since={}",
            last.expect("a point")
        )),
    )
    .await;
    assert!(
        later["t"].as_array().is_some_and(|t| t.len() <= 1),
        "{later:#}"
    );
    let backend: Value = get_json(&http, &server.control_url("/api/series?backend=hello")).await;
    assert!(backend["rps"].as_array().is_some_and(|r| !r.is_empty()));
    let latest: Value = get_json(&http, &server.control_url("/api/series/latest")).await;
    assert!(
        latest["endpoints"]["hello"]["rps"].as_f64().is_some(),
        "{latest:#}"
    );
    assert!(latest["backends"]["echo"].is_object(), "{latest:#}");
    let unknown = http
        .get(server.control_url("/api/series?endpoint=nope"))
        .send()
        .await
        .expect("answers");
    assert_eq!(unknown.status(), 404);

    // Scaling through the API shows in status and in the history.
    let scaled = http
        .put(server.control_url("/api/backends/echo/replicas"))
        .json(&json!({ "num_replicas": 3 }))
        .send()
        .await
        .expect("answers");
    assert_eq!(scaled.status(), 200);
    let status: Value = scaled.json().await.expect("the new status");
    assert_eq!(
        status["backends"]["echo"]["target_replicas"], 3,
        "{status:#}"
    );
    let bad = http
        .put(server.control_url("/api/backends/echo/replicas"))
        .json(&json!({ "num_replicas": "many" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(bad.status(), 400);
    let missing = http
        .put(server.control_url("/api/backends/nope/replicas"))
        .json(&json!({ "num_replicas": 1 }))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);
    let history: Value = get_json(&http, &server.control_url("/api/history")).await;
    let changes = history["changes"].as_array().expect("a list");
    assert!(
        changes[0]["what"]
            .as_str()
            .is_some_and(|w| w.contains("`echo`") && w.contains("3 replicas")),
        "{history:#}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["what"].as_str().is_some_and(|w| w.starts_with("deploy "))),
        "the first deploy is there: {history:#}"
    );
    assert!(changes[0]["at_s"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_a_499_and_a_deployment_error() {
    let app = "\
backends:
  slow: {python: 'slow:handler', working_dir: .}
endpoints:
  slow: {route: /slow, backend: slow}
";
    let slow = "import asyncio\n\nasync def handler(request):\n    await asyncio.sleep(30)\n";
    let server = common::spawn_cli_with(app, &[("slow.py", slow)], &[]);
    let http = client();
    let left = http
        .get(server.url("/slow"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(left.is_err(), "the client gave up");
    let app = r#"application="default""#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&http, &server.control_url("/metrics")).await;
        let closed = format!(
            r#"ray_serve_num_http_requests_total{{route="/slow",method="GET",{app},status_code="499"}}"#
        );
        if text.contains(&closed) {
            assert_eq!(sample(&text, &closed), 1.0);
            let errors =
                format!(r#"ray_serve_deployment_error_counter_total{{deployment="slow",{app}}}"#);
            assert_eq!(sample(&text, &errors), 1.0, "the dropped call is an error");
            break;
        }
        assert!(Instant::now() < deadline, "no 499 counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_middleware_makes_itself_are_counted_once() {
    let server = spawn_cli(
        "\
http:
  middlewares:
    - trusted_host: {allowed_hosts: [good.example]}
backends:
  hello: {builtin: static, init_args: {body: hi}}
endpoints:
  hello: {route: /hello, backend: hello}
",
    );
    let http = client();
    let refused = http
        .get(server.url("/hello"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 400, "the middleware refuses the host");
    let served = http
        .get(server.url("/hello"))
        .header("host", "good.example")
        .send()
        .await
        .expect("answers");
    assert_eq!(served.status(), 200);
    let text = scrape(&http, &server.control_url("/metrics")).await;
    let app = r#"application="default""#;
    let by_middleware = format!(
        r#"ray_serve_num_http_requests_total{{route="",method="GET",{app},status_code="400"}}"#
    );
    assert_eq!(sample(&text, &by_middleware), 1.0, "{text}");
    let by_endpoint = format!(
        r#"ray_serve_num_http_requests_total{{route="/hello",method="GET",{app},status_code="200"}}"#
    );
    assert_eq!(
        sample(&text, &by_endpoint),
        1.0,
        "counted once, by the endpoint"
    );
    assert!(!text.contains(r#"route="",method="GET",application="default",status_code="200""#));
}
