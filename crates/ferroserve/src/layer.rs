//! Custom middleware: the body and service types a tower layer sees inside the proxy, and the `ProxyLayer` trait that wraps one around it.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::error::ServeError;

/// Errors of bodies inside the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Any error, boxed (a named function, so that closures infer `'static`).
pub(crate) fn box_error<E: Into<BoxError>>(error: E) -> BoxError {
    error.into()
}

/// The body of requests and responses inside the middleware stack.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The proxy's service as middlewares see it.
pub type ProxyService =
    BoxCloneSyncService<http::Request<ProxyBody>, http::Response<ProxyBody>, Infallible>;

/// Accepts a request with any body, boxes the body, and calls the inner service: what a
/// layer wraps, whatever body type it hands on.
#[derive(Clone)]
pub struct BoxRequestBody<S>(S);

impl<S, B> Service<http::Request<B>> for BoxRequestBody<S>
where
    S: Service<http::Request<ProxyBody>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0
            .call(req.map(|body| body.map_err(box_error).boxed_unsync()))
    }
}

/// A response with any body, as the stack's boxed response.
pub trait IntoProxyResponse {
    /// Boxes the body.
    fn into_proxy(self) -> http::Response<ProxyBody>;
}

impl<B> IntoProxyResponse for http::Response<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn into_proxy(self) -> http::Response<ProxyBody> {
        self.map(|body| body.map_err(box_error).boxed_unsync())
    }
}

/// A tower layer the proxy can wrap around its handler (see `HttpOptions::layer`).
pub trait ProxyLayer: Send + Sync + 'static {
    /// Wraps `inner`.
    fn wrap_service(&self, inner: ProxyService) -> ProxyService;
}

impl<L> ProxyLayer for L
where
    L: Layer<BoxRequestBody<ProxyService>> + Send + Sync + 'static,
    L::Service: Service<http::Request<ProxyBody>> + Clone + Send + Sync + 'static,
    <L::Service as Service<http::Request<ProxyBody>>>::Response: IntoProxyResponse,
    <L::Service as Service<http::Request<ProxyBody>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<ProxyBody>>>::Future: Send + 'static,
{
    fn wrap_service(&self, inner: ProxyService) -> ProxyService {
        BoxCloneSyncService::new(Answering {
            inner: self.layer(BoxRequestBody(inner)),
            failed: None,
        })
    }
}

/// Turns every outcome of a layer into a response: its errors, even from `poll_ready`,
/// become 500s with the error's text.
#[derive(Clone)]
struct Answering<S> {
    inner: S,
    failed: Option<Arc<str>>,
}

fn failure(error: &dyn std::fmt::Display) -> http::Response<ProxyBody> {
    ServeError::Internal(format!("a middleware failed: {error}"))
        .to_http()
        .into_proxy()
}

impl<S> Service<http::Request<ProxyBody>> for Answering<S>
where
    S: Service<http::Request<ProxyBody>>,
    S::Response: IntoProxyResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                self.failed = Some(box_error(error).to_string().into());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: http::Request<ProxyBody>) -> Self::Future {
        if let Some(error) = self.failed.take() {
            return Box::pin(std::future::ready(Ok(failure(&error))));
        }
        // `map`, not an async block: rustc cannot see that an async block holding this
        // future is `Send` for every lifetime of the boxed error type.
        Box::pin(self.inner.call(req).map(|result| {
            Ok(match result {
                Ok(response) => response.into_proxy(),
                Err(error) => failure(&box_error(error)),
            })
        }))
    }
}

/// A tower layer given to [`HttpOptions::layer`](crate::HttpOptions::layer), type-erased so
/// that the options that hold it stay plain data otherwise.
#[derive(Clone)]
pub struct CustomLayer(Arc<dyn ProxyLayer>);

impl CustomLayer {
    /// Wraps `layer`.
    pub fn new(layer: impl ProxyLayer) -> Self {
        Self(Arc::new(layer))
    }

    /// Wraps `inner` in the layer.
    pub(crate) fn wrap(&self, inner: ProxyService) -> ProxyService {
        self.0.wrap_service(inner)
    }

    /// Whether both are the same layer.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for CustomLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomLayer")
    }
}
