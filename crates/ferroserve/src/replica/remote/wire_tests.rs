//! Round trips of the peer protocol: every payload kind, HTTP parts, every error kind.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::*;
use crate::error::RETRY_AFTER;
use crate::request::{Arg, HttpParts, Origin, Request};

fn head() -> CallHead {
    CallHead {
        backend: "b".to_owned(),
        replica: "b#1".to_owned(),
        request_id: "r-1".to_owned(),
        deadline: Some(Duration::from_millis(1500)),
    }
}

/// `req` sent and received: the head and the request the owner sees.
fn round_trip(req: &Request) -> (CallHead, Request) {
    let sent = encode_call(&head(), req, "127.0.0.1:1").expect("encodes");
    assert_eq!(sent.uri().path(), CALL_PATH);
    let (parts, body) = sent.into_parts();
    let head = decode_head(&parts.headers).expect("head decodes");
    let req = decode_request(&parts.headers, body).expect("request decodes");
    (head, req)
}

#[test]
fn every_payload_kind_crosses() {
    let text = Request::from_arg(Arg::from("héllo")).with_method_name("ünïcode method");
    let (head_back, got) = round_trip(&text);
    assert_eq!(head_back, head());
    assert_eq!(got.origin(), Origin::Handle);
    assert_eq!(got.method_name(), "ünïcode method");
    assert!(matches!(got.payload(), Payload::Text(b) if b == "héllo"));

    let bytes = Request::from_arg(Arg::from(vec![0u8, 255, 10]));
    let (_, got) = round_trip(&bytes);
    assert!(matches!(got.payload(), Payload::Bytes(b) if b[..] == [0, 255, 10]));

    let json = Request::from_arg(serde_json::json!({"a": [1, 2.5, null]}).into());
    let (_, got) = round_trip(&json);
    assert_eq!(
        got.json::<serde_json::Value>().expect("json"),
        serde_json::json!({"a": [1, 2.5, null]})
    );
    assert!(matches!(got.payload(), Payload::Json(_)));

    let mut pickled =
        Request::from_payload(Payload::Pickled(Bytes::from_static(b"\x80\x04K\x05.")));
    pickled.python_caller = true;
    let (_, got) = round_trip(&pickled);
    assert!(got.python_caller);
    assert!(matches!(got.payload(), Payload::Pickled(b) if b[..] == b"\x80\x04K\x05."[..]));
    assert!(!round_trip(&bytes).1.python_caller);
}

#[test]
fn rust_values_are_refused_before_sending() {
    let value = Request::from_arg(Arg::value(3u8));
    let err = encode_call(&head(), &value, "127.0.0.1:1").expect_err("a Rust value");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(err.to_string().contains("Rust value"), "{err}");
}

#[test]
fn http_requests_keep_their_parts_and_origin() {
    let mut headers = HeaderMap::new();
    headers.insert("connection", "keep-alive".parse().expect("value"));
    headers.append("x-many", "1".parse().expect("value"));
    headers.append("x-many", "2".parse().expect("value"));
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("value"),
    );
    let parts = HttpParts {
        method: Method::PUT,
        uri: "/p/x?a=1&b=%20".parse().expect("uri"),
        headers,
    };
    let req = Request::from_http(parts, Bytes::from_static(b"body")).with_method_name("predict");
    let (_, got) = round_trip(&req);
    assert_eq!(got.origin(), Origin::Http);
    assert_eq!(got.method_name(), "predict");
    assert_eq!(got.http_method(), Some(&Method::PUT));
    assert_eq!(got.query_param("b").as_deref(), Some(" "));
    assert_eq!(got.header("connection"), Some("keep-alive"));
    let many: Vec<_> = got.headers().get_all("x-many").iter().collect();
    assert_eq!(many, ["1", "2"]);
    assert_eq!(got.text().expect("text"), "body");
    assert_eq!(got.traceparent(), req.traceparent());

    // A handle call with HTTP options stays a handle call.
    let shaped = Request::from_arg(Arg::from("x")).with_http(HttpParts {
        method: Method::GET,
        uri: "/?q=1".parse().expect("uri"),
        headers: HeaderMap::new(),
    });
    let (_, got) = round_trip(&shaped);
    assert_eq!(got.origin(), Origin::Handle);
    assert_eq!(got.query_param("q").as_deref(), Some("1"));
}

#[test]
fn malformed_calls_are_bad_requests_not_panics() {
    let mut headers = HeaderMap::new();
    assert!(decode_head(&headers).is_err(), "no backend");
    headers.insert(BACKEND.clone(), "b".parse().expect("v"));
    headers.insert(REPLICA.clone(), "%ff%fe".parse().expect("v"));
    assert!(decode_head(&headers).is_err(), "not UTF-8 once decoded");
    headers.insert(REPLICA.clone(), "b#1".parse().expect("v"));
    headers.insert(DEADLINE.clone(), "-5".parse().expect("v"));
    assert!(decode_head(&headers).is_err(), "a bad deadline");
    headers.insert(DEADLINE.clone(), u64::MAX.into());
    let head = decode_head(&headers).expect("a huge deadline is capped");
    assert_eq!(head.deadline, Some(Duration::from_secs(86_400)));
    for (name, value) in [
        (&PAYLOAD, "json"),
        (&PAYLOAD, "tensor"),
        (&ORIGIN, "http"),
        (&ORIGIN, "carrier pigeon"),
        (&HTTP_METHOD, "GET"),
    ] {
        let mut headers = headers.clone();
        headers.insert(name.clone(), value.parse().expect("v"));
        let err = decode_request(&headers, Bytes::from_static(b"{not json")).expect_err("refused");
        assert_eq!(
            err.status(),
            StatusCode::BAD_REQUEST,
            "{name}: {value}: {err}"
        );
    }
}

#[test]
fn answers_keep_status_headers_and_body() {
    let response = Response::text("hi")
        .with_status(StatusCode::CREATED)
        .try_with_header("x-model", "v2")
        .expect("header");
    let sent = encode_answer(Ok(response));
    let (parts, body) = sent.into_parts();
    let got = decode_answer(parts.status, parts.headers, body).expect("an answer");
    assert_eq!(got.status(), StatusCode::CREATED);
    assert_eq!(got.headers()["x-model"], "v2");
    assert_eq!(got.media_type(), Some("text/plain; charset=utf-8"));
    assert_eq!(got.body_text().expect("text"), "hi");

    let odd = StatusCode::from_u16(123).expect("status");
    let sent = encode_answer(Ok(Response::empty().with_status(odd)));
    assert!(
        !sent.status().is_informational(),
        "HTTP/2 would take it for interim"
    );
    let (parts, body) = sent.into_parts();
    let got = decode_answer(parts.status, parts.headers, body).expect("an answer");
    assert_eq!(got.status(), odd);
    assert!(got.headers().get(&STATUS).is_none());

    let sent = encode_answer(Ok(Response::value(5u8)));
    let (parts, body) = sent.into_parts();
    let err = decode_answer(parts.status, parts.headers, body).expect_err("no Rust values");
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// One error of every variant.
fn every_error() -> Vec<ServeError> {
    let (b, r) = ("b".to_owned(), "b#1".to_owned());
    vec![
        ServeError::RouteNotFound("/x".into()),
        ServeError::ReservedRouteNotFound("/-/x".into()),
        ServeError::MethodNotAllowed {
            target: "endpoint `e`".into(),
            allow: "GET, POST".into(),
            method: Some("PUT".into()),
        },
        ServeError::PayloadTooLarge { limit: 10 },
        ServeError::BodyTimeout(Duration::from_secs(3)),
        ServeError::Timeout {
            after: Duration::from_millis(200),
            set_by: "request_timeout_s",
        },
        ServeError::Timeout {
            after: Duration::from_secs(1),
            set_by: "the timeout middleware",
        },
        ServeError::EndpointNotFound("e".into()),
        ServeError::BackendNotFound("b".into()),
        ServeError::MethodNotFound {
            backend: b.clone(),
            method: "nope".into(),
        },
        ServeError::BadRequest("bad".into()),
        ServeError::InvalidConfig {
            key: "num_replicas".into(),
            message: "too many".into(),
        },
        ServeError::Conflict("taken".into()),
        ServeError::Overloaded {
            backend: b.clone(),
            queued: 7,
            retry_after: RETRY_AFTER,
        },
        ServeError::NoReplicas(b.clone()),
        ServeError::Backend {
            backend: b.clone(),
            replica: r.clone(),
            message: "ValueError: no".into(),
            status: Some(StatusCode::IM_A_TEAPOT),
            traceback: Some("Traceback (most recent call last):\n ...".into()),
        },
        ServeError::Backend {
            backend: b.clone(),
            replica: r.clone(),
            message: "plain".into(),
            status: None,
            traceback: None,
        },
        ServeError::Panicked {
            backend: b.clone(),
            replica: r.clone(),
            message: "boom".into(),
        },
        ServeError::ReplicaDied {
            backend: b.clone(),
            replica: r,
            message: "gone".into(),
        },
        ServeError::StartFailed {
            backend: b,
            message: "no".into(),
        },
        ServeError::CannotListen {
            addr: "h:1".into(),
            reason: "in use".into(),
        },
        ServeError::ShuttingDown,
        ServeError::Deploying("/x".into()),
        ServeError::Internal("oops".into()),
    ]
}

#[test]
fn every_error_kind_crosses_as_itself() {
    for error in every_error() {
        let sent = encode_answer(Err(error.clone()));
        assert_eq!(sent.status(), error.status(), "{error}");
        let (parts, body) = sent.into_parts();
        let got = decode_answer(parts.status, parts.headers, body).expect_err("an error");
        assert_eq!(got.to_string(), error.to_string());
        assert_eq!(got.status(), error.status(), "{error}");
        assert_eq!(got.kind(), error.kind(), "{error}");
        assert_eq!(got.retry_after(), error.retry_after(), "{error}");
        assert_eq!(format!("{got:?}"), format!("{error:?}"));
    }
}

#[test]
fn unreadable_or_unknown_errors_are_internal() {
    let mut headers = HeaderMap::new();
    headers.insert(ERROR.clone(), "1".parse().expect("v"));
    let err = decode_answer(
        StatusCode::BAD_GATEWAY,
        headers.clone(),
        Bytes::from_static(b"<html>"),
    )
    .expect_err("an error");
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let err = decode_answer(
        StatusCode::BAD_GATEWAY,
        headers,
        Bytes::from_static(br#"{"kind": "from_the_future", "message": "hm"}"#),
    )
    .expect_err("an error");
    assert!(err.to_string().contains("from_the_future"), "{err}");
}
