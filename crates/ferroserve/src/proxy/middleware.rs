//! The middleware stack: tower layers around the proxy's handler, type-erased so that a list from YAML can be built at run time.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

use crate::backend::BoxFuture;
use tower_http::ServiceBuilderExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::MakeRequestUuid;
use tower_http::timeout::TimeoutLayer;

use crate::config::{CorsOptions, Middleware};
use crate::controller::SnapshotCell;
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

/// Wraps `inner` in `layer`.
pub(crate) fn wrap<L: ProxyLayer + ?Sized>(inner: ProxyService, layer: &L) -> ProxyService {
    layer.wrap_service(inner)
}

/// The proxy's handler alone, as a [`ProxyService`].
fn handler(cell: Arc<SnapshotCell>) -> ProxyService {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        let cell = cell.clone();
        async move { Ok::<_, Infallible>(super::handle(&cell, req).await.into_proxy()) }
    }))
}

/// The handler wrapped in `middlewares` (the first outermost); `None` when there are none,
/// so the proxy can take its unboxed fast path.
pub(crate) fn build(
    middlewares: &[Middleware],
    cell: &Arc<SnapshotCell>,
) -> Result<Option<ProxyService>, ServeError> {
    if middlewares.is_empty() {
        return Ok(None);
    }
    let mut service = handler(cell.clone());
    for middleware in middlewares.iter().rev() {
        service = match middleware {
            Middleware::Cors(options) => cors(options)?.wrap_service(service),
            Middleware::Compression => CompressionLayer::new().wrap_service(service),
            Middleware::RequestId => ServiceBuilder::new()
                .set_x_request_id(MakeRequestUuid)
                .propagate_x_request_id()
                .wrap_service(service),
            Middleware::Timeout(after) => {
                TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, *after)
                    .wrap_service(service)
            }
            Middleware::BodyLimit(bytes) => {
                RequestBodyLimitLayer::new(*bytes).wrap_service(service)
            }
            Middleware::Custom(layer) => (layer.0)(service),
        };
    }
    Ok(Some(service))
}

fn header_values(key: &str, values: &[String]) -> Result<Vec<HeaderValue>, ServeError> {
    values
        .iter()
        .map(|v| {
            HeaderValue::from_str(v)
                .map_err(|_| ServeError::invalid(key, format!("`{v}` is not a valid header value")))
        })
        .collect()
}

fn header_names(key: &str, values: &[String]) -> Result<Vec<HeaderName>, ServeError> {
    values
        .iter()
        .map(|v| {
            HeaderName::from_bytes(v.as_bytes())
                .map_err(|_| ServeError::invalid(key, format!("`{v}` is not a header name")))
        })
        .collect()
}

fn is_any(values: &[String]) -> bool {
    values.iter().any(|v| v == "*")
}

/// The CORS layer for `options`, as Starlette's CORSMiddleware behaves.
fn cors(options: &CorsOptions) -> Result<CorsLayer, ServeError> {
    let credentials = options.allow_credentials;
    let origins = if is_any(&options.allow_origins) {
        if credentials {
            AllowOrigin::mirror_request()
        } else {
            AllowOrigin::any()
        }
    } else {
        AllowOrigin::list(header_values(
            "http.middlewares.cors.allow_origins",
            &options.allow_origins,
        )?)
    };
    let methods = if options.allow_methods.is_empty() {
        AllowMethods::list([Method::GET])
    } else if is_any(&options.allow_methods) {
        if credentials {
            AllowMethods::mirror_request()
        } else {
            AllowMethods::any()
        }
    } else {
        let methods = options
            .allow_methods
            .iter()
            .map(|m| {
                crate::config::parse_method(m)
                    .map_err(|e| ServeError::invalid("http.middlewares.cors.allow_methods", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowMethods::list(methods)
    };
    let headers = if is_any(&options.allow_headers) {
        if credentials {
            AllowHeaders::mirror_request()
        } else {
            AllowHeaders::any()
        }
    } else {
        AllowHeaders::list(header_names(
            "http.middlewares.cors.allow_headers",
            &options.allow_headers,
        )?)
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .allow_credentials(credentials)
        .expose_headers(ExposeHeaders::list(header_names(
            "http.middlewares.cors.expose_headers",
            &options.expose_headers,
        )?));
    if let Some(seconds) = options.max_age {
        layer = layer.max_age(std::time::Duration::from_secs(seconds));
    }
    Ok(layer)
}
