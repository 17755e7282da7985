//! The peer listener: other nodes' calls to this node's replicas, over HTTP/2 cleartext, run on local replicas only, within the caller's deadline.
//!
//! Each stream is one call (`POST /call`, see `replica::remote`'s wire) or one health
//! check (`GET /health/<backend>/<replica>`). A call runs on the replica the caller chose
//! when it is still here and has room; otherwise on any local replica of the backend,
//! through the backend's bounded wait queue (past it: `Overloaded`, 503). It is never sent
//! on to another node. When the caller resets the stream (it left, or its timeout
//! passed), hyper drops the stream's future, and with it the local call: a Python call is
//! cancelled as when a local caller leaves.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::body;
use super::convert::PlainBody;
use crate::error::ServeError;
use crate::replica::{
    CALL_PATH, HEALTH_PREFIX, MAX_HEADER_LIST, PeerLimits, decode_head, decode_request,
    encode_answer, encode_error, encode_streamed,
};
use crate::request::Request;
use crate::response::Response;
use crate::router::{BackendState, Slot, SnapshotCell};

/// Most connections from other nodes at once (one per node is the norm).
const MAX_CONNECTIONS: usize = 256;
/// Most calls at once on one connection.
const MAX_STREAMS: u32 = 1024;
/// How often an idle connection is pinged, and how long the answer may take.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long after its caller's deadline a call still runs here: the caller's own timeout
/// fires first and gives its answer.
const DEADLINE_GRACE: Duration = Duration::from_millis(100);
/// How long a stopping listener lets calls in flight finish.
const GRACE: Duration = Duration::from_secs(5);

/// The running peer listener.
pub(crate) struct PeerServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PeerServer {
    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets calls in flight finish (for a few seconds), closes every
    /// connection.
    pub(crate) async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!("the peer accept loop ended badly: {e}");
        }
    }
}

/// Serves other nodes' calls on `listener` from the snapshots in `cell`, with bodies under
/// `limits`.
pub(crate) fn serve_peers(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    limits: PeerLimits,
) -> Result<PeerServer, ServeError> {
    let local_addr = listener
        .local_addr()
        .map_err(|e| ServeError::Internal(format!("no local address: {e}")))?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, cell, limits, stopped));
    Ok(PeerServer {
        local_addr,
        stop,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
    limits: PeerLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let mut http = http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .adaptive_window(true)
        .auto_date_header(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("peer accept failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = stopped.changed() => break,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refused a peer connection: {MAX_CONNECTIONS} are open");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let cell = cell.clone();
        let service = service_fn(move |req| {
            let cell = cell.clone();
            async move { Ok::<_, Infallible>(answer(&cell, limits, req).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopped.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "peer connection closed: {e}");
                    }
                    return;
                }
                _ = stopping.changed() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, connection).await;
        });
        // Forget the connections that ended.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(GRACE * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}

/// The answer to one stream.
async fn answer(
    cell: &SnapshotCell,
    limits: PeerLimits,
    req: http::Request<Incoming>,
) -> http::Response<PlainBody> {
    let path = req.uri().path();
    if req.method() == Method::POST && path == CALL_PATH {
        let (parts, body) = req.into_parts();
        return match call(cell, limits, parts, body).await {
            // Its chunks as the caller's node takes them (HTTP/2 flow control).
            Ok(response) if response.is_stream() => {
                encode_streamed(response).map(PlainBody::Stream)
            }
            answer => encode_answer(answer).map(PlainBody::new),
        };
    }
    if req.method() == Method::GET
        && let Some(rest) = path.strip_prefix(HEALTH_PREFIX)
    {
        return match health(cell, rest).await {
            Ok(()) => encode_answer(Ok(Response::empty())),
            Err(e) => encode_error(&e),
        }
        .map(PlainBody::new);
    }
    let mut refused = encode_error(&ServeError::BadRequest(format!(
        "the peer listener answers POST {CALL_PATH} and GET {HEALTH_PREFIX}<backend>/<replica>, not {} {path}",
        req.method()
    )));
    *refused.status_mut() = StatusCode::NOT_FOUND;
    refused.map(PlainBody::new)
}

/// Reads and runs one call.
async fn call(
    cell: &SnapshotCell,
    limits: PeerLimits,
    parts: http::request::Parts,
    body: Incoming,
) -> Result<Response, ServeError> {
    let head = decode_head(&parts.headers)?;
    body::check_declared(&parts.headers, limits.max_call_bytes)?;
    let body = body::collect(body, limits.max_call_bytes, limits.body_idle).await?;
    let req = decode_request(&parts.headers, body)?;
    tracing::debug!(
        backend = head.backend,
        replica = head.replica,
        request_id = head.request_id,
        "call from another node"
    );
    let run = run(cell, &head.backend, &head.replica, req);
    match head.deadline {
        None => run.await,
        // The caller's own timeout answers it (and resets the stream, which drops the
        // call); this one stops the call should the reset never come.
        Some(after) => tokio::time::timeout(after + DEADLINE_GRACE, run)
            .await
            .unwrap_or(Err(ServeError::Timeout {
                after,
                set_by: "request_timeout_s",
            })),
    }
}

/// Runs `req` on local replica `replica` of `backend`, or on another local one.
async fn run(
    cell: &SnapshotCell,
    backend: &str,
    replica: &str,
    req: Request,
) -> Result<Response, ServeError> {
    let snapshot = cell.load_full();
    let state = snapshot
        .backends
        .get(backend)
        .ok_or_else(|| ServeError::BackendNotFound(backend.to_owned()))?;
    let mut timing = state.stats.begin();
    let slot = match state
        .replicas
        .try_acquire_local_id(replica)
        .or_else(|| state.replicas.try_acquire_local())
    {
        Some(slot) => {
            timing.no_wait();
            slot
        }
        None => {
            let slot = wait_for_local_slot(cell, state).await?;
            timing.waited();
            slot
        }
    };
    let answer = crate::router::run_on(&slot, req).await;
    timing.finish(answer.is_ok());
    crate::router::keep_slot_while_streaming(answer, slot, backend)
}

/// A slot on one of `backend`'s local replicas, waiting in its queue until one frees.
async fn wait_for_local_slot(
    cell: &SnapshotCell,
    backend: &BackendState,
) -> Result<Slot<'static>, ServeError> {
    let name = &backend.name;
    if !backend.replicas.has_live_local() {
        return Err(ServeError::NoReplicas(name.to_string()));
    }
    backend
        .replicas
        .queue()
        .wait(backend.config.max_queued_requests, name, || {
            let snapshot = cell.load();
            let current = snapshot
                .backends
                .get(&**name)
                .ok_or_else(|| ServeError::BackendNotFound(name.to_string()))?;
            if !current.replicas.has_live_local() {
                return Err(ServeError::NoReplicas(name.to_string()));
            }
            Ok(current.replicas.try_acquire_local().map(Slot::into_owned))
        })
        .await
}

/// The health check of local replica `rest` = `<backend>/<replica>` (percent-encoded).
async fn health(cell: &SnapshotCell, rest: &str) -> Result<(), ServeError> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ServeError::BadRequest("a health check path that is not UTF-8".into()))
    };
    let (backend, replica) = rest.split_once('/').ok_or_else(|| {
        ServeError::BadRequest("a health check names a backend and a replica".into())
    })?;
    let (backend, replica) = (decode(backend)?, decode(replica)?);
    let snapshot = cell.load_full();
    let state = snapshot
        .backends
        .get(&backend)
        .ok_or_else(|| ServeError::BackendNotFound(backend.clone()))?;
    let timeout = state.config.health_check_timeout();
    let Some(target) = state.replicas.local_replica(&replica) else {
        return Err(ServeError::ReplicaDied {
            backend,
            replica,
            message: "no such replica runs on this node".to_owned(),
        });
    };
    if !target.is_alive() {
        return Err(ServeError::ReplicaDied {
            backend,
            replica,
            message: "it cannot take requests".to_owned(),
        });
    }
    tokio::time::timeout(timeout, target.check_health())
        .await
        .unwrap_or(Err(ServeError::Timeout {
            after: timeout,
            set_by: "health_check_timeout_s",
        }))
}
