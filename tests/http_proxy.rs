//! The HTTP proxy against the real server: routes, methods, admin routes, keep-alive,
//! response kinds, errors and graceful shutdown.

mod common;

use std::time::Duration;

use ferroserve::{BackendConfig, BackendError, BackendFactory, Request, Response};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{
    base_url, client, echo, fetch_json, fetch_status, fetch_text, get_json, handle_json, serve,
    serve_backend_as, serve_echo, serve_sleeper, status_and_text,
};

#[tokio::test]
async fn routes_match_the_longest_prefix() {
    let serve = serve().await;
    let config = BackendConfig::default();
    serve_backend_as(&serve, "api", "echo", echo(), config.clone(), "/api", &[]).await;
    serve_backend_as(&serve, "api_v2", "v2", echo(), config, "/api/v2", &[]).await;
    let base = base_url(&serve);
    let http = client();
    for (path, backend) in [
        ("/api", "echo"),
        ("/api/v1/x", "echo"),
        ("/api/v2", "v2"),
        ("/api/v2/m/1", "v2"),
    ] {
        let v = get_json(&http, format!("{base}{path}")).await;
        assert_eq!(v["backend"], backend, "path {path}");
        assert_eq!(v["path"], path);
    }
    let (status, body) = status_and_text(http.get(format!("{base}/apiv2"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("`/apiv2`") && body.contains("/-/routes"),
        "{body}"
    );

    let routes = get_json(&http, format!("{base}/-/routes")).await;
    assert_eq!(routes, json!({"/api": "api", "/api/v2": "api_v2"}));
    let health = fetch_status(http.get(format!("{base}/-/healthz"))).await;
    assert_eq!(health, StatusCode::OK);
    serve.shutdown().await;
}

#[tokio::test]
async fn methods_not_allowed_get_405_with_allow() {
    let serve = serve().await;
    serve_echo(&serve, "echo", "/e", &[Method::GET, Method::POST]).await;
    let r = client()
        .delete(format!("{}/e", base_url(&serve)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, POST");
    let body = r.text().await.expect("body");
    assert!(body.contains("DELETE"), "{body}");
    let r = fetch_status(client().post(format!("{}/e", base_url(&serve)))).await;
    assert_eq!(r, StatusCode::OK);
    serve.shutdown().await;
}

#[tokio::test]
async fn echo_describes_the_request_exactly() {
    let serve = serve().await;
    serve_echo(&serve, "echo", "/e", &[Method::POST]).await;
    let v = fetch_json(
        client()
            .post(format!("{}/e/sub?a=1&b=two%20words", base_url(&serve)))
            .header("X-Custom", "Yes")
            .header("X-SERVE-CALL-METHOD", "predict")
            .body("payload"),
    )
    .await;
    let object = v.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "backend",
            "body",
            "headers",
            "http_method",
            "method",
            "path",
            "query",
            "replica",
            "traceparent"
        ]
    );
    assert_eq!(v["backend"], "echo");
    assert_eq!(v["replica"], "echo#1");
    assert_eq!(v["method"], "predict");
    assert_eq!(v["http_method"], "POST");
    assert_eq!(v["path"], "/e/sub");
    assert_eq!(v["query"], json!({"a": "1", "b": "two words"}));
    assert_eq!(v["headers"]["x-custom"], "Yes");
    assert_eq!(v["body"], "payload");
    serve.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let serve = serve().await;
    serve_echo(&serve, "echo", "/e", &[Method::GET]).await;
    let mut stream = tokio::net::TcpStream::connect(serve.local_addr().expect("addr"))
        .await
        .expect("connect");
    for i in 0..3 {
        stream
            .write_all(format!("GET /e?i={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        // Read one whole response: headers, then content-length bytes.
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed a keep-alive connection");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some((head, body)) = got.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    break;
                }
            }
        }
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.contains(&format!(r#""query":{{"i":"{i}"}}"#)), "{got}");
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn every_kind_of_answer_goes_on_the_wire_as_given() {
    let serve = serve().await;
    let kinds = BackendFactory::function(|req: Request| async move {
        Ok(match req.query_param("kind").as_deref() {
            Some("bytes") => Response::bytes(vec![0u8, 1, 2]),
            Some("json") => Response::json(&json!({"ok": true}))?,
            Some("custom") => Response::text("Hello, world!")
                .with_status(StatusCode::from_u16(123).map_err(BackendError::from)?)
                .with_media_type(HeaderValue::from_static("text/plain"))
                .try_with_header("x-model", "v7")?,
            Some("value") => Response::value(42u32),
            _ => Response::from("text"),
        })
    });
    let config = BackendConfig::default();
    serve_backend_as(&serve, "k", "kinds", kinds, config, "/k", &[]).await;
    let base = base_url(&serve);
    let http = client();
    let get = |kind: &str| http.get(format!("{base}/k?kind={kind}")).send();

    let r = get("text").await.expect("request");
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().await.expect("body"), "text");
    let r = get("bytes").await.expect("request");
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.expect("body").as_ref(), [0, 1, 2]);
    let r = get("json").await.expect("request");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"ok": true}));
    // A raw socket, to see the status line and headers exactly as sent.
    let raw = common::raw_get(serve.local_addr().expect("addr"), "/k?kind=custom").await;
    // 123 is informational to HTTP clients; it arrives as given, then the connection closes.
    assert!(raw.starts_with("HTTP/1.1 123 Informational\r\n"), "{raw}");
    assert!(raw.contains("connection: close\r\n"), "{raw}");
    assert!(raw.contains("content-type: text/plain\r\n"), "{raw}");
    assert!(
        raw.contains("x-model: v7\r\n") && raw.ends_with("Hello, world!"),
        "{raw}"
    );
    let r = get("value").await.expect("request");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.text().await.expect("body").contains("Rust value"));
    serve.shutdown().await;
}

#[tokio::test]
async fn errors_and_panics_become_500s_and_serving_goes_on() {
    let serve = serve().await;
    let flaky = BackendFactory::function(|req: Request| async move {
        match req.query_param("do").as_deref() {
            Some("fail") => Err(BackendError::msg("model not loaded")),
            Some("teapot") => {
                Err(BackendError::msg("short and stout").with_status(StatusCode::IM_A_TEAPOT))
            }
            Some("panic") => panic!("index out of bounds in user code"),
            _ => Ok(Response::from("fine")),
        }
    });
    let config = BackendConfig::default();
    serve_backend_as(&serve, "f", "flaky", flaky, config, "/f", &[]).await;
    let base = base_url(&serve);
    let http = client();
    let (status, body) = status_and_text(http.get(format!("{base}/f?do=fail"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("backend `flaky`") && body.contains("model not loaded"),
        "{body}"
    );
    let teapot = fetch_status(http.get(format!("{base}/f?do=teapot"))).await;
    assert_eq!(teapot, StatusCode::IM_A_TEAPOT);
    for _ in 0..3 {
        let (status, body) = status_and_text(http.get(format!("{base}/f?do=panic"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("panicked") && body.contains("index out of bounds"),
            "{body}"
        );
    }
    let body = fetch_text(http.get(format!("{base}/f"))).await;
    assert_eq!(body, "fine", "the replica still serves");
    serve.shutdown().await;
}

#[tokio::test]
async fn endpoints_without_a_route_are_not_on_http() {
    let serve = serve().await;
    let config = BackendConfig::default();
    serve_backend_as(&serve, "internal", "echo", echo(), config, None, &[]).await;
    let routes = get_json(&client(), format!("{}/-/routes", base_url(&serve))).await;
    assert_eq!(routes, json!({}));
    let handle = serve.get_handle("internal").expect("handle");
    let answer: Value = handle_json(&handle, "x").await;
    assert_eq!(answer["backend"], "echo");
    serve.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let serve = serve().await;
    let counter = serve_sleeper(&serve, BackendConfig::default()).await;
    let url = format!("{}/slow?ms=500", base_url(&serve));
    let addr = serve.local_addr().expect("addr");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    while counter.total() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    serve.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "shutdown waited for the request"
    );
    let r = in_flight
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("body"), "slow#1");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
