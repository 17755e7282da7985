//! The peer protocol's encoding of one call and its answer: plain HTTP/2 requests and responses, with the call's metadata in `x-ferroserve-*` headers and its payload as the body.
//!
//! A call is `POST /call`. Its headers say the backend, the target replica, the replica
//! method, the request id, the deadline (milliseconds left), the origin, the payload's
//! kind, and the request's HTTP parts when it has them (`-http-method`, `-http-uri`, and
//! each header under the `x-ferroserve-h-` prefix, so that no header of the original
//! request is taken for one of the peer connection's own). Text that may not be a header
//! value (a method name in any script) is percent-encoded. The body is the payload:
//! bytes, text, a pickled Python object, or JSON written out.
//!
//! The answer is the replica's response: its status, headers and body as they are (a 1xx
//! status, which HTTP/2 would take for an interim one, rides in `x-ferroserve-status`). A
//! failed call is answered with the error's status, `x-ferroserve-error: 1` and a JSON
//! [`WireError`] body that decodes to the same [`ServeError`] variant the owning node's
//! caller would have got.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::wire_error::WireError;
use crate::error::ServeError;
use crate::request::{HttpParts, Origin, Payload, Request};
use crate::response::{Chunks, Response, ResponseBody};

/// The path of a call.
pub(crate) const CALL_PATH: &str = "/call";
/// The path prefix of a replica's health check: `/health/<backend>/<replica>`.
pub(crate) const HEALTH_PREFIX: &str = "/health/";

/// The backend called.
pub(crate) static BACKEND: HeaderName = HeaderName::from_static("x-ferroserve-backend");
/// The replica the caller chose.
pub(crate) static REPLICA: HeaderName = HeaderName::from_static("x-ferroserve-replica");
/// The replica method to run.
pub(crate) static METHOD: HeaderName = HeaderName::from_static("x-ferroserve-method");
/// The caller's id of the request, for logs on both nodes.
pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("x-ferroserve-request-id");
/// Milliseconds the caller still waits for the answer.
pub(crate) static DEADLINE: HeaderName = HeaderName::from_static("x-ferroserve-deadline-ms");
/// `http` or `handle`.
pub(crate) static ORIGIN: HeaderName = HeaderName::from_static("x-ferroserve-origin");
/// The payload's kind: `bytes`, `text`, `pickle` or `json`.
pub(crate) static PAYLOAD: HeaderName = HeaderName::from_static("x-ferroserve-payload");
/// Present when Python code made the call (a Python backend answers it pickled).
pub(crate) static PYTHON_CALLER: HeaderName = HeaderName::from_static("x-ferroserve-python-caller");
/// The W3C trace context the call is part of.
pub(crate) static TRACE: HeaderName = HeaderName::from_static("x-ferroserve-traceparent");
/// The request's own HTTP method.
pub(crate) static HTTP_METHOD: HeaderName = HeaderName::from_static("x-ferroserve-http-method");
/// The request's own URI.
pub(crate) static HTTP_URI: HeaderName = HeaderName::from_static("x-ferroserve-http-uri");
/// Where the request's own headers go: `x-ferroserve-h-<name>`.
pub(crate) const HEADER_PREFIX: &str = "x-ferroserve-h-";
/// Present on a streamed answer: its body is framed chunks (see `stream`).
pub(crate) static STREAM: HeaderName = HeaderName::from_static("x-ferroserve-stream");
/// An answer's status when HTTP/2's own cannot carry it (1xx).
pub(crate) static STATUS: HeaderName = HeaderName::from_static("x-ferroserve-status");
/// Marks an answer whose body is a [`WireError`].
pub(crate) static ERROR: HeaderName = HeaderName::from_static("x-ferroserve-error");

/// What is percent-encoded in a text header value: controls, `%` itself, and (by
/// `utf8_percent_encode`) every non-ASCII byte.
const ENCODED: &AsciiSet = &CONTROLS.add(b'%');

/// Text as a header value (percent-encoded where it must be).
pub(crate) fn text_value(text: &str) -> HeaderValue {
    let encoded: Cow<'_, str> = utf8_percent_encode(text, ENCODED).into();
    // Only visible ASCII and spaces remain.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A text header `name` of a call, decoded.
fn text_of(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ServeError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let bad = || ServeError::BadRequest(format!("a peer call with a bad `{name}` header"));
    let text = value.to_str().map_err(|_| bad())?;
    let decoded = percent_decode_str(text).decode_utf8().map_err(|_| bad())?;
    Ok(Some(decoded.into_owned()))
}

/// What a call is about, besides its request: read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallHead {
    /// The backend.
    pub(crate) backend: String,
    /// The replica the caller chose (the owner may run it on another of its own).
    pub(crate) replica: String,
    /// The caller's id of the request.
    pub(crate) request_id: String,
    /// How long the caller still waits, if it has a deadline.
    pub(crate) deadline: Option<Duration>,
}

/// The longest deadline a call may carry (a day, as every duration in the config).
const MAX_DEADLINE_MS: u64 = 86_400_000;

/// The HTTP/2 request of a call of `req` to `head.replica` of `head.backend`; a Rust value
/// cannot leave its process, and is refused before anything is sent.
pub(crate) fn encode_call(
    head: &CallHead,
    req: &Request,
    authority: &str,
) -> Result<http::Request<Bytes>, ServeError> {
    let (kind, body) = match req.payload() {
        Payload::Bytes(b) => ("bytes", b.clone()),
        Payload::Text(b) => ("text", b.clone()),
        Payload::Pickled(b) => ("pickle", b.clone()),
        Payload::Json(v) => (
            "json",
            Bytes::from(serde_json::to_vec(v).map_err(|e| ServeError::Internal(e.to_string()))?),
        ),
        Payload::Value(_) => {
            return Err(ServeError::BadRequest(format!(
                "the call carries a Rust value, which cannot be sent to replica `{}` of backend `{}` on another node; \
                 pass bytes, text or JSON to backends that run on other nodes",
                head.replica, head.backend
            )));
        }
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(CALL_PATH)
        .build()
        .map_err(|e| ServeError::Internal(format!("a peer address as a URI: {e}")))?;
    let mut out = http::Request::new(body);
    *out.method_mut() = Method::POST;
    *out.uri_mut() = uri;
    let headers = out.headers_mut();
    headers.insert(BACKEND.clone(), text_value(&head.backend));
    headers.insert(REPLICA.clone(), text_value(&head.replica));
    headers.insert(METHOD.clone(), text_value(req.method_name()));
    headers.insert(REQUEST_ID.clone(), text_value(&head.request_id));
    if let Some(deadline) = head.deadline {
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(MAX_DEADLINE_MS);
        headers.insert(DEADLINE.clone(), HeaderValue::from(ms.min(MAX_DEADLINE_MS)));
    }
    let origin = match req.origin() {
        Origin::Http => "http",
        Origin::Handle => "handle",
    };
    headers.insert(ORIGIN.clone(), HeaderValue::from_static(origin));
    headers.insert(PAYLOAD.clone(), HeaderValue::from_static(kind));
    if req.python_caller {
        headers.insert(PYTHON_CALLER.clone(), HeaderValue::from_static("1"));
    }
    if let Some(trace) = req.traceparent() {
        headers.insert(TRACE.clone(), text_value(trace));
    }
    if let Some(http) = req.http() {
        headers.insert(HTTP_METHOD.clone(), text_value(http.method.as_str()));
        headers.insert(HTTP_URI.clone(), text_value(&http.uri.to_string()));
        for (name, value) in &http.headers {
            let prefixed = format!("{HEADER_PREFIX}{name}");
            if let Ok(prefixed) = HeaderName::from_bytes(prefixed.as_bytes()) {
                headers.append(prefixed, value.clone());
            }
        }
    }
    Ok(out)
}

/// The head of a call, from its headers.
pub(crate) fn decode_head(headers: &HeaderMap) -> Result<CallHead, ServeError> {
    let required = |name: &HeaderName| {
        text_of(headers, name)?
            .ok_or_else(|| ServeError::BadRequest(format!("a peer call without `{name}`")))
    };
    let deadline = match headers.get(&DEADLINE) {
        None => None,
        Some(v) => {
            let ms = v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ServeError::BadRequest(format!("a bad `{DEADLINE}` header")))?;
            Some(Duration::from_millis(ms.min(MAX_DEADLINE_MS)))
        }
    };
    Ok(CallHead {
        backend: required(&BACKEND)?,
        replica: required(&REPLICA)?,
        request_id: text_of(headers, &REQUEST_ID)?.unwrap_or_default(),
        deadline,
    })
}

/// The request a call carries, from its headers and body.
pub(crate) fn decode_request(headers: &HeaderMap, body: Bytes) -> Result<Request, ServeError> {
    let bad = |what: &str| ServeError::BadRequest(format!("a peer call with {what}"));
    let payload = match headers.get(&PAYLOAD).map(HeaderValue::as_bytes) {
        None | Some(b"bytes") => Payload::Bytes(body),
        Some(b"text") => Payload::Text(body),
        Some(b"pickle") => Payload::Pickled(body),
        Some(b"json") => Payload::Json(
            serde_json::from_slice(&body).map_err(|_| bad("a JSON payload that is not JSON"))?,
        ),
        Some(_) => return Err(bad("an unknown payload kind")),
    };
    let http = match headers.get(&HTTP_METHOD) {
        None => None,
        Some(method) => {
            let method =
                Method::from_bytes(method.as_bytes()).map_err(|_| bad("a bad HTTP method"))?;
            let uri = text_of(headers, &HTTP_URI)?
                .ok_or_else(|| bad("an HTTP method but no URI"))?
                .parse::<Uri>()
                .map_err(|_| bad("a bad URI"))?;
            let mut own = HeaderMap::new();
            for (name, value) in headers {
                if let Some(original) = name.as_str().strip_prefix(HEADER_PREFIX)
                    && let Ok(original) = HeaderName::from_bytes(original.as_bytes())
                {
                    own.append(original, value.clone());
                }
            }
            Some(HttpParts {
                method,
                uri,
                headers: own,
            })
        }
    };
    let mut req = match (headers.get(&ORIGIN).map(HeaderValue::as_bytes), http) {
        (Some(b"http"), Some(parts)) => match payload {
            Payload::Bytes(body) => Request::from_http(parts, body),
            _ => return Err(bad("an HTTP origin and a payload that is not bytes")),
        },
        (Some(b"http"), None) => return Err(bad("an HTTP origin and no HTTP parts")),
        (None | Some(b"handle"), http) => {
            let req = Request::from_payload(payload);
            match http {
                Some(parts) => req.with_http(parts),
                None => req,
            }
        }
        (Some(_), _) => return Err(bad("an unknown origin")),
    };
    if let Some(method) = text_of(headers, &METHOD)? {
        req.set_method_name(Cow::Owned(method));
    }
    if let Some(trace) = text_of(headers, &TRACE)? {
        req = req.with_traceparent(trace);
    }
    req.python_caller = headers.contains_key(&PYTHON_CALLER);
    Ok(req)
}

/// The HTTP/2 answer to a call.
pub(crate) fn encode_answer(answer: Result<Response, ServeError>) -> http::Response<Bytes> {
    let response = match answer {
        Ok(response) => response,
        Err(e) => return encode_error(&e),
    };
    let (status, headers, body) = response.into_parts();
    let body =
        match body {
            ResponseBody::Bytes(body) => body,
            ResponseBody::Stream(_) => {
                return encode_error(&ServeError::Internal(
                    "a streamed answer goes out with encode_streamed".to_owned(),
                ));
            }
            ResponseBody::Value(_) => return encode_error(&ServeError::Internal(
                "the backend answered with a Rust value, which cannot be sent to another node; \
             answer with text, bytes or JSON"
                    .to_owned(),
            )),
        };
    with_head(body, status, headers)
}

/// The HTTP/2 answer to a call whose answer streams: its head, and its chunks framed.
pub(crate) fn encode_streamed(response: Response) -> http::Response<Chunks> {
    let (status, mut headers) = (response.status(), response.headers().clone());
    headers.insert(STREAM.clone(), HeaderValue::from_static("1"));
    with_head(
        super::stream::framed(response.into_chunks()),
        status,
        headers,
    )
}

/// An answer of `body` with a replica's status and headers (a 1xx status in a header).
fn with_head<B>(body: B, status: StatusCode, headers: HeaderMap) -> http::Response<B> {
    let mut out = http::Response::new(body);
    *out.headers_mut() = headers;
    if status.is_informational() {
        out.headers_mut()
            .insert(STATUS.clone(), HeaderValue::from(status.as_u16()));
    } else {
        *out.status_mut() = status;
    }
    out
}

/// The answer to a call that failed with `error`.
pub(crate) fn encode_error(error: &ServeError) -> http::Response<Bytes> {
    let body = serde_json::to_vec(&WireError::from(error)).unwrap_or_default();
    let mut out = http::Response::new(Bytes::from(body));
    let status = error.status();
    *out.status_mut() = if status.is_informational() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    let headers = out.headers_mut();
    headers.insert(ERROR.clone(), HeaderValue::from_static("1"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

/// The caller's answer, from the peer's status, headers and (bounded) body.
pub(crate) fn decode_answer(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServeError> {
    if headers.contains_key(&ERROR) {
        return Err(match serde_json::from_slice::<WireError>(&body) {
            Ok(error) => error.into(),
            Err(e) => ServeError::Internal(format!("a peer's error that cannot be read: {e}")),
        });
    }
    let status = match headers.remove(&STATUS) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(status),
        None => status,
    };
    // The peer connection's own framing, not the replica's answer.
    headers.remove(&STREAM);
    headers.remove(CONTENT_LENGTH);
    headers.remove(DATE);
    let mut response = Response::bytes(body).with_status(status);
    *response.headers_mut() = headers;
    Ok(response)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
