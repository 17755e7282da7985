//! Handle calls made from Python code (`get_handle(...).remote(...)`): decoded from the worker's frame, sent through the caller the replica was given, answered back.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use serde::Deserialize;

use super::frame::{Frame, encode, kind};
use super::link::Link;
use super::stream::HandleCredit;
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

/// Starts a handle call a worker made: a streamed one's credit is opened here, on the
/// reader's task, before any later frame (a cancel) of the worker is read.
pub(super) fn start_handle_call(caller: Arc<dyn EndpointCaller>, link: &Arc<Link>, frame: Frame) {
    let streamed = serde_json::from_slice::<StreamFlag>(&frame.meta).is_ok_and(|f| f.stream);
    let credit = streamed.then(|| link.open_handle_stream(frame.id));
    tokio::spawn(serve_handle_call(caller, link.clone(), frame, credit));
}

/// Runs a handle call a worker made, through the same router as HTTP, and sends the answer
/// back: whole, or, when the call asked for a stream (`credit`), as a head and then its
/// chunks, no more than a window ahead of what the worker read.
async fn serve_handle_call(
    caller: Arc<dyn EndpointCaller>,
    link: Arc<Link>,
    frame: Frame,
    credit: Option<Arc<HandleCredit>>,
) {
    let id = frame.id;
    if let Some(credit) = credit {
        let call = call_from_python(&*caller, &frame.meta, frame.body);
        // A caller that drops its stream before the head stops the call too.
        if let Some(answer) = tokio::select! {
            answer = call => Some(answer),
            () = credit.cancelled() => None,
        } {
            stream_to(&link, id, &credit, answer).await;
        }
        link.close_handle_stream(id);
        return;
    }
    let answer = call_from_python(&*caller, &frame.meta, frame.body).await;
    let (meta, body) = python_reply(answer).await;
    send(&link, id, kind::HANDLE_REPLY, &meta, &body);
}

#[derive(Deserialize)]
struct StreamFlag {
    #[serde(default)]
    stream: bool,
}

fn send(link: &Link, id: u64, kind: u8, meta: &serde_json::Value, body: &[u8]) {
    let Ok(meta) = serde_json::to_vec(meta) else {
        return;
    };
    if let Ok(frame) = encode(id, kind, &meta, body) {
        let _ = link.writer.send(frame);
    }
}

/// Sends `answer` to handle call `id` as a stream: its head (or error), each chunk as the
/// worker has room for it, then its end.
async fn stream_to(
    link: &Link,
    id: u64,
    credit: &HandleCredit,
    answer: Result<Response, ServeError>,
) {
    use futures_util::StreamExt as _;
    let response = match answer {
        // A Rust value cannot go to Python: answered as the error it is.
        Ok(response) if response.body().is_some() || response.is_stream() => response,
        answer => {
            let (meta, body) = python_reply(answer).await;
            send(link, id, kind::HANDLE_REPLY, &meta, &body);
            return;
        }
    };
    let mut head = python_head(response.status(), response.headers());
    head["stream"] = true.into();
    send(link, id, kind::HANDLE_REPLY, &head, &[]);
    let mut chunks = response.into_chunks();
    loop {
        if !credit.room().await {
            return;
        }
        let next = tokio::select! {
            next = chunks.next() => next,
            () = credit.cancelled() => return,
        };
        match next {
            Some(Ok(chunk)) => {
                credit.sent(chunk.len());
                send(
                    link,
                    id,
                    kind::HANDLE_CHUNK,
                    &serde_json::Value::Null,
                    &chunk,
                );
            }
            Some(Err(e)) => {
                let mut end = serde_json::json!({"error": e.message()});
                end["status"] = e.status().map_or(500, |s| s.as_u16()).into();
                send(link, id, kind::HANDLE_END, &end, &[]);
                return;
            }
            None => {
                send(link, id, kind::HANDLE_END, &serde_json::json!({}), &[]);
                return;
            }
        }
    }
}

/// The most of a streamed answer read whole for a Python caller that did not ask for a
/// stream: what one frame to a worker can carry.
const COLLECT_LIMIT: usize = super::frame::MAX_BODY;

/// The head of an answer to Python: status, media type, and whether its body is pickled.
pub(crate) fn python_head(
    status: http::StatusCode,
    headers: &http::HeaderMap,
) -> serde_json::Value {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = if media_type == PICKLE {
        "pickle"
    } else {
        "http"
    };
    let mut meta =
        serde_json::json!({"status": status.as_u16(), "media_type": media_type, "kind": kind});
    // A binary inference answer: where its JSON part ends, so that Python can read its
    // tensors into numpy arrays.
    if let Some(n) = headers
        .get(crate::tensor::codec::HEADER_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        meta["inference_header_length"] = n.into();
    }
    meta
}

/// The answer to a handle call from Python, as its meta and body: a pickled value (`kind:
/// pickle`), an HTTP-shaped answer (`kind: http`, with status and media type), a stream
/// read whole (the objects a Python generator yielded as `kind: pickle_list`, each of
/// `lens` bytes; other streams as one body), or an error (`error`, `status`).
pub(crate) async fn python_reply(
    answer: Result<Response, ServeError>,
) -> (serde_json::Value, Bytes) {
    let (response, lens) = match answer {
        Ok(response) if response.is_stream() => match read_whole(response).await {
            Ok(read) => read,
            Err(e) => return error_reply(&e),
        },
        Ok(response) => (response, None),
        Err(e) => return error_reply(&e),
    };
    let (status, headers, body) = response.into_parts();
    let ResponseBody::Bytes(bytes) = body else {
        return (
            serde_json::json!({"error": "the endpoint answered with a Rust value, which cannot go to Python", "status": 500}),
            Bytes::new(),
        );
    };
    let mut meta = python_head(status, &headers);
    if let Some(lens) = lens {
        meta["kind"] = "pickle_list".into();
        meta["lens"] = lens.into();
    }
    (meta, bytes)
}

/// A streamed answer read to its end, for a caller that did not ask for a stream; the
/// length of each chunk when they are pickled objects.
async fn read_whole(response: Response) -> Result<(Response, Option<Vec<usize>>), ServeError> {
    use futures_util::StreamExt as _;
    let failed = |e: crate::error::BackendError| ServeError::Internal(e.message().to_owned());
    if response.media_type() != Some(PICKLE) {
        let whole = response.collected(COLLECT_LIMIT).await.map_err(failed)?;
        return Ok((whole, None));
    }
    let (status, headers) = (response.status(), response.headers().clone());
    let mut chunks = response.into_chunks();
    let (mut lens, mut joined) = (Vec::new(), Vec::new());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(failed)?;
        if joined.len() + chunk.len() > COLLECT_LIMIT {
            return Err(ServeError::Internal(format!(
                "the streamed answer is larger than {COLLECT_LIMIT} bytes"
            )));
        }
        lens.push(chunk.len());
        joined.extend_from_slice(&chunk);
    }
    let mut whole = Response::bytes(joined).with_status(status);
    *whole.headers_mut() = headers;
    Ok((whole, Some(lens)))
}

fn error_reply(e: &ServeError) -> (serde_json::Value, Bytes) {
    let mut meta = serde_json::json!({"error": e.to_string(), "status": e.status().as_u16()});
    if let ServeError::Backend {
        traceback: Some(traceback),
        ..
    } = e
    {
        meta["traceback"] = serde_json::Value::from(traceback.as_str());
    }
    (meta, Bytes::new())
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
