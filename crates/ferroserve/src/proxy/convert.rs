//! Conversion between the wire and Ferroserve: HTTP requests in, responses out (errors through `ServeError::to_http`).

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use http_body_util::Full;

use crate::error::{BackendError, ServeError};
use crate::request::{CALL_METHOD_HEADER, HttpParts, Request, SHARD_KEY_HEADER};
use crate::response::{Chunks, Response, ResponseBody};

/// The body of every response the proxy writes: whole (with its length), or a stream of
/// chunks polled only as fast as the connection takes them (chunked encoding).
pub(crate) enum PlainBody {
    /// A whole body.
    Whole(Full<Bytes>),
    /// A streamed one.
    Stream(Chunks),
}

impl From<Full<Bytes>> for PlainBody {
    fn from(body: Full<Bytes>) -> Self {
        Self::Whole(body)
    }
}

impl PlainBody {
    /// A whole body of `bytes`.
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self::Whole(Full::new(bytes))
    }

    /// The same body, holding `guard` until a stream's end (or its drop); a whole body
    /// drops it now.
    pub(crate) fn holding<G: Send + 'static>(self, guard: G) -> Self {
        match self {
            Self::Stream(chunks) => Self::Stream(chunks.holding(guard, String::new())),
            whole => whole,
        }
    }

    /// The bytes of a whole body; `None` for a stream.
    pub(crate) fn into_whole(self) -> Option<Bytes> {
        match self {
            Self::Whole(full) => full.into_inner(),
            Self::Stream(_) => None,
        }
    }
}

impl http_body::Body for PlainBody {
    type Data = Bytes;
    type Error = BackendError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BackendError>>> {
        match self.get_mut() {
            Self::Whole(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Self::Stream(chunks) => loop {
                match Pin::new(&mut *chunks).poll_next(cx) {
                    // An empty chunk would end a chunked body early.
                    Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => {}
                    Poll::Ready(Some(Ok(chunk))) => {
                        break Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("a streamed answer failed: {}", e.message());
                        break Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(None) => break Poll::Ready(None),
                    Poll::Pending => break Poll::Pending,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(full) => full.is_end_stream(),
            Self::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(full) => full.size_hint(),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// A body that keeps `guard` until it ends, fails or is dropped: how a connection stays
/// busy while a streamed answer goes out through the middlewares.
pub(crate) struct Guarded<B, G> {
    body: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    pub(crate) fn new(body: B, guard: G) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response with a whole body as one the proxy writes.
pub(crate) fn plain(response: http::Response<Full<Bytes>>) -> http::Response<PlainBody> {
    response.map(PlainBody::Whole)
}

/// The request a replica sees, from the HTTP request's parts and its collected body.
pub(crate) fn into_request(
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Request, ServeError> {
    let method_name = match parts
        .headers
        .get(&CALL_METHOD_HEADER)
        .map(HeaderValue::to_str)
    {
        None => None,
        Some(Ok(name)) => Some(Cow::Owned(name.trim().to_owned())),
        Some(Err(_)) => {
            return Err(ServeError::BadRequest(
                "the X-SERVE-CALL-METHOD header is not valid text".to_owned(),
            ));
        }
    };
    let shard_key = parts
        .headers
        .get(&SHARD_KEY_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut request = Request::from_http(
        HttpParts {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
        },
        body,
    );
    if let Some(name) = method_name {
        request.set_method_name(name);
    }
    if let Some(key) = shard_key {
        request = request.with_shard_key(key);
    }
    Ok(request)
}

/// The wire form of a replica's answer or error.
pub(crate) fn into_http(result: Result<Response, ServeError>) -> http::Response<PlainBody> {
    match result {
        Ok(response) => {
            let (status, headers, body) = response.into_parts();
            let body = match body {
                ResponseBody::Bytes(bytes) => PlainBody::new(bytes),
                ResponseBody::Stream(chunks) => PlainBody::Stream(chunks),
                ResponseBody::Value(_) => {
                    return plain(
                        ServeError::Internal(
                            "the backend answered with a Rust value, which cannot be sent over HTTP; \
                             answer with text, bytes or JSON"
                                .to_owned(),
                        )
                        .to_http(),
                    );
                }
            };
            let mut response = http::Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(e) => plain(e.to_http()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http::header::CONTENT_TYPE;

    #[test]
    fn unusual_status_codes_pass_through() {
        let status = StatusCode::from_u16(123).expect("valid code");
        let r = into_http(Ok(Response::text("Hello, world!").with_status(status)));
        assert_eq!(r.status().as_u16(), 123);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn rust_values_cannot_go_over_http() {
        let r = into_http(Ok(Response::value(3u8)));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
