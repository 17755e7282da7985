//! The stock backends of the `ferroserve` binary: `echo` and `static`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::backend::{Backend, BackendFactory, Methods, Registry, ReplicaContext};
use crate::error::BackendError;
use crate::request::{Payload, Request};
use crate::response::Response;

/// The registry of stock backends: `echo` and `static` (what `builtin: NAME` refers to).
pub fn builtins() -> Registry {
    let mut registry = Registry::new();
    registry
        .register("echo", BackendFactory::new(|ctx| Ok(Echo::new(ctx))))
        .register("static", BackendFactory::new(Static::new));
    registry
}

/// Answers JSON describing what it received: `backend`, `replica`, `method`, `http_method`,
/// `path`, `query`, `headers`, `traceparent` and `body`. Answers any method name.
#[derive(Debug)]
pub struct Echo {
    backend: String,
    replica: String,
}

impl Echo {
    /// An echo replica.
    pub fn new(ctx: &ReplicaContext) -> Self {
        Self {
            backend: ctx.backend.clone(),
            replica: ctx.replica.clone(),
        }
    }
}

fn header_object(headers: &HeaderMap) -> Map<String, Value> {
    let mut object = Map::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        object.insert(name.as_str().to_owned(), Value::from(values.join(", ")));
    }
    object
}

impl Backend for Echo {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let query: Map<String, Value> = req
            .query()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        let body = match req.payload() {
            Payload::Bytes(b) | Payload::Text(b) => String::from_utf8_lossy(b).into_owned(),
            Payload::Pickled(_) => "<pickled Python object>".to_owned(),
            Payload::Json(v) => v.to_string(),
            Payload::Value(_) => "<rust value>".to_owned(),
        };
        Response::json(&json!({
            "backend": self.backend,
            "replica": self.replica,
            "method": req.method_name(),
            "http_method": req.http_method().map(|m| m.as_str()),
            "path": req.path(),
            "query": query,
            "headers": header_object(req.headers()),
            "traceparent": req.traceparent(),
            "body": body,
        }))
    }

    fn methods(&self) -> Methods {
        Methods::Any
    }
}

/// The `init_args` of the `static` backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticArgs {
    #[serde(default)]
    body: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default = "default_media_type")]
    media_type: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_status() -> u16 {
    200
}

fn default_media_type() -> String {
    "text/plain".to_owned()
}

/// Answers the fixed response its `init_args` describe: `body`, `status` (default 200),
/// `media_type` (default `text/plain`) and `headers`. Answers any method name.
#[derive(Debug)]
pub struct Static {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Static {
    /// A static replica from the backend's `init_args`.
    pub fn new(ctx: &ReplicaContext) -> Result<Self, BackendError> {
        let args = if ctx.init_args.is_null() {
            Value::Object(Map::new())
        } else {
            ctx.init_args.clone()
        };
        let args: StaticArgs = serde_json::from_value(args)
            .map_err(|e| BackendError::msg(format!("static: init_args: {e}")))?;
        let status = StatusCode::from_u16(args.status).map_err(|_| {
            BackendError::msg(format!(
                "static: init_args.status: {} is not a status code (100-999)",
                args.status
            ))
        })?;
        let mut headers = HeaderMap::new();
        let media_type = HeaderValue::from_str(&args.media_type).map_err(|_| {
            BackendError::msg(format!(
                "static: init_args.media_type: `{}` is not a valid header value",
                args.media_type
            ))
        })?;
        headers.insert(http::header::CONTENT_TYPE, media_type);
        for (name, value) in &args.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BackendError::msg(format!(
                    "static: init_args.headers: `{name}` is not a header name"
                ))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                BackendError::msg(format!(
                    "static: init_args.headers.{name}: invalid header value"
                ))
            })?;
            headers.append(name, value);
        }
        Ok(Self {
            status,
            headers,
            body: Bytes::from(args.body),
        })
    }
}

impl Backend for Static {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        let mut response = Response::bytes(self.body.clone()).with_status(self.status);
        response.headers_mut().clone_from(&self.headers);
        Ok(response)
    }

    fn methods(&self) -> Methods {
        Methods::Any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(init_args: Value) -> ReplicaContext {
        ReplicaContext {
            backend: "b".into(),
            replica: "b#1".into(),
            init_args,
        }
    }

    #[tokio::test]
    async fn static_answers_its_init_args() {
        let s = Static::new(&ctx(
            json!({"body": "hi", "status": 201, "headers": {"x-a": "1"}}),
        ))
        .expect("valid init_args");
        let r = s.call(Request::from_arg(().into())).await.expect("answer");
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.media_type(), Some("text/plain"));
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.body_text().expect("text"), "hi");
    }

    #[test]
    fn static_refuses_bad_init_args() {
        let err = Static::new(&ctx(json!({"bdy": "x"}))).expect_err("unknown key");
        assert!(err.message().contains("bdy"), "{err}");
        let err = Static::new(&ctx(json!({"status": 1000}))).expect_err("bad status");
        assert!(err.message().contains("1000"), "{err}");
    }

    #[test]
    fn the_config_knows_every_builtin_by_name() {
        assert_eq!(
            builtins().names().collect::<Vec<_>>(),
            crate::config::BUILTIN_BACKENDS
        );
    }

    #[tokio::test]
    async fn echo_describes_a_handle_call() {
        const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let echo = Echo::new(&ctx(Value::Null));
        let r = echo
            .call(Request::from_arg("x".into()).with_method_name("m"))
            .await
            .expect("answer");
        let v: Value = r.body_json().expect("json");
        assert_eq!(v["method"], "m");
        assert_eq!(v["replica"], "b#1");
        assert_eq!(v["body"], "x");
        assert_eq!(v["http_method"], Value::Null);
        assert_eq!(v["traceparent"], Value::Null);
        assert_eq!(v.as_object().map(Map::len), Some(9));
        let traced = echo
            .call(Request::from_arg("x".into()).with_traceparent(TRACE))
            .await
            .expect("answer");
        let v: Value = traced.body_json().expect("json");
        assert_eq!(v["traceparent"], TRACE);
    }
}
