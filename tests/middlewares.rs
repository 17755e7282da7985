//! HTTP middlewares against the real server: CORS (the FAQ's example, preflight and actual
//! request), compression, request ids, timeouts, body limits, and custom tower layers.

mod common;

use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, HttpOptions, Middleware, ProxyBody, Serve};
use http::{HeaderValue, Method};
use serde_json::Value;

use common::{
    base_url, client, cors_preflight, fetch_status, serve_echo, serve_sleeper, spawn_cli,
    status_and_text,
};

const CORS_APP: &str = "\
http:
  middlewares:
    - cors: {allow_origins: ['*'], allow_methods: ['*']}
backends:
  echo: {builtin: echo}
endpoints:
  echo:
    route: /echo
    methods: [GET, POST]
    backend: echo
";

#[tokio::test]
async fn the_faq_cors_example_answers_preflight_and_actual_requests() {
    let server = spawn_cli(CORS_APP);
    let http = client();
    let preflight = cors_preflight(&http, server.url("/echo"))
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(preflight.headers()["access-control-allow-methods"], "*");

    let actual = http
        .post(server.url("/echo"))
        .header("Origin", "https://app.example")
        .body("hi")
        .send()
        .await
        .expect("request");
    assert_eq!(actual.status(), 200);
    assert_eq!(actual.headers()["access-control-allow-origin"], "*");
    let v: Value = actual.json().await.expect("json");
    assert_eq!(v["body"], "hi", "the request reached the backend");
}

async fn serve_with(middlewares: Vec<Middleware>) -> (Serve, String) {
    let mut options = HttpOptions::new("127.0.0.1", 0);
    options.middlewares = middlewares;
    let serve = Serve::start(options).await.expect("starts");
    serve_echo(&serve, "echo", "/echo", &[Method::GET, Method::POST]).await;
    let base = base_url(&serve);
    (serve, base)
}

#[tokio::test]
async fn cors_with_credentials_reflects_the_origin() {
    let cors = ferroserve::CorsOptions {
        allow_origins: vec!["*".into()],
        allow_methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["x-token".into()],
        allow_credentials: true,
        max_age: Some(600),
        expose_headers: vec![],
    };
    let (serve, base) = serve_with(vec![Middleware::Cors(cors)]).await;
    let preflight = cors_preflight(&client(), format!("{base}/echo"))
        .header("Access-Control-Request-Headers", "x-token")
        .send()
        .await
        .expect("preflight");
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    serve.shutdown().await;
}

#[tokio::test]
async fn compression_follows_accept_encoding() {
    let (serve, base) = serve_with(vec![Middleware::Compression]).await;
    let http = client();
    let long = "x".repeat(2000);
    let gzipped = http
        .post(format!("{base}/echo"))
        .header("Accept-Encoding", "gzip")
        .body(long.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let bytes = gzipped.bytes().await.expect("body");
    assert_eq!(&bytes[..2], [0x1f, 0x8b], "a gzip stream");
    assert!(
        bytes.len() < 1000,
        "2 KB of x compress well: {} bytes",
        bytes.len()
    );
    let plain = http
        .post(format!("{base}/echo"))
        .body(long)
        .send()
        .await
        .expect("request");
    assert!(plain.headers().get("content-encoding").is_none());
    serve.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_set_or_passed_on() {
    let (serve, base) = serve_with(vec![Middleware::RequestId]).await;
    let http = client();
    let r = http
        .get(format!("{base}/echo"))
        .send()
        .await
        .expect("request");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["headers"]["x-request-id"],
        id.as_str(),
        "the backend sees the same id"
    );

    let r = http
        .get(format!("{base}/echo"))
        .header("x-request-id", "caller-42")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-request-id"], "caller-42");
    serve.shutdown().await;
}

#[tokio::test]
async fn timeouts_answer_504_and_free_the_slot() {
    let mut options = HttpOptions::new("127.0.0.1", 0);
    options.middlewares = vec![Middleware::Timeout(Duration::from_millis(200))];
    let serve = Serve::start(options).await.expect("starts");
    let config = BackendConfig::default()
        .max_concurrent_queries(1)
        .max_queued_requests(0);
    serve_sleeper(&serve, config).await;
    let base = base_url(&serve);
    let started = Instant::now();
    let (status, reason) = status_and_text(client().get(format!("{base}/slow?ms=5000"))).await;
    assert_eq!(status, 504);
    assert_eq!(
        reason,
        "no answer within the 0.2s the timeout middleware allows\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The timed-out request gave its only slot back: the next one runs (no 503).
    let status = fetch_status(client().get(format!("{base}/slow?ms=10"))).await;
    assert_eq!(status, 200);
    serve.shutdown().await;
}

#[tokio::test]
async fn body_limits_answer_413() {
    let (serve, base) = serve_with(vec![Middleware::BodyLimit(1024)]).await;
    let http = client();
    let url = format!("{base}/echo");
    let small = fetch_status(http.post(&url).body("x".repeat(100))).await;
    assert_eq!(small, 200);
    let big = fetch_status(http.post(&url).body("x".repeat(4096))).await;
    assert_eq!(big, 413);
    // A chunked body has no length up front; it is cut off while read.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>("y".repeat(512))));
    let chunked = fetch_status(http.post(&url).body(reqwest::Body::wrap_stream(chunks))).await;
    assert_eq!(chunked, 413);
    // Each 413 says why, as every error answer does.
    let (status, reason) = status_and_text(http.post(&url).body("x".repeat(4096))).await;
    assert_eq!(status, 413);
    assert_eq!(
        reason,
        "the request body is larger than the 1024 bytes allowed here\n"
    );
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>("y".repeat(512))));
    let (status, reason) =
        status_and_text(http.post(&url).body(reqwest::Body::wrap_stream(chunks))).await;
    assert_eq!(status, 413);
    assert_eq!(
        reason,
        "the request body is larger than the 1024 bytes allowed here\n"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn any_tower_layer_can_be_added_from_rust() {
    let stamp = tower::util::MapResponseLayer::new(|mut response: http::Response<ProxyBody>| {
        response
            .headers_mut()
            .insert("x-served-by", HeaderValue::from_static("ferroserve"));
        response
    });
    let mut options = HttpOptions::new("127.0.0.1", 0).layer(stamp);
    options.middlewares.insert(0, Middleware::RequestId);
    let serve = Serve::start(options).await.expect("starts");
    serve_echo(&serve, "echo", "/echo", &[]).await;
    let base = base_url(&serve);
    let r = client()
        .get(format!("{base}/echo"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-served-by"], "ferroserve");
    assert!(
        r.headers().contains_key("x-request-id"),
        "both middlewares ran"
    );
    // 404s and admin routes go through the middlewares too.
    let r = client()
        .get(format!("{base}/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-served-by"], "ferroserve");
    serve.shutdown().await;
}

#[test]
fn bad_middleware_config_names_line_and_key() {
    let registry = ferroserve::Registry::new();
    let err = ferroserve::AppConfig::from_yaml(
        "http:\n  middlewares:\n    - gzip: {}\n",
        "app.yaml",
        &registry,
    )
    .expect_err("unknown middleware");
    assert_eq!(err.line, 3, "{err}");
    assert!(err.key.starts_with("http.middlewares"), "{err}");
    assert!(err.message.contains("gzip"), "{err}");
    let err = ferroserve::AppConfig::from_yaml(
        "http:\n  middlewares:\n    - timeout: -5\n",
        "app.yaml",
        &registry,
    )
    .expect_err("negative timeout");
    assert_eq!(
        (err.line, err.key.as_str()),
        (3, "http.middlewares[0]"),
        "{err}"
    );
    let app = ferroserve::AppConfig::from_yaml(
        "http:\n  middlewares:\n    - request_id: {}\n    - compression: {}\n    - timeout: 30\n    - body_limit: 1048576\n",
        "app.yaml",
        &registry,
    )
    .expect("valid");
    assert_eq!(
        app.http.middlewares,
        [
            Middleware::RequestId,
            Middleware::Compression,
            Middleware::Timeout(Duration::from_secs(30)),
            Middleware::BodyLimit(1_048_576)
        ]
    );
}

#[tokio::test]
async fn trusted_hosts_and_https_redirects_as_starlette_does() {
    let server = spawn_cli(
        "http:\n  middlewares:\n    - trusted_host: {allowed_hosts: [good.example, '*.ok.example']}\n    - https_redirect: {}\nbackends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {route: /echo, methods: [GET, POST], backend: echo}\n",
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |host: &'static str, https: bool| {
        let mut request = http.get(server.url("/echo?q=1")).header("host", host);
        if https {
            request = request.header("x-forwarded-proto", "https");
        }
        request.send()
    };
    let evil = get("evil.example", true).await.expect("answers");
    assert_eq!(evil.status(), 400);
    assert!(
        evil.text()
            .await
            .expect("body")
            .contains("invalid host header `evil.example`"),
        "the reason"
    );
    assert_eq!(
        get("good.example:8000", true)
            .await
            .expect("answers")
            .status(),
        200
    );
    assert_eq!(
        get("api.ok.example", true).await.expect("answers").status(),
        200
    );
    assert_eq!(
        get("ok.example", true).await.expect("answers").status(),
        400,
        "a subdomain only"
    );
    let plain = get("good.example:8000", false).await.expect("answers");
    assert_eq!(plain.status(), 307);
    assert_eq!(plain.headers()["location"], "https://good.example/echo?q=1");
}
