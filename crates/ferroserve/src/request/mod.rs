//! Requests as a replica sees them: HTTP-shaped or a handle's argument, and where they came from.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Uri};
use serde::de::DeserializeOwned;

use crate::error::BodyError;
use crate::form::Form;

mod options;

pub use options::CallOptions;

/// The method a request runs when nothing else is asked for.
pub const DEFAULT_METHOD: &str = "__call__";

/// The HTTP header that selects the replica method to run.
pub static CALL_METHOD_HEADER: HeaderName = HeaderName::from_static("x-serve-call-method");

/// The HTTP header whose value makes the choice of backend sticky.
pub static SHARD_KEY_HEADER: HeaderName = HeaderName::from_static("x-serve-shard-key");

static EMPTY_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);

const PICKLED: &str = "the request carries a pickled Python object, which only a Python backend can read; \
                       pass str, bytes, numbers or JSON-able values to Rust backends";

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Through the HTTP proxy.
    Http,
    /// Through a [`Handle`](crate::Handle) call in code.
    Handle,
}

/// The HTTP side of a request: method, URI and headers.
#[derive(Debug, Clone)]
pub struct HttpParts {
    /// The HTTP method (`GET`, `POST`, ...).
    pub method: Method,
    /// The request URI: path and query.
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
}

/// What a request carries.
pub(crate) enum Payload {
    /// Raw bytes: an HTTP body, or bytes given to a handle.
    Bytes(Bytes),
    /// UTF-8 text given to a handle (a Python backend gets a `str`).
    Text(Bytes),
    /// A Python object pickled by a Python caller, for a Python backend.
    Pickled(Bytes),
    /// A JSON value given to a handle.
    Json(serde_json::Value),
    /// Any Rust value given to a handle, passed through untouched.
    Value(Box<dyn Any + Send + Sync>),
}

/// A handle's argument: bytes, text, JSON, any Rust value, or a request to forward as it is.
///
/// ```
/// use ferroserve::Arg;
/// let text: Arg = "long string".into();
/// let json: Arg = serde_json::json!({"a": 1}).into();
/// let number: Arg = 5.into();
/// #[derive(Debug)]
/// struct Tensor(Vec<f32>);
/// let value = Arg::value(Tensor(vec![1.0, 2.0]));
/// # let _ = (text, json, number, value);
/// ```
pub enum Arg {
    /// Bytes.
    Bytes(Bytes),
    /// UTF-8 text.
    Text(Bytes),
    /// A JSON value.
    Json(serde_json::Value),
    /// Any Rust value (`Send + Sync`), handed to an in-process backend without serialisation.
    Value(Box<dyn Any + Send + Sync>),
    /// A request a backend received, forwarded unchanged (it keeps its origin and HTTP parts).
    Request(Box<Request>),
}

impl Arg {
    /// Any Rust value, passed through to an in-process backend untouched.
    pub fn value<T: Any + Send + Sync>(value: T) -> Self {
        Self::Value(Box::new(value))
    }

    /// Serialises `value` to JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(value).map(Self::Json)
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => f.debug_tuple("Bytes").field(b).finish(),
            Self::Text(b) => f.debug_tuple("Text").field(b).finish(),
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Value(_) => f.write_str("Value(..)"),
            Self::Request(r) => f.debug_tuple("Request").field(r).finish(),
        }
    }
}

impl From<()> for Arg {
    fn from((): ()) -> Self {
        Self::Bytes(Bytes::new())
    }
}
impl From<&'static str> for Arg {
    fn from(text: &'static str) -> Self {
        Self::Text(Bytes::from_static(text.as_bytes()))
    }
}
impl From<String> for Arg {
    fn from(text: String) -> Self {
        Self::Text(Bytes::from(text))
    }
}
impl From<Bytes> for Arg {
    fn from(bytes: Bytes) -> Self {
        Self::Bytes(bytes)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(Bytes::from(bytes))
    }
}
impl From<serde_json::Value> for Arg {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}
impl From<Request> for Arg {
    fn from(request: Request) -> Self {
        Self::Request(Box::new(request))
    }
}
macro_rules! json_scalar_args {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(value: $t) -> Self {
                Self::Json(serde_json::Value::from(value))
            }
        }
    )*};
}
json_scalar_args!(bool, i32, i64, u32, u64, f64);

/// Whether `value` is a W3C `traceparent` this version can pass on: version `00`, a
/// trace id of 32 and a parent id of 16 lower-case hex digits, neither all zeros, and
/// two hex digits of flags (a later version may be longer: its first 55 characters are
/// read the same way).
fn well_formed_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.get(..55).unwrap_or(value).split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let not_zero = |s: &str| s.bytes().any(|b| b != b'0');
    match fields.as_slice() {
        [version, trace, parent, flags] => {
            hex(version, 2)
                && *version != "ff"
                && (*version != "00" || value.len() == 55)
                && hex(trace, 32)
                && not_zero(trace)
                && hex(parent, 16)
                && not_zero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The W3C trace context header.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// One request to a replica, from HTTP or from a handle.
///
/// The same backend code serves both: [`Request::headers`], [`Request::query`],
/// [`Request::body`], [`Request::json`] and [`Request::form`] work whichever way the
/// request came, and [`Request::origin`] tells which. A handle argument that is not
/// HTTP-shaped (any Rust value) is reached with [`Request::value`] or
/// [`Request::take_value`].
pub struct Request {
    origin: Origin,
    method_name: Cow<'static, str>,
    shard_key: Option<Box<str>>,
    /// The caller is Python code: a Python backend answers it with a pickled object.
    pub(crate) python_caller: bool,
    http: Option<HttpParts>,
    payload: Payload,
    /// The W3C `traceparent` of the request that made this handle call (an HTTP request
    /// carries its own in its headers).
    trace: Option<std::sync::Arc<str>>,
}

impl Request {
    /// An HTTP request, as the proxy builds it.
    pub fn from_http(parts: HttpParts, body: Bytes) -> Self {
        Self {
            origin: Origin::Http,
            method_name: Cow::Borrowed(DEFAULT_METHOD),
            shard_key: None,
            python_caller: false,
            http: Some(parts),
            payload: Payload::Bytes(body),
            trace: None,
        }
    }

    /// A handle call with this argument (a forwarded [`Request`] keeps its origin).
    pub fn from_arg(arg: Arg) -> Self {
        let payload = match arg {
            Arg::Bytes(b) => Payload::Bytes(b),
            Arg::Text(b) => Payload::Text(b),
            Arg::Json(v) => Payload::Json(v),
            Arg::Value(v) => Payload::Value(v),
            Arg::Request(request) => return *request,
        };
        Self::from_payload(payload)
    }

    /// A handle call carrying `payload`.
    pub(crate) fn from_payload(payload: Payload) -> Self {
        Self {
            origin: Origin::Handle,
            method_name: Cow::Borrowed(DEFAULT_METHOD),
            shard_key: None,
            python_caller: false,
            http: None,
            payload,
            trace: None,
        }
    }

    /// The W3C trace context (`traceparent`) this request is part of: its
    /// `traceparent` header, or for a handle call the one of the request whose code made
    /// it (handle calls made while a request runs carry its trace on).
    /// One that is not well formed (`00-` 32 hex `-` 16 hex `-` 2 hex, not all zeros) is
    /// ignored, as the W3C spec says.
    pub fn traceparent(&self) -> Option<&str> {
        let value = match &self.trace {
            Some(trace) => trace,
            None => self
                .http
                .as_ref()?
                .headers
                .get(&TRACEPARENT)
                .and_then(|v| v.to_str().ok())?,
        };
        well_formed_traceparent(value).then_some(value)
    }

    /// Makes this request part of the trace `traceparent` (W3C trace context).
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<std::sync::Arc<str>>) -> Self {
        self.trace = Some(traceparent.into());
        self
    }

    /// Sets the replica method this request runs.
    #[must_use]
    pub fn with_method_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.method_name = name.into();
        self
    }

    /// Gives the request HTTP parts (a handle call made with HTTP options).
    #[must_use]
    pub fn with_http(mut self, parts: HttpParts) -> Self {
        self.http = Some(parts);
        self
    }

    pub(crate) fn set_method_name(&mut self, name: Cow<'static, str>) {
        self.method_name = name;
    }

    /// Makes the choice of backend sticky for `key`: the same key picks the same backend
    /// for as long as the traffic weights stay the same.
    #[must_use]
    pub fn with_shard_key(mut self, key: impl Into<Box<str>>) -> Self {
        self.shard_key = Some(key.into());
        self
    }

    /// The shard key (`X-SERVE-SHARD-KEY` or a handle's option), if any.
    pub fn shard_key(&self) -> Option<&str> {
        self.shard_key.as_deref()
    }

    /// A copy for a shadow backend; `None` when the request carries a Rust value, which
    /// cannot be copied.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        let payload = match &self.payload {
            Payload::Bytes(b) => Payload::Bytes(b.clone()),
            Payload::Text(b) => Payload::Text(b.clone()),
            Payload::Pickled(b) => Payload::Pickled(b.clone()),
            Payload::Json(v) => Payload::Json(v.clone()),
            Payload::Value(_) => return None,
        };
        Some(Self {
            origin: self.origin,
            method_name: self.method_name.clone(),
            shard_key: self.shard_key.clone(),
            python_caller: self.python_caller,
            http: self.http.clone(),
            payload,
            trace: self.trace.clone(),
        })
    }

    /// Where the request came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The replica method to run: `__call__` unless the caller asked for another.
    pub fn method_name(&self) -> &str {
        &self.method_name
    }

    /// The HTTP parts: present for HTTP requests and for handle calls made with HTTP options.
    pub fn http(&self) -> Option<&HttpParts> {
        self.http.as_ref()
    }

    /// The HTTP method, if the request is HTTP-shaped.
    pub fn http_method(&self) -> Option<&Method> {
        self.http.as_ref().map(|h| &h.method)
    }

    /// The URL path, if the request is HTTP-shaped.
    pub fn path(&self) -> Option<&str> {
        self.http.as_ref().map(|h| h.uri.path())
    }

    /// The headers (empty for a plain handle call).
    pub fn headers(&self) -> &HeaderMap {
        self.http.as_ref().map_or(&EMPTY_HEADERS, |h| &h.headers)
    }

    /// One header as text, if present and valid UTF-8. Names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The query parameters in order, decoded; repeated keys appear once per value.
    pub fn query(&self) -> Vec<(String, String)> {
        self.http
            .as_ref()
            .and_then(|h| h.uri.query())
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last value of one query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.http.as_ref()?.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .last()
            .map(|(_, v)| v.into_owned())
    }

    /// How many bytes the request carries, known without encoding anything: `None` for a
    /// JSON value (it would have to be written out to tell), `Some(0)` for a Rust value.
    pub(crate) fn byte_len(&self) -> Option<usize> {
        match &self.payload {
            Payload::Bytes(b) | Payload::Text(b) | Payload::Pickled(b) => Some(b.len()),
            Payload::Json(_) => None,
            Payload::Value(_) => Some(0),
        }
    }

    /// The body as bytes: the HTTP body, or the bytes, text or JSON given to a handle.
    pub fn body(&self) -> Result<Bytes, BodyError> {
        match &self.payload {
            Payload::Bytes(b) | Payload::Text(b) => Ok(b.clone()),
            Payload::Pickled(_) => Err(BodyError::bad_request(PICKLED)),
            Payload::Json(v) => serde_json::to_vec(v)
                .map(Bytes::from)
                .map_err(|e| BodyError::unexpected(e.to_string())),
            Payload::Value(_) => Err(BodyError::unexpected(
                "the request carries a Rust value, not bytes; use Request::value",
            )),
        }
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, BodyError> {
        let body = self.body()?;
        String::from_utf8(body.to_vec())
            .map_err(|_| BodyError::bad_request("the request body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        match &self.payload {
            Payload::Json(v) => T::deserialize(v).map_err(|e| {
                BodyError::bad_request(format!("the JSON argument does not fit: {e}"))
            }),
            Payload::Pickled(_) => Err(BodyError::bad_request(PICKLED)),
            Payload::Bytes(b) | Payload::Text(b) => serde_json::from_slice(b).map_err(|e| {
                BodyError::bad_request(format!("the request body is not valid JSON: {e}"))
            }),
            Payload::Value(_) => Err(BodyError::unexpected(
                "the request carries a Rust value, not JSON; use Request::value",
            )),
        }
    }

    /// The body as a form: `application/x-www-form-urlencoded` or `multipart/form-data`
    /// (by the `content-type` header; URL-encoded when there is none), or the JSON object a
    /// handle passed.
    pub async fn form(&self) -> Result<Form, BodyError> {
        let content_type = self.header("content-type").unwrap_or_default();
        match &self.payload {
            Payload::Json(value) => Form::from_json(value),
            Payload::Value(_) => Err(BodyError::unexpected(
                "the request carries a Rust value, not a form; use Request::value",
            )),
            Payload::Pickled(_) => Err(BodyError::bad_request(PICKLED)),
            Payload::Bytes(body) | Payload::Text(body) => {
                let media_type = content_type.split(';').next().unwrap_or_default().trim();
                if media_type.eq_ignore_ascii_case("multipart/form-data") {
                    Form::from_multipart(content_type, body.clone()).await
                } else if media_type.is_empty()
                    || media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
                {
                    Ok(Form::from_urlencoded(body))
                } else {
                    Err(BodyError::with_status(
                        format!("a `{media_type}` body is not a form"),
                        http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ))
                }
            }
        }
    }

    /// The Rust value a handle passed, if it is a `T`.
    pub fn value<T: Any>(&self) -> Option<&T> {
        match &self.payload {
            Payload::Value(v) => v.downcast_ref(),
            _ => None,
        }
    }

    /// Takes the Rust value a handle passed, if it is a `T`; otherwise gives the request back.
    #[allow(clippy::result_large_err)]
    pub fn take_value<T: Any>(self) -> Result<T, Self> {
        match self.payload {
            Payload::Value(v) => match v.downcast::<T>() {
                Ok(value) => Ok(*value),
                Err(v) => Err(Self {
                    payload: Payload::Value(v),
                    ..self
                }),
            },
            payload => Err(Self { payload, ..self }),
        }
    }

    pub(crate) fn payload(&self) -> &Payload {
        &self.payload
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("origin", &self.origin)
            .field("method_name", &self.method_name)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_well_formed_traceparents_are_passed_on() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = |t: &str| Request::from_arg(Arg::from("x")).with_traceparent(t);
        assert_eq!(req(good).traceparent(), Some(good));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "x=1 backend=evil",
            "",
        ] {
            assert_eq!(req(bad).traceparent(), None, "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(
            req(later).traceparent(),
            Some(later),
            "a later version's prefix"
        );
    }

    use super::*;

    fn http_request(uri: &str, body: &'static str) -> Request {
        let mut headers = HeaderMap::new();
        headers.insert("X-Token", "abc".parse().expect("valid header"));
        Request::from_http(
            HttpParts {
                method: Method::POST,
                uri: uri.parse().expect("valid uri"),
                headers,
            },
            Bytes::from_static(body.as_bytes()),
        )
    }

    #[test]
    fn http_request_mirrors_its_parts() {
        let req = http_request("/p?a=1&b=x%20y&a=2", r#"{"k": 3}"#);
        assert_eq!(req.origin(), Origin::Http);
        assert_eq!(req.method_name(), "__call__");
        assert_eq!(req.path(), Some("/p"));
        assert_eq!(req.header("x-token"), Some("abc"));
        assert_eq!(req.query_param("a").as_deref(), Some("2"));
        assert_eq!(req.query_param("b").as_deref(), Some("x y"));
        assert_eq!(req.query().len(), 3);
        let v: serde_json::Value = req.json().expect("json body");
        assert_eq!(v["k"], 3);
    }

    #[test]
    fn handle_values_pass_through_untouched() {
        #[derive(Debug, PartialEq)]
        struct Tensor(Vec<u8>);
        let req = Request::from_arg(Arg::value(Tensor(vec![1, 2])));
        assert_eq!(req.origin(), Origin::Handle);
        assert!(req.headers().is_empty());
        assert_eq!(req.value::<Tensor>(), Some(&Tensor(vec![1, 2])));
        assert!(req.body().is_err());
        let req = req.take_value::<String>().expect_err("not a String");
        assert_eq!(req.take_value::<Tensor>().ok(), Some(Tensor(vec![1, 2])));
    }

    #[test]
    fn forwarded_requests_keep_their_origin() {
        let forwarded = Request::from_arg(http_request("/a", "hi").into());
        assert_eq!(forwarded.origin(), Origin::Http);
        assert_eq!(forwarded.text().expect("text"), "hi");
    }

    #[test]
    fn json_args_read_as_json_and_bytes() {
        let req = Request::from_arg(5.into());
        assert_eq!(req.json::<i64>().expect("number"), 5);
        assert_eq!(req.text().expect("text"), "5");
    }
}
