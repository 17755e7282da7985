//! Handle calls made from Python code (`get_handle(...).remote(...)`): decoded from the worker's frame, sent through the caller the replica was given, answered back.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use serde::Deserialize;

use super::frame::{Frame, encode, kind};
use super::link::Link;
use super::wire::PICKLE;
use crate::backend::EndpointCaller;
use crate::error::ServeError;
use crate::request::{CallOptions, Payload, Request};
use crate::response::{Response, ResponseBody};

#[derive(Deserialize)]
struct HandleCallMeta {
    endpoint: String,
    method: String,
    arg: String,
    http: Option<HandleHttpMeta>,
    shard_key: Option<String>,
    /// A web request passed on to a handle: it reaches the backend as that request.
    forward: Option<ForwardMeta>,
    /// The W3C trace context of the request whose code makes the call.
    traceparent: Option<String>,
}

#[derive(Deserialize)]
struct ForwardMeta {
    method: String,
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

impl ForwardMeta {
    /// The request's HTTP parts; what cannot be a method, URI or header is the caller's error.
    fn into_parts(self) -> Result<crate::request::HttpParts, ServeError> {
        let bad =
            |what: &str| ServeError::BadRequest(format!("a forwarded request with a bad {what}"));
        let method = http::Method::from_bytes(self.method.as_bytes()).map_err(|_| bad("method"))?;
        let uri = if self.query.is_empty() {
            self.path
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let uri = uri.parse::<http::Uri>().map_err(|_| bad("path"))?;
        let mut headers = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                headers.append(name, value);
            }
        }
        Ok(crate::request::HttpParts {
            method,
            uri,
            headers,
        })
    }
}

#[derive(Deserialize)]
struct HandleHttpMeta {
    method: Option<String>,
    headers: Option<Vec<(String, String)>>,
    query: Option<String>,
}

/// Runs a handle call a worker made, through the same router as HTTP, and sends the answer
/// back.
pub(super) async fn serve_handle_call(
    caller: Arc<dyn EndpointCaller>,
    link: Arc<Link>,
    frame: Frame,
) {
    let id = frame.id;
    let answer = call_from_python(&*caller, &frame.meta, frame.body).await;
    let (meta, body) = python_reply(answer).await;
    let Ok(meta) = serde_json::to_vec(&meta) else {
        return;
    };
    if let Ok(frame) = encode(id, kind::HANDLE_REPLY, &meta, &body) {
        let _ = link.writer.send(frame);
    }
}

/// The most of a streamed answer read whole for a Python caller that did not ask for a
/// stream: what one frame to a worker can carry.
const COLLECT_LIMIT: usize = super::frame::MAX_BODY;

/// The answer to a handle call from Python, as its meta and body: a pickled value (`kind:
/// pickle`), an HTTP-shaped answer (`kind: http`, with status and media type), or an error
/// (`error`, `status`).
pub(crate) async fn python_reply(
    answer: Result<Response, ServeError>,
) -> (serde_json::Value, Bytes) {
    // A stream for a caller that did not ask for one: read whole.
    let answer = match answer {
        Ok(response) if response.is_stream() => response
            .collected(COLLECT_LIMIT)
            .await
            .map_err(|e| ServeError::Internal(e.message().to_owned())),
        answer => answer,
    };
    match answer {
        Ok(response) => {
            let (status, headers, body) = response.into_parts();
            let media_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match body {
                ResponseBody::Bytes(bytes) => {
                    let kind = if media_type == PICKLE {
                        "pickle"
                    } else {
                        "http"
                    };
                    let mut meta = serde_json::json!({"status": status.as_u16(), "media_type": media_type, "kind": kind});
                    // A binary inference answer: where its JSON part ends, so that Python
                    // can read its tensors into numpy arrays.
                    if let Some(n) = headers
                        .get(crate::tensor::codec::HEADER_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    {
                        meta["inference_header_length"] = n.into();
                    }
                    (meta, bytes)
                }
                ResponseBody::Value(_) | ResponseBody::Stream(_) => (
                    serde_json::json!({"error": "the endpoint answered with a Rust value, which cannot go to Python", "status": 500}),
                    Bytes::new(),
                ),
            }
        }
        Err(e) => {
            let mut meta =
                serde_json::json!({"error": e.to_string(), "status": e.status().as_u16()});
            if let ServeError::Backend {
                traceback: Some(traceback),
                ..
            } = &e
            {
                meta["traceback"] = serde_json::Value::from(traceback.as_str());
            }
            (meta, Bytes::new())
        }
    }
}

/// Runs a handle call from Python — a worker's, or a script's through the control API —
/// whose `meta` says the endpoint, method, argument kind and HTTP options, with `body` as
/// its argument.
pub(crate) async fn call_from_python(
    caller: &dyn EndpointCaller,
    meta: &[u8],
    body: Bytes,
) -> Result<Response, ServeError> {
    let mut meta: HandleCallMeta = serde_json::from_slice(meta)
        .map_err(|e| ServeError::BadRequest(format!("a bad handle call: {e}")))?;
    if let Some(forward) = meta.forward.take() {
        // Not wrapped: the backend gets it as the web request it is.
        let mut req = Request::from_http(forward.into_parts()?, body);
        if let Some(trace) = meta.traceparent {
            req = req.with_traceparent(trace);
        }
        req.python_caller = true;
        let options = CallOptions::new().method_name(meta.method);
        return caller.call(&meta.endpoint, req, options).await;
    }
    let payload = match meta.arg.as_str() {
        "text" => Payload::Text(body),
        "pickle" => Payload::Pickled(body),
        "json" => Payload::Json(
            serde_json::from_slice(&body)
                .map_err(|e| ServeError::BadRequest(format!("bad JSON argument: {e}")))?,
        ),
        _ => Payload::Bytes(body),
    };
    let mut req = Request::from_payload(payload);
    if let Some(trace) = meta.traceparent {
        req = req.with_traceparent(trace);
    }
    req.python_caller = true;
    let mut options = CallOptions::new().method_name(meta.method);
    if let Some(key) = meta.shard_key {
        options = options.shard_key(key);
    }
    if let Some(http) = meta.http {
        // Any `http` options make the call HTTP-shaped, a GET unless it says otherwise.
        let method = http
            .method
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(http::Method::GET);
        options = options.http_method(method);
        for (name, value) in http.headers.unwrap_or_default() {
            options = options.header(&name, &value);
        }
        if let Some(query) = http.query.filter(|q| !q.is_empty()) {
            options = options.query_string(query);
        }
    }
    caller.call(&meta.endpoint, req, options).await
}
