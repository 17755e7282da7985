//! Responses from replicas: text, bytes, JSON, a stream of chunks, any Rust value, with status, headers and media type.

mod stream;

pub use stream::{Chunks, sse_event};

use std::any::Any;
use std::fmt;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{BackendError, BodyError};

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// What a response carries.
pub(crate) enum ResponseBody {
    /// Bytes for the wire.
    Bytes(Bytes),
    /// A Rust value for an in-process handle caller.
    Value(Box<dyn Any + Send + Sync>),
    /// Chunks made while the answer goes out.
    Stream(Chunks),
}

/// A replica's answer: a status code, headers (the media type among them) and a body.
///
/// Over HTTP it goes on the wire as given; through a handle the caller gets it back as is,
/// including a Rust value made with [`Response::value`].
///
/// ```
/// use ferroserve::Response;
/// use http::StatusCode;
///
/// let hello = Response::text("Hello, world!").with_status(StatusCode::from_u16(123).unwrap());
/// assert_eq!(hello.status().as_u16(), 123);
/// assert_eq!(hello.media_type(), Some("text/plain; charset=utf-8"));
///
/// let json = Response::json(&serde_json::json!({"current": 1})).unwrap();
/// assert_eq!(json.body_text().unwrap(), r#"{"current":1}"#);
/// ```
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: ResponseBody,
}

impl Response {
    fn with_body(body: ResponseBody, media_type: Option<HeaderValue>) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(media_type) = media_type {
            headers.insert(CONTENT_TYPE, media_type);
        }
        Self {
            status: StatusCode::OK,
            headers,
            body,
        }
    }

    /// A `text/plain` response.
    pub fn text(text: impl Into<String>) -> Self {
        Self::with_body(
            ResponseBody::Bytes(Bytes::from(text.into())),
            Some(TEXT_PLAIN),
        )
    }

    /// A `text/plain` response from a static string, without copying it.
    pub fn static_text(text: &'static str) -> Self {
        Self::with_body(
            ResponseBody::Bytes(Bytes::from_static(text.as_bytes())),
            Some(TEXT_PLAIN),
        )
    }

    /// An `application/json` response serialised from `value`.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, BackendError> {
        let body = serde_json::to_vec(value)?;
        Ok(Self::with_body(
            ResponseBody::Bytes(Bytes::from(body)),
            Some(APPLICATION_JSON),
        ))
    }

    /// An `application/octet-stream` response.
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Self::with_body(ResponseBody::Bytes(bytes.into()), Some(OCTET_STREAM))
    }

    /// An empty response (no body, no media type).
    pub fn empty() -> Self {
        Self::with_body(ResponseBody::Bytes(Bytes::new()), None)
    }

    /// Any Rust value, handed to an in-process handle caller untouched. An HTTP caller gets
    /// a 500 saying the value cannot be sent.
    pub fn value<T: Any + Send + Sync>(value: T) -> Self {
        Self::with_body(ResponseBody::Value(Box::new(value)), None)
    }

    /// A streaming response: each chunk of `stream` goes to an HTTP client as soon as it is
    /// made (chunked transfer encoding), and a handle caller reads them with
    /// [`Response::into_chunks`]. The stream is polled only as fast as the client reads, and
    /// dropped if the client leaves; an error ends the answer early (over HTTP the
    /// connection closes without the last chunk, so the client sees it cut short).
    ///
    /// The media type is `application/octet-stream` unless set; see
    /// [`Response::event_stream`] for server-sent events.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ferroserve::{BackendError, Response};
    /// use futures_util::StreamExt;
    ///
    /// let tokens = futures_util::stream::iter(["Hello", ", ", "world"])
    ///     .map(|t| Ok::<_, BackendError>(Bytes::from(t)));
    /// let response = Response::stream(tokens).with_media_type(http::HeaderValue::from_static("text/plain"));
    /// assert!(response.is_stream());
    /// ```
    pub fn stream<S, E>(stream: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BackendError>,
    {
        use futures_util::StreamExt as _;
        // A panic while making a chunk ends the stream with an error, as an error would.
        let chunks = std::panic::AssertUnwindSafe(stream.map(|c| c.map_err(Into::into)))
            .catch_unwind()
            .map(|polled| {
                polled.unwrap_or_else(|panic| {
                    Err(BackendError::msg(format!(
                        "panicked while streaming: {}",
                        crate::error::panic_message(&*panic)
                    )))
                })
            });
        Self::with_body(
            ResponseBody::Stream(Chunks::new(chunks)),
            Some(OCTET_STREAM),
        )
    }

    /// A stream of server-sent events (`text/event-stream`, not cached): each item is one
    /// event as it goes on the wire, as [`sse_event`] frames it.
    pub fn event_stream<S, E>(events: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BackendError>,
    {
        Self::stream(events)
            .with_media_type(HeaderValue::from_static("text/event-stream"))
            .with_header(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            )
    }

    /// Sets the status code; any code from 100 to 999 goes on the wire as given.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Sets the media type (the `content-type` header).
    #[must_use]
    pub fn with_media_type(mut self, media_type: HeaderValue) -> Self {
        self.headers.insert(CONTENT_TYPE, media_type);
        self
    }

    /// Adds a header (a second value for the same name is appended).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Adds a header from text, failing if the name or value is not valid in HTTP.
    pub fn try_with_header(self, name: &str, value: &str) -> Result<Self, BackendError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BackendError::msg(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| BackendError::msg(format!("invalid value for header `{name}`")))?;
        Ok(self.with_header(name, value))
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to change them.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The media type, if set.
    pub fn media_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// The body bytes, unless the body is a Rust value or a stream.
    pub fn body(&self) -> Option<&Bytes> {
        match &self.body {
            ResponseBody::Bytes(b) => Some(b),
            ResponseBody::Value(_) | ResponseBody::Stream(_) => None,
        }
    }

    /// Whether the body is a stream of chunks ([`Response::stream`]).
    pub fn is_stream(&self) -> bool {
        matches!(self.body, ResponseBody::Stream(_))
    }

    /// The body as chunks, read as they come: a stream's chunks, or a whole body as one
    /// chunk. A Rust value gives an error.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use futures_util::StreamExt;
    /// let mut chunks = ferroserve::Response::text("whole").into_chunks();
    /// assert_eq!(&chunks.next().await.unwrap().unwrap()[..], b"whole");
    /// assert!(chunks.next().await.is_none());
    /// # });
    /// ```
    pub fn into_chunks(self) -> Chunks {
        match self.body {
            ResponseBody::Bytes(bytes) => Chunks::whole(bytes),
            ResponseBody::Stream(chunks) => chunks,
            ResponseBody::Value(_) => Chunks::new(futures_util::stream::once(async {
                Err(BackendError::msg(
                    "the response is a Rust value, not a stream of bytes",
                ))
            })),
        }
    }

    /// The same response with `chunks` as its body.
    pub(crate) fn with_chunks(self, chunks: Chunks) -> Self {
        Self {
            body: ResponseBody::Stream(chunks),
            ..self
        }
    }

    /// The same response with a whole body: a stream read to its end (failing past `limit`
    /// bytes); other bodies as they are.
    pub async fn collected(self, limit: usize) -> Result<Self, BackendError> {
        match self.body {
            ResponseBody::Stream(chunks) => {
                let bytes = chunks.collect(limit).await?;
                Ok(Self {
                    body: ResponseBody::Bytes(bytes),
                    ..self
                })
            }
            body => Ok(Self { body, ..self }),
        }
    }

    /// The same response, holding `guard` until its stream ends or is dropped, and saying
    /// `context` before the message of an error that ends it early. A whole body drops the
    /// guard at once.
    pub(crate) fn holding<G: Send + 'static>(self, guard: G, context: String) -> Self {
        match self.body {
            ResponseBody::Stream(chunks) => Self {
                body: ResponseBody::Stream(chunks.holding(guard, context)),
                ..self
            },
            body => Self { body, ..self },
        }
    }

    /// The body as UTF-8 text.
    pub fn body_text(&self) -> Result<String, BodyError> {
        let body = self
            .body()
            .ok_or_else(|| BodyError::unexpected("the response is a Rust value or a stream, not text (collect a stream with `collected`)"))?;
        String::from_utf8(body.to_vec())
            .map_err(|_| BodyError::unexpected("the response body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        let body = self
            .body()
            .ok_or_else(|| BodyError::unexpected("the response is a Rust value or a stream, not JSON (collect a stream with `collected`)"))?;
        serde_json::from_slice(body)
            .map_err(|e| BodyError::unexpected(format!("the response body is not valid JSON: {e}")))
    }

    /// The Rust value made with [`Response::value`], if it is a `T`.
    pub fn body_value<T: Any>(&self) -> Option<&T> {
        match &self.body {
            ResponseBody::Value(v) => v.downcast_ref(),
            ResponseBody::Bytes(_) | ResponseBody::Stream(_) => None,
        }
    }

    /// Takes the Rust value made with [`Response::value`], if it is a `T`.
    #[allow(clippy::result_large_err)]
    pub fn into_value<T: Any>(self) -> Result<T, Self> {
        match self.body {
            ResponseBody::Value(v) => match v.downcast::<T>() {
                Ok(value) => Ok(*value),
                Err(v) => Err(Self {
                    body: ResponseBody::Value(v),
                    ..self
                }),
            },
            body => Err(Self { body, ..self }),
        }
    }

    pub(crate) fn into_parts(self) -> (StatusCode, HeaderMap, ResponseBody) {
        (self.status, self.headers, self.body)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Response");
        s.field("status", &self.status)
            .field("headers", &self.headers);
        match &self.body {
            ResponseBody::Bytes(b) => s.field("body", b),
            ResponseBody::Value(_) => s.field("body", &"<rust value>"),
            ResponseBody::Stream(_) => s.field("body", &"<stream>"),
        };
        s.finish()
    }
}

impl From<&'static str> for Response {
    fn from(text: &'static str) -> Self {
        Self::static_text(text)
    }
}
impl From<String> for Response {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}
impl From<Bytes> for Response {
    fn from(bytes: Bytes) -> Self {
        Self::bytes(bytes)
    }
}
impl From<Vec<u8>> for Response {
    fn from(bytes: Vec<u8>) -> Self {
        Self::bytes(bytes)
    }
}
impl From<serde_json::Value> for Response {
    fn from(value: serde_json::Value) -> Self {
        // A `Value` always serialises.
        let body = serde_json::to_vec(&value).unwrap_or_default();
        Self::with_body(
            ResponseBody::Bytes(Bytes::from(body)),
            Some(APPLICATION_JSON),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_for_handles() {
        let r = Response::value(vec![1u8, 2, 3]);
        assert!(r.body().is_none());
        assert_eq!(r.body_value::<Vec<u8>>(), Some(&vec![1, 2, 3]));
        let r = r.into_value::<String>().expect_err("not a String");
        assert_eq!(r.into_value::<Vec<u8>>().ok(), Some(vec![1, 2, 3]));
    }

    #[test]
    fn headers_and_media_types_are_kept() {
        let r = Response::text("x")
            .with_media_type(HeaderValue::from_static("text/csv"))
            .try_with_header("X-Model", "v2")
            .expect("valid header");
        assert_eq!(r.media_type(), Some("text/csv"));
        assert_eq!(r.headers()["x-model"], "v2");
        assert!(Response::empty().try_with_header("bad name", "v").is_err());
    }
}
