//! The HTTP ingress: accepts connections, matches routes and methods, hands requests to the router.

mod body;
pub(crate) mod convert;
mod informational;
mod middleware;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use informational::{PendingStatus, StatusPatchIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::config::{HttpOptions, RESERVED_PREFIX};
use crate::error::{ServeError, text_response};
use crate::layer::{BoxError, ProxyBody, ProxyService, box_error};
use crate::router::{self, SnapshotCell};
use convert::PlainBody;

/// How long a graceful shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The running HTTP proxy.
pub(crate) struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `options.host:options.port` and serves from `cell` through `options.middlewares`.
    pub(crate) async fn start(
        options: &HttpOptions,
        cell: Arc<SnapshotCell>,
    ) -> Result<Self, ServeError> {
        let stack = middleware::build(&options.middlewares, &cell, options.max_body_bytes)?;
        let listener = TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|e| {
                ServeError::BadRequest(format!(
                    "cannot listen on {}:{}: {e}",
                    options.host, options.port
                ))
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServeError::Internal(format!("no local address: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let max_body = options.max_body_bytes;
        let task = tokio::spawn(accept_loop(listener, cell, max_body, stack, stopped));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and closes every connection.
    pub(crate) async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!("the HTTP accept loop ended badly: {e}");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    max_body: usize,
    stack: Option<ProxyService>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let http = http1::Builder::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY: {e}");
                    }
                    let pending = Arc::new(PendingStatus::default());
                    let io = TokioIo::new(StatusPatchIo::new(stream, pending.clone()));
                    match &stack {
                        // No middleware: the handler's future, unboxed.
                        None => {
                            // A per-connection Arc: each request clones a count only this
                            // connection touches, not one every core contends on.
                            let connection = Arc::new(Connection { cell: cell.clone(), max_body, pending });
                            let service = service_fn(move |req| {
                                let connection = connection.clone();
                                async move {
                                    let response = handle(&connection.cell, connection.max_body, req).await;
                                    Ok::<_, Infallible>(connection.pending.prepare(response))
                                }
                            });
                            spawn_connection(graceful.watch(http.serve_connection(io, service)));
                        }
                        Some(stack) => {
                            let service = Stacked { stack: stack.clone(), pending };
                            spawn_connection(graceful.watch(http.serve_connection(io, service)));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
}

fn spawn_connection(serving: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// A connection's service when middlewares are configured: the boxed stack.
struct Stacked {
    stack: ProxyService,
    pending: Arc<PendingStatus>,
}

impl hyper::service::Service<http::Request<Incoming>> for Stacked {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let pending = self.pending.clone();
        let req = req.map(|body| body.map_err(box_error).boxed_unsync());
        // `map`, not an async block: see `Answering::call` in `crate::layer`.
        Box::pin(self.stack.clone().oneshot(req).map(move |result| {
            let Ok(response) = result;
            Ok(pending.prepare(response))
        }))
    }
}

/// What the requests of one connection share.
struct Connection {
    cell: Arc<SnapshotCell>,
    /// `http.max_body_bytes`.
    max_body: usize,
    /// A 1xx status this connection still has to put on the wire.
    pending: Arc<PendingStatus>,
}

/// Serves one HTTP request; its body may be `max_body` bytes at most, unless its endpoint
/// sets its own limit.
pub(crate) async fn handle<B>(
    cell: &SnapshotCell,
    max_body: usize,
    req: http::Request<B>,
) -> http::Response<PlainBody>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path();
    if path.starts_with(RESERVED_PREFIX) {
        return admin(cell, req.method(), path);
    }
    let snapshot = cell.load_full();
    let Some(endpoint) = snapshot.routes.lookup(path) else {
        return ServeError::RouteNotFound(path.to_owned()).to_http();
    };
    if !endpoint.allows(req.method()) {
        return ServeError::MethodNotAllowed {
            target: format!("endpoint `{}`", endpoint.name),
            allow: endpoint.allow.to_str().unwrap_or_default().to_owned(),
            method: Some(req.method().to_string()),
        }
        .to_http();
    }
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        let limit = endpoint.config.max_body_bytes.unwrap_or(max_body);
        let read = match body::check_declared(&parts.headers, limit) {
            Ok(()) => body::collect(body, limit).await,
            Err(too_large) => Err(too_large),
        };
        match read {
            Ok(bytes) => bytes,
            Err(e) => return e.to_http(),
        }
    };
    let request = match convert::into_request(parts, body) {
        Ok(request) => request,
        Err(e) => return e.to_http(),
    };
    convert::into_http(router::call(cell, endpoint, request).await)
}

/// Ferroserve's own routes under `/-/`.
fn admin(cell: &SnapshotCell, method: &Method, path: &str) -> http::Response<PlainBody> {
    match (method, path) {
        (&Method::GET, "/-/routes") => {
            let mut response = http::Response::new(Full::new(cell.load().routes_json.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        (&Method::GET, "/-/healthz") => text_response(StatusCode::OK, "ok\n".to_owned()),
        (_, "/-/routes" | "/-/healthz") => ServeError::MethodNotAllowed {
            target: path.to_owned(),
            allow: "GET".to_owned(),
            method: None,
        }
        .to_http(),
        _ => ServeError::ReservedRouteNotFound(path.to_owned()).to_http(),
    }
}
