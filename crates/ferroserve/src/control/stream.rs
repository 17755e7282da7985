//! Streamed handle calls from Python scripts (`POST /api/stream`): a call as `/api/call` takes it, answered with its head in a header and its chunks framed in a chunked body, read by the client as they come.
//!
//! The head (`status`, `media_type`, `kind`) is JSON in `x-ferroserve-head`; each frame is
//! a tag byte (`0` a chunk, `1` an error that ends the stream), a little-endian `u32`
//! length and the payload. A call that fails before its head, or whose answer is not one
//! the client can read, is answered as `/api/call` answers it.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::{Shared, api, error};
use crate::proxy::convert::{PlainBody, plain};

/// The path of a streamed call.
pub(super) const PATH: &str = "/api/stream";

/// Runs a streamed call: `body` is a `/api/call` body.
pub(super) async fn call(shared: &Shared, body: &[u8]) -> http::Response<PlainBody> {
    let Some((meta, arg)) = api::split_meta(body) else {
        return plain(error(
            StatusCode::BAD_REQUEST,
            "a call is a u32 meta length, the JSON meta, then the argument",
        ));
    };
    let caller = shared.serve.caller();
    let answer =
        crate::replica::call_from_python(&*caller, meta, Bytes::copy_from_slice(arg)).await;
    let response = match answer {
        Ok(response) if response.body().is_some() || response.is_stream() => response,
        other => return plain(api::call_answer(other).await),
    };
    let head = crate::replica::python_head(response.status(), response.headers()).to_string();
    let Ok(head) = HeaderValue::from_str(&head) else {
        return plain(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer's media type cannot go in a header",
        ));
    };
    let mut out = http::Response::new(PlainBody::Stream(crate::replica::framed(
        response.into_chunks(),
    )));
    let headers = out.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ferroserve-stream"),
    );
    headers.insert("x-ferroserve-head", head);
    out
}
