//! The HTTP ingress: accepts connections, matches routes and methods, hands requests to the router.

mod access_log;
mod body;
mod connections;
pub(crate) mod convert;
mod informational;
mod middleware;
mod oip;
mod peer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use body::BodyRules;
use bytes::Bytes;
use connections::{AcceptErrors, Activity, Registry};
use futures_util::FutureExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use informational::{PendingStatus, StatusPatchIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::config::{AccessLog, HttpOptions, RESERVED_PREFIX};
use crate::error::{ServeError, text_response};
use crate::layer::{BoxError, IntoProxyResponse, ProxyBody, ProxyService, box_error};
use crate::metrics::{EndpointStats, method_index};
use crate::router::{self, SnapshotCell};
use convert::PlainBody;
pub(crate) use peer::{PeerServer, serve_peers};

/// At shutdown, how long an idle keep-alive connection stays open (at most half the grace):
/// a client that sent its next request as the server stopped gets its answer, with
/// `Connection: close`, rather than a connection closed under the request.
const LINGER: Duration = Duration::from_millis(250);

/// How long the 503s of requests abandoned at shutdown may take to go out.
const ABANDONED_FLUSH: Duration = Duration::from_secs(2);

/// Checks `options` as [`HttpServer::start`] would, without binding: the values and the
/// middleware stack (CORS header values, ...).
pub(crate) fn check(options: &HttpOptions) -> Result<(), ServeError> {
    options.validate()?;
    let rules = BodyRules {
        max_bytes: options.max_body_bytes,
        idle: options.body_timeout,
        access_log: options.access_log,
    };
    let cell = Arc::new(SnapshotCell::default());
    middleware::build(&options.middlewares, &cell, rules).map(drop)
}

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
        options.validate()?;
        let rules = BodyRules {
            max_bytes: options.max_body_bytes,
            idle: options.body_timeout,
            access_log: options.access_log,
        };
        let stack = middleware::build(&options.middlewares, &cell, rules)?;
        // Raised whatever the cap: Python workers and files need descriptors too.
        connections::raise_fd_limit();
        let max_connections = options
            .max_connections
            .unwrap_or_else(connections::default_max_connections);
        let listener = TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|e| ServeError::CannotListen {
                addr: format!("{}:{}", options.host, options.port),
                reason: match e.kind() {
                    std::io::ErrorKind::AddrInUse => format!(
                        "port {} is already in use (stop what listens there, or pick another port with --port or FERROSERVE_PORT)",
                        options.port
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "not allowed to listen on port {} (ports below 1024 need privileges)",
                        options.port
                    ),
                    _ => e.to_string(),
                },
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServeError::Internal(format!("no local address: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let serving = Serving {
            cell,
            rules,
            stack,
            registry: Arc::new(Registry::new(max_connections)),
            header_timeout: options.header_timeout,
            grace: options.graceful_shutdown_timeout,
        };
        let task = tokio::spawn(accept_loop(listener, serving, stopped));
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

/// What every connection of one server shares.
struct Serving {
    cell: Arc<SnapshotCell>,
    rules: BodyRules,
    stack: Option<ProxyService>,
    registry: Arc<Registry>,
    header_timeout: Duration,
    /// `http.graceful_shutdown_timeout_s`.
    grace: Duration,
}

async fn accept_loop(listener: TcpListener, serving: Serving, mut stopped: watch::Receiver<bool>) {
    // The header timeout is kept per connection (`connections::serve`), not by hyper's timer:
    // hyper resets a timer for every request head, which cost 6 % of throughput here.
    let http = http1::Builder::new();
    let registry = &serving.registry;
    let sweeper = {
        let (registry, timeout) = (registry.clone(), serving.header_timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(connections::sweep_period(timeout));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                registry.sweep(timeout);
            }
        })
    };
    let mut errors = AcceptErrors::default();
    'serving: loop {
        // At the cap, make room by closing the connections idle the longest; new ones wait
        // in the listen backlog meanwhile.
        while registry.is_full() {
            registry.shed_idle();
            tokio::select! {
                () = registry.wait_for_room(Duration::from_millis(50)) => {}
                _ = stopped.changed() => break 'serving,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break 'serving,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                let backoff = errors.failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    _ = stopped.changed() => break 'serving,
                }
            }
        };
        errors.succeeded();
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let admitted = registry.admit();
        let activity = admitted.activity().clone();
        let pending = Arc::new(PendingStatus::default());
        let io = TokioIo::new(StatusPatchIo::new(stream, pending.clone()));
        match &serving.stack {
            // No middleware: the handler's future, unboxed.
            None => {
                // A per-connection Arc: each request clones a count only this connection
                // touches, not one every core contends on.
                let connection = Arc::new(Connection {
                    cell: serving.cell.clone(),
                    rules: serving.rules,
                    pending,
                    activity,
                });
                let service = service_fn(move |req| {
                    let connection = connection.clone();
                    async move {
                        let busy = connection.activity.busy();
                        let response = tokio::select! {
                            biased;
                            response = handle(&connection.cell, connection.rules, req) => response,
                            () = connection.activity.abandoned() => convert::plain(ServeError::ShuttingDown.to_http()),
                        };
                        // A streamed answer keeps the connection busy until its end: never
                        // taken for an idle one to close.
                        let mut response = response.map(|body| body.holding(busy));
                        connection.activity.mark_closing(&mut response);
                        Ok::<_, Infallible>(connection.pending.prepare(response))
                    }
                });
                let connection = http.serve_connection(io, service);
                tokio::spawn(connections::serve(connection, admitted));
            }
            Some(stack) => {
                let service = Stacked {
                    stack: stack.clone(),
                    cell: serving.cell.clone(),
                    pending,
                    activity,
                };
                let connection = http.serve_connection(io, service);
                tokio::spawn(connections::serve(connection, admitted));
            }
        }
    }
    drop(listener);
    // Each connection finishes the request it runs, then closes.
    let grace = serving.grace;
    registry.stop_all(LINGER.min(grace / 2));
    if !registry.wait_all_closed(grace).await {
        tracing::warn!("requests still running after {grace:?}: answering them 503");
        registry.abandon_all();
        if !registry.wait_all_closed(ABANDONED_FLUSH).await {
            tracing::warn!("connections still open after their 503s; closing them");
        }
    }
    sweeper.abort();
}

/// A connection's service when middlewares are configured: the boxed stack.
struct Stacked {
    stack: ProxyService,
    /// For counting the answers a middleware makes itself.
    cell: Arc<SnapshotCell>,
    pending: Arc<PendingStatus>,
    activity: Arc<Activity>,
}

tokio::task_local! {
    /// Set once [`handle`] has counted (or deliberately not counted) the request this task
    /// serves through a middleware stack; otherwise a middleware answered it.
    static COUNTED_BY_HANDLE: Arc<std::sync::atomic::AtomicBool>;
}

/// Tells a middleware stack around [`handle`] that the request is counted.
#[inline]
fn counted_by_handle() {
    let _ = COUNTED_BY_HANDLE.try_with(|c| c.store(true, std::sync::atomic::Ordering::Relaxed));
}

impl hyper::service::Service<http::Request<Incoming>> for Stacked {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let pending = self.pending.clone();
        let busy = self.activity.busy();
        let req = req.map(|body| body.map_err(box_error).boxed_unsync());
        let (activity, waiting) = (self.activity.clone(), self.activity.clone());
        let abandoned = Box::pin(async move { waiting.abandoned().await });
        // An answer the middlewares make themselves (a CORS preflight, a redirect, a
        // refused host) is counted here, under no route.
        let (cell, method, started) = (
            self.cell.clone(),
            method_index(req.method()),
            Instant::now(),
        );
        let counted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stacked =
            Box::pin(COUNTED_BY_HANDLE.scope(counted.clone(), self.stack.clone().oneshot(req)));
        let answered = futures_util::future::select(stacked, abandoned);
        // `map`, not an async block: see `Answering::call` in `crate::layer`.
        Box::pin(answered.map(move |either| {
            let mut response = match either {
                futures_util::future::Either::Left((Ok(response), _)) => response,
                futures_util::future::Either::Right(((), _)) => {
                    ServeError::ShuttingDown.to_http().into_proxy()
                }
            };
            // A body of unknown length (a stream) keeps the connection busy until its end.
            if http_body::Body::size_hint(response.body())
                .exact()
                .is_none()
            {
                response = response.map(|body| convert::Guarded::new(body, busy).boxed_unsync());
            } else {
                drop(busy);
            }
            if !counted.load(std::sync::atomic::Ordering::Relaxed) {
                let status = response.status().as_u16();
                cell.load()
                    .unrouted
                    .answered(method, status, started.elapsed());
            }
            activity.mark_closing(&mut response);
            Ok(pending.prepare(response))
        }))
    }
}

/// What the requests of one connection share.
struct Connection {
    cell: Arc<SnapshotCell>,
    rules: BodyRules,
    /// A 1xx status this connection still has to put on the wire.
    pending: Arc<PendingStatus>,
    /// Whether it runs a request, for shedding idle connections at the cap.
    activity: Arc<Activity>,
}

/// Serves one HTTP request; its body is read under `rules` (an endpoint may set its own
/// size limit). Every answer but those of `/-/` routes is counted for `/metrics`, and
/// logged when the access log is on.
///
/// One async fn, not a chain of them: each layer of future would move the request (and
/// the futures under it) once more.
pub(crate) async fn handle<B>(
    cell: &SnapshotCell,
    rules: BodyRules,
    req: http::Request<B>,
) -> http::Response<PlainBody>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path();
    if path.starts_with(RESERVED_PREFIX) {
        // Probes are not counted.
        counted_by_handle();
        return admin(cell, req.method(), path);
    }
    if oip::is_oip(path) {
        // The Open Inference Protocol's routes; boxed, so the common future stays small.
        counted_by_handle();
        return Box::pin(oip::handle(cell, rules, req)).await;
    }
    if rules.access_log != AccessLog::Off {
        // Boxed: a server without an access log keeps the small future.
        return Box::pin(logged(cell, rules, req)).await;
    }
    let snapshot = cell.load_full();
    let Some(endpoint) = snapshot.routes.lookup(path) else {
        let response = convert::plain(if snapshot.held {
            ServeError::Deploying(path.to_owned()).to_http()
        } else {
            ServeError::RouteNotFound(path.to_owned()).to_http()
        });
        let method = method_index(req.method());
        snapshot
            .unrouted
            .answered(method, response.status().as_u16(), Duration::ZERO);
        counted_by_handle();
        return response;
    };
    let counted = Counted {
        stats: &endpoint.stats,
        method: method_index(req.method()),
        started: Instant::now(),
        answered: false,
    };
    let response = 'served: {
        if !endpoint.allows(req.method()) {
            break 'served ServeError::MethodNotAllowed {
                target: format!("endpoint `{}`", endpoint.name),
                allow: endpoint.allow.to_str().unwrap_or_default().to_owned(),
                method: Some(req.method().to_string()),
            }
            .to_http()
            .map(Into::into);
        }
        let (parts, body) = req.into_parts();
        let body = if body.is_end_stream() {
            Bytes::new()
        } else {
            let limit = endpoint.config.max_body_bytes.unwrap_or(rules.max_bytes);
            let read = match body::check_declared(&parts.headers, limit) {
                Ok(()) => body::collect(body, limit, rules.idle).await,
                Err(too_large) => Err(too_large),
            };
            match read {
                Ok(bytes) => bytes,
                Err(e) => break 'served convert::plain(e.to_http()),
            }
        };
        match convert::into_request(parts, body) {
            Ok(request) => convert::into_http(router::call(cell, endpoint, request).await),
            Err(e) => convert::plain(e.to_http()),
        }
    };
    counted.answered(response.status());
    response
}

/// [`handle`] without the access log, then its line.
async fn logged<B>(
    cell: &SnapshotCell,
    rules: BodyRules,
    req: http::Request<B>,
) -> http::Response<PlainBody>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (request_id, traceparent) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("x-request-id"), header("traceparent"))
    };
    let unlogged = BodyRules {
        access_log: AccessLog::Off,
        ..rules
    };
    let (response, served) = router::context::recording_served(handle(cell, unlogged, req)).await;
    let snapshot = cell.load();
    let endpoint = snapshot.routes.lookup(&path);
    let entry = access_log::Entry {
        method: method.as_str(),
        path: &path,
        route: endpoint.and_then(|e| e.config.route.as_deref()),
        endpoint: endpoint.map(|e| &*e.name),
        backend: served.as_ref().map(|(backend, _)| &**backend),
        replica: served.as_ref().map(|(_, replica)| &**replica),
        status: response.status(),
        took: started.elapsed(),
        request_id: request_id.as_deref(),
        traceparent: traceparent.as_deref(),
    };
    access_log::write(entry.line(rules.access_log, std::time::SystemTime::now()));
    response
}

/// An HTTP request being served, counted when it is answered; dropped unanswered (its
/// client left), it counts as 499, as Ray Serve counts a disconnect.
struct Counted<'a> {
    stats: &'a EndpointStats,
    /// Its method's label.
    method: u32,
    started: Instant,
    answered: bool,
}

impl Counted<'_> {
    fn answered(mut self, status: StatusCode) {
        self.answered = true;
        self.stats
            .answered(self.method, status.as_u16(), self.started.elapsed());
        counted_by_handle();
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.stats
                .answered(self.method, CLIENT_CLOSED, self.started.elapsed());
            counted_by_handle();
        }
    }
}

/// The status counted for a request whose client left before its answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

/// Ferroserve's own routes under `/-/`.
fn admin(cell: &SnapshotCell, method: &Method, path: &str) -> http::Response<PlainBody> {
    convert::plain(admin_whole(cell, method, path))
}

/// [`admin`]'s answers, whole.
fn admin_whole(cell: &SnapshotCell, method: &Method, path: &str) -> http::Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/-/routes") => {
            let mut response = http::Response::new(Full::new(cell.load().routes_json.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        (&Method::GET, "/-/healthz") => {
            if cell.load().draining {
                return ServeError::ShuttingDown.to_http();
            }
            text_response(StatusCode::OK, "ok\n".to_owned())
        }
        (&Method::GET, "/-/ready") => {
            let snapshot = cell.load();
            if snapshot.draining {
                return ServeError::ShuttingDown.to_http();
            }
            let missing = crate::router::not_ready(&snapshot);
            if snapshot.held || !missing.is_empty() {
                let mut why = String::from("not ready:\n");
                if snapshot.held {
                    why += "the app is being deployed\n";
                }
                for line in missing {
                    why += &line;
                    why.push('\n');
                }
                return text_response(StatusCode::SERVICE_UNAVAILABLE, why);
            }
            text_response(StatusCode::OK, "ready\n".to_owned())
        }
        (_, "/-/routes" | "/-/healthz" | "/-/ready") => ServeError::MethodNotAllowed {
            target: path.to_owned(),
            allow: "GET".to_owned(),
            method: None,
        }
        .to_http(),
        _ => ServeError::ReservedRouteNotFound(path.to_owned()).to_http(),
    }
}
