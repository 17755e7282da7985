//! Call options: what a handle call asks of the request it sends (the method to run, a shard key, an HTTP shape).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::{DEFAULT_METHOD, HttpParts, Request};

/// Options of a handle call: the replica method to run and, to make the call HTTP-shaped,
/// an HTTP method, headers and query parameters.
///
/// ```
/// use ferroserve::CallOptions;
/// use http::Method;
/// let options = CallOptions::new()
///     .method_name("other_method")
///     .http_method(Method::POST)
///     .header("x-user", "ada")
///     .query_param("verbose", "1");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    method_name: Option<Cow<'static, str>>,
    shard_key: Option<Box<str>>,
    http_method: Option<Method>,
    headers: HeaderMap,
    /// The query string, already encoded.
    query: String,
}

impl CallOptions {
    /// No options: `__call__`, not HTTP-shaped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs this replica method instead of `__call__`.
    #[must_use]
    pub fn method_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.method_name = Some(name.into());
        self
    }

    /// Makes the choice of backend sticky for `key`, like the `X-SERVE-SHARD-KEY` header.
    #[must_use]
    pub fn shard_key(mut self, key: impl Into<Box<str>>) -> Self {
        self.shard_key = Some(key.into());
        self
    }

    /// Makes the call HTTP-shaped with this HTTP method.
    #[must_use]
    pub fn http_method(mut self, method: Method) -> Self {
        self.http_method = Some(method);
        self
    }

    /// Makes the call HTTP-shaped with this header (an invalid name or value is skipped
    /// with a warning).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => tracing::warn!(header = name, "skipping an invalid header in CallOptions"),
        }
        self
    }

    /// Makes the call HTTP-shaped with this query parameter.
    #[must_use]
    pub fn query_param(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let start = self.query.len();
        self.query =
            form_urlencoded::Serializer::for_suffix(std::mem::take(&mut self.query), start)
                .append_pair(name.as_ref(), value.as_ref())
                .finish();
        self
    }

    /// Makes the call HTTP-shaped with this query string, already encoded.
    pub(crate) fn query_string(mut self, query: String) -> Self {
        self.query = query;
        self
    }

    fn is_http(&self) -> bool {
        self.http_method.is_some() || !self.headers.is_empty() || !self.query.is_empty()
    }

    fn http_parts(&self, route: Option<&str>) -> HttpParts {
        let path = route.unwrap_or("/");
        let uri = if self.query.is_empty() {
            path.parse::<Uri>()
        } else {
            format!("{path}?{}", self.query).parse::<Uri>()
        };
        HttpParts {
            method: self.http_method.clone().unwrap_or(Method::GET),
            uri: uri.unwrap_or_else(|_| Uri::from_static("/")),
            headers: self.headers.clone(),
        }
    }

    /// `req` as these options shape it for an endpoint served on `route`: the method to run
    /// (`__call__` unless set, even for a forwarded request), the shard key, and HTTP parts
    /// (unless `req` already carries an HTTP request).
    pub(crate) fn apply(&self, mut req: Request, route: Option<&str>) -> Request {
        req.set_method_name(
            self.method_name
                .clone()
                .unwrap_or(Cow::Borrowed(DEFAULT_METHOD)),
        );
        if let Some(key) = &self.shard_key {
            req = req.with_shard_key(key.clone());
        }
        if self.is_http() && req.http().is_none() {
            req = req.with_http(self.http_parts(route));
        }
        req
    }
}
