//! The worker protocol's JSON metadata: what a call, a batch and a reply carry, and how a reply becomes a `Response`.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::frame::Frame;
use crate::error::BackendError;
use crate::request::{HttpParts, Origin, Payload, Request};
use crate::response::Response;

/// The media type of a pickled Python object answering a Python caller.
pub(super) const PICKLE: &str = "application/x-python-pickle";

#[derive(Deserialize)]
pub(super) struct ReadyMeta {
    pub(super) methods: Vec<String>,
    pub(super) batch_methods: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct InitErrorMeta {
    pub(super) message: String,
}

#[derive(Serialize)]
struct HttpMeta<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> HttpMeta<'a> {
    fn of(parts: &'a HttpParts) -> Self {
        Self {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct CallMeta<'a> {
    method: &'a str,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpMeta<'a>>,
    arg: &'a str,
    reply: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) body_len: Option<usize>,
    /// The W3C trace context, for the handle calls the Python code makes.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

/// The meta and body a request is sent to a worker with.
pub(super) fn call_meta(req: &Request) -> Result<(CallMeta<'_>, Cow<'_, [u8]>), BackendError> {
    let (arg, body): (&str, Cow<'_, [u8]>) = match req.payload() {
        Payload::Bytes(b) => ("bytes", Cow::Borrowed(b)),
        Payload::Text(b) => ("text", Cow::Borrowed(b)),
        Payload::Pickled(b) => ("pickle", Cow::Borrowed(b)),
        Payload::Json(v) => ("json", Cow::Owned(serde_json::to_vec(v)?)),
        Payload::Value(_) => {
            return Err(BackendError::msg(
                "a Rust value (Arg::value) cannot be sent to a Python backend; pass text, bytes or JSON",
            )
            .with_status(StatusCode::BAD_REQUEST));
        }
    };
    let meta = CallMeta {
        method: req.method_name(),
        origin: match req.origin() {
            Origin::Http => "http",
            Origin::Handle => "handle",
        },
        http: req.http().map(HttpMeta::of),
        arg,
        reply: if req.python_caller { "pickle" } else { "http" },
        body_len: None,
        traceparent: req.traceparent(),
    };
    Ok((meta, body))
}

/// Headers as the worker sends them: a map or a list of pairs.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadersMeta {
    Map(HashMap<String, String>),
    List(Vec<(String, String)>),
}

#[derive(Deserialize, Default)]
pub(super) struct ReplyMeta {
    status: Option<u16>,
    media_type: Option<String>,
    headers: Option<HeadersMeta>,
    kind: Option<String>,
    pub(super) body_len: Option<usize>,
}

#[derive(Deserialize)]
struct ErrorMeta {
    error_type: String,
    message: String,
    /// The status an `HTTPException` asked for (4xx or 5xx).
    status: Option<u16>,
    /// Where it was raised (for errors the code did not choose).
    #[serde(default)]
    traceback: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct BatchReplyMeta {
    pub(super) items: Vec<ReplyMeta>,
}

pub(super) fn response_of(meta: ReplyMeta, body: Bytes) -> Result<Response, BackendError> {
    let status = StatusCode::from_u16(meta.status.unwrap_or(200))
        .map_err(|_| BackendError::msg(format!("invalid status code {:?}", meta.status)))?;
    let mut response = Response::bytes(body).with_status(status);
    response.headers_mut().remove(CONTENT_TYPE);
    let media_type = if meta.kind.as_deref() == Some("pickle") {
        Some(PICKLE.to_owned())
    } else {
        meta.media_type
    };
    if let Some(media_type) = media_type {
        let value = HeaderValue::from_str(&media_type)
            .map_err(|_| BackendError::msg(format!("invalid media type `{media_type}`")))?;
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    let pairs: Vec<(String, String)> = match meta.headers {
        None => Vec::new(),
        Some(HeadersMeta::Map(map)) => map.into_iter().collect(),
        Some(HeadersMeta::List(list)) => list,
    };
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BackendError::msg(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| BackendError::msg(format!("invalid value for header `{name}`")))?;
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

pub(super) fn error_of(frame: &Frame) -> BackendError {
    let Ok(error) = serde_json::from_slice::<ErrorMeta>(&frame.meta) else {
        return BackendError::msg("the worker reported an error it could not describe");
    };
    match error
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
    {
        // An error answer the code chose: its status, and its detail as the message.
        Some(status) => BackendError::msg(error.message).with_status(status),
        None => {
            let mut e = BackendError::msg(format!("{}: {}", error.error_type, error.message));
            e.traceback = error.traceback;
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::python::frame::kind;

    fn error_frame(meta: &str) -> Frame {
        Frame {
            id: 1,
            kind: kind::ERROR,
            meta: meta.as_bytes().to_vec(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn an_http_exception_keeps_its_status_and_detail() {
        let e = error_of(&error_frame(
            r#"{"error_type":"HTTPException","message":"no such model","status":404}"#,
        ));
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(e.message(), "no such model");
        let e = error_of(&error_frame(
            r#"{"error_type":"ValueError","message":"bad"}"#,
        ));
        assert_eq!((e.status(), e.message()), (None, "ValueError: bad"));
        let e = error_of(&error_frame(
            r#"{"error_type":"X","message":"m","status":200}"#,
        ));
        assert_eq!(e.status(), None, "only error statuses are kept");
    }
}
