//! Streamed handle calls from Python scripts (`POST /api/stream`): a call as `/api/call` takes it, answered with its head in a header and its chunks framed in a chunked body, read by the client as they come.
//!
//! The head (`status`, `media_type`, `kind`) is JSON in `x-ferroserve-head`; each frame is
//! a tag byte (`0` a chunk, `1` an error that ends the stream), a little-endian `u32`
//! length and the payload. A call that fails before its head, or whose answer is not one
//! the client can read, is answered as `/api/call` answers it.

use http::{HeaderValue, StatusCode};

use super::{Shared, api, error};
use crate::proxy::convert::{PlainBody, plain};

/// The path of a streamed call.
pub(super) const PATH: &str = "/api/stream";

/// Runs a streamed call: `body` is a `/api/call` body.
pub(super) async fn call(shared: &Shared, body: &[u8]) -> http::Response<PlainBody> {
    let answer = match api::run_call(shared, body).await {
        Ok(answer) => answer,
        Err(refused) => return plain(refused),
    };
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
