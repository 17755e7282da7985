//! Handles: calling endpoints from code through the same router as HTTP, `ResponseRef`s and `wait`.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tokio::task::JoinHandle;

use crate::controller::SnapshotCell;
use crate::error::ServeError;
use crate::replica::panic_message;
use crate::request::{Arg, DEFAULT_METHOD, HttpParts, Request};
use crate::response::Response;
use crate::router;

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
    query: Vec<(String, String)>,
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
    pub fn query_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
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
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.query)
                .finish();
            format!("{path}?{query}").parse::<Uri>()
        };
        HttpParts {
            method: self.http_method.clone().unwrap_or(Method::GET),
            uri: uri.unwrap_or_else(|_| Uri::from_static("/")),
            headers: self.headers.clone(),
        }
    }
}

/// A client for one endpoint, from code.
///
/// [`Handle::remote`] sends a request at once, through the same traffic policy, replica
/// choice and queue as HTTP, and returns a [`ResponseRef`] to await or [`wait`] on.
/// Handles are cheap to clone.
#[derive(Clone)]
pub struct Handle {
    cell: Arc<SnapshotCell>,
    endpoint: Arc<str>,
    options: CallOptions,
}

impl Handle {
    pub(crate) fn new(cell: Arc<SnapshotCell>, endpoint: &str) -> Self {
        Self {
            cell,
            endpoint: endpoint.into(),
            options: CallOptions::default(),
        }
    }

    /// The endpoint this handle calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle that runs replica method `name` instead of `__call__`.
    #[must_use]
    pub fn method(&self, name: impl Into<Cow<'static, str>>) -> Self {
        let mut handle = self.clone();
        handle.options.method_name = Some(name.into());
        handle
    }

    /// A handle with these call options.
    #[must_use]
    pub fn options(&self, options: CallOptions) -> Self {
        let mut handle = self.clone();
        handle.options = options;
        handle
    }

    /// Sends `arg` to the endpoint now and returns a reference to the answer.
    ///
    /// The request runs whether or not the reference is awaited, like a Ray `ObjectRef`.
    pub fn remote(&self, arg: impl Into<Arg>) -> ResponseRef {
        let arg = arg.into();
        let method = self
            .options
            .method_name
            .clone()
            .unwrap_or(Cow::Borrowed(DEFAULT_METHOD));
        let http = self.options.is_http();
        let cell = self.cell.clone();
        let endpoint = self.endpoint.clone();
        let options = http.then(|| self.options.clone());
        let shard_key = self.options.shard_key.clone();
        let call = async move {
            let snapshot = cell.load_full();
            let endpoint = snapshot
                .endpoints
                .get(&*endpoint)
                .ok_or_else(|| ServeError::EndpointNotFound(endpoint.to_string()))?;
            let mut req = Request::from_arg(arg);
            req.set_method_name(method);
            if let Some(key) = shard_key {
                req = req.with_shard_key(key);
            }
            if let Some(options) = options
                && req.http().is_none()
            {
                req = req.with_http(options.http_parts(endpoint.config.route.as_deref()));
            }
            router::call(&cell, endpoint, req).await
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => ResponseRef::running(runtime.spawn(call)),
            Err(_) => ResponseRef::ready(Err(ServeError::Internal(
                "Handle::remote must be called inside the Tokio runtime that runs Ferroserve"
                    .to_owned(),
            ))),
        }
    }
}

enum RefState {
    Running(JoinHandle<Result<Response, ServeError>>),
    Ready(Result<Response, ServeError>),
    Taken,
}

/// A reference to the answer of a [`Handle::remote`] call: await it for the answer, or
/// pass many to [`wait`].
pub struct ResponseRef {
    state: RefState,
}

impl ResponseRef {
    fn running(task: JoinHandle<Result<Response, ServeError>>) -> Self {
        Self {
            state: RefState::Running(task),
        }
    }

    fn ready(result: Result<Response, ServeError>) -> Self {
        Self {
            state: RefState::Ready(result),
        }
    }

    /// Whether the answer has arrived (as far as the last poll or [`wait`] saw).
    pub fn is_ready(&self) -> bool {
        !matches!(self.state, RefState::Running(_))
    }

    /// Polls the running call; once done, keeps its answer.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let RefState::Running(task) = &mut self.state {
            let result = match std::task::ready!(Pin::new(task).poll(cx)) {
                Ok(result) => result,
                Err(e) => Err(match e.try_into_panic() {
                    Ok(payload) => ServeError::Internal(format!(
                        "the call panicked: {}",
                        panic_message(&*payload)
                    )),
                    Err(e) => ServeError::Internal(format!("the call was cancelled: {e}")),
                }),
            };
            self.state = RefState::Ready(result);
        }
        Poll::Ready(())
    }
}

impl Future for ResponseRef {
    type Output = Result<Response, ServeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::task::ready!(self.poll_done(cx));
        match std::mem::replace(&mut self.state, RefState::Taken) {
            RefState::Ready(result) => Poll::Ready(result),
            _ => Poll::Ready(Err(ServeError::Internal(
                "ResponseRef polled after completion".to_owned(),
            ))),
        }
    }
}

/// Waits until `num_returns` of `refs` are ready or `timeout` passes, like `ray.wait`.
///
/// Returns `(ready, pending)`: at most `num_returns` ready references, in the order given,
/// and the rest.
pub async fn wait(
    mut refs: Vec<ResponseRef>,
    num_returns: usize,
    timeout: Option<Duration>,
) -> (Vec<ResponseRef>, Vec<ResponseRef>) {
    let target = num_returns.min(refs.len());
    let enough = poll_fn(|cx| {
        let ready = refs
            .iter_mut()
            .map(|r| r.poll_done(cx))
            .filter(Poll::is_ready)
            .count();
        if ready >= target {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    match timeout {
        Some(limit) => {
            let _ = tokio::time::timeout(limit, enough).await;
        }
        None => enough.await,
    }
    let mut ready = Vec::with_capacity(target);
    let mut pending = Vec::new();
    for r in refs {
        if r.is_ready() && ready.len() < num_returns {
            ready.push(r);
        } else {
            pending.push(r);
        }
    }
    (ready, pending)
}
