//! Responses from replicas: text, bytes, JSON, any Rust value, with status, headers and media type.

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

    /// The body bytes, unless the body is a Rust value.
    pub fn body(&self) -> Option<&Bytes> {
        match &self.body {
            ResponseBody::Bytes(b) => Some(b),
            ResponseBody::Value(_) => None,
        }
    }

    /// The body as UTF-8 text.
    pub fn body_text(&self) -> Result<String, BodyError> {
        let body = self
            .body()
            .ok_or_else(|| BodyError::unexpected("the response is a Rust value, not text"))?;
        String::from_utf8(body.to_vec())
            .map_err(|_| BodyError::unexpected("the response body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        let body = self
            .body()
            .ok_or_else(|| BodyError::unexpected("the response is a Rust value, not JSON"))?;
        serde_json::from_slice(body)
            .map_err(|e| BodyError::unexpected(format!("the response body is not valid JSON: {e}")))
    }

    /// The Rust value made with [`Response::value`], if it is a `T`.
    pub fn body_value<T: Any>(&self) -> Option<&T> {
        match &self.body {
            ResponseBody::Value(v) => v.downcast_ref(),
            ResponseBody::Bytes(_) => None,
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
