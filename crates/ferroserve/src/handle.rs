//! Handles: calling endpoints from code through the same router as HTTP, `ResponseRef`s and `wait`.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::backend::EndpointCaller;
use crate::error::{ServeError, panic_message};
use crate::request::{Arg, CallOptions, Request};
use crate::response::Response;
use crate::router::{self, SnapshotCell};

/// A client for one endpoint, from code.
///
/// [`Handle::remote`] sends a request at once, through the same traffic policy, replica
/// choice and queue as HTTP, and returns a [`ResponseRef`] to await or [`wait`] on.
/// Handles are cheap to clone.
#[derive(Clone)]
pub struct Handle {
    cell: Arc<SnapshotCell>,
    endpoint: Arc<str>,
    options: Arc<CallOptions>,
}

impl Handle {
    pub(crate) fn new(cell: Arc<SnapshotCell>, endpoint: &str) -> Self {
        Self {
            cell,
            endpoint: endpoint.into(),
            options: Arc::default(),
        }
    }

    /// The endpoint this handle calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle that runs replica method `name` instead of `__call__`.
    #[must_use]
    pub fn method(&self, name: impl Into<Cow<'static, str>>) -> Self {
        self.options(CallOptions::clone(&self.options).method_name(name))
    }

    /// A handle with these call options.
    #[must_use]
    pub fn options(&self, options: CallOptions) -> Self {
        Self {
            options: Arc::new(options),
            ..self.clone()
        }
    }

    /// Sends `arg` to the endpoint now and returns a reference to the answer.
    ///
    /// The request runs whether or not the reference is awaited, like a Ray `ObjectRef`.
    pub fn remote(&self, arg: impl Into<Arg>) -> ResponseRef {
        let mut req = Request::from_arg(arg.into());
        // Made while a traced request runs: part of its trace.
        if req.traceparent().is_none()
            && let Some(trace) = router::context::current_traceparent()
        {
            req = req.with_traceparent(trace);
        }
        let (cell, endpoint, options) = (
            self.cell.clone(),
            self.endpoint.clone(),
            self.options.clone(),
        );
        let call = async move { call_endpoint(&cell, &endpoint, req, &options).await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => ResponseRef::running(runtime.spawn(call)),
            Err(_) => ResponseRef::ready(Err(ServeError::Internal(
                "Handle::remote must be called inside the Tokio runtime that runs Ferroserve"
                    .to_owned(),
            ))),
        }
    }
}

/// Sends `req`, shaped by `options`, to `endpoint` through the router: what every handle
/// call, from Rust or from a Python worker, comes down to.
async fn call_endpoint(
    cell: &SnapshotCell,
    endpoint: &str,
    req: Request,
    options: &CallOptions,
) -> Result<Response, ServeError> {
    let snapshot = cell.load_full();
    let endpoint = snapshot
        .endpoints
        .get(endpoint)
        .ok_or_else(|| ServeError::EndpointNotFound(endpoint.to_owned()))?;
    endpoint.stats.handle_calls.add(1);
    let req = options.apply(req, endpoint.config.route.as_deref());
    router::call(cell, endpoint, req).await
}

/// The caller handed to replicas for the handle calls their code makes: it holds the cell
/// weakly, so that a replica never keeps the snapshots that hold it alive.
pub(crate) struct Caller(Weak<SnapshotCell>);

impl Caller {
    /// A caller reading `cell`.
    pub(crate) fn new(cell: &Arc<SnapshotCell>) -> Arc<Self> {
        Arc::new(Self(Arc::downgrade(cell)))
    }
}

impl EndpointCaller for Caller {
    fn call(
        &self,
        endpoint: &str,
        req: Request,
        options: CallOptions,
    ) -> BoxFuture<'static, Result<Response, ServeError>> {
        let (cell, endpoint) = (self.0.clone(), endpoint.to_owned());
        // Made while a traced request runs: part of its trace.
        let req = match router::context::current_traceparent() {
            Some(trace) if req.traceparent().is_none() => req.with_traceparent(trace),
            _ => req,
        };
        Box::pin(async move {
            let cell = cell.upgrade().ok_or(ServeError::ShuttingDown)?;
            call_endpoint(&cell, &endpoint, req, &options).await
        })
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
