//! The one request path shared by HTTP and handles: traffic choice, replica choice, queueing.

pub(crate) mod context;
mod queue;
mod replica_set;

pub(crate) use queue::WaitQueue;
pub(crate) use replica_set::{ReplicaSet, Slot};

use std::future::Future;

use futures_util::FutureExt;
use futures_util::future::Either;

use crate::error::ServeError;
use crate::fnv::fnv1a;
use crate::request::Request;
use crate::response::Response;
use crate::snapshot;

/// The snapshot the request path reads: each backend's replicas as a [`ReplicaSet`].
pub(crate) type Snapshot = snapshot::Snapshot<ReplicaSet>;
/// The cell the controller publishes [`Snapshot`]s to.
pub(crate) type SnapshotCell = snapshot::SnapshotCell<ReplicaSet>;

/// What keeps `snapshot` from being ready, sorted: every endpoint with a route needs a live
/// replica behind each backend its traffic sends a share to.
pub(crate) fn not_ready(snapshot: &Snapshot) -> Vec<String> {
    let mut missing: Vec<String> = snapshot
        .endpoints
        .iter()
        .filter(|(_, e)| e.config.route.is_some())
        .flat_map(|(name, e)| {
            e.config
                .traffic
                .weights()
                .filter(|(_, weight)| *weight > 0.0)
                .filter(|(backend, _)| {
                    // Scaled to zero is ready: a request starts a replica.
                    !snapshot
                        .backends
                        .get(*backend)
                        .is_some_and(|b| b.replicas.has_live() || b.config.scaled_to_zero())
                })
                .map(move |(backend, _)| {
                    format!("endpoint `{name}`: backend `{backend}` has no running replica")
                })
        })
        .collect();
    missing.sort();
    missing
}
/// One endpoint of a [`Snapshot`].
pub(crate) type EndpointState = snapshot::EndpointState<ReplicaSet>;
/// One backend of a [`Snapshot`].
pub(crate) type BackendState = snapshot::BackendState<ReplicaSet>;

/// Runs `req` on `endpoint`: picks a backend by weight, a replica by two choices, waits in
/// the bounded queue when every replica is full, and runs the request there.
pub(crate) fn call<'a>(
    cell: &'a SnapshotCell,
    endpoint: &'a EndpointState,
    req: Request,
) -> impl Future<Output = Result<Response, ServeError>> + 'a {
    match endpoint.config.request_timeout {
        None => Either::Left(call_now(cell, endpoint, req)),
        // Boxed, so that endpoints without a timeout keep a small future.
        // The deadline goes with the calls to replicas on other nodes.
        Some(after) => Either::Right(Box::pin(
            crate::replica::with_deadline(
                tokio::time::Instant::now() + after,
                tokio::time::timeout(after, call_now(cell, endpoint, req)),
            )
            .map(move |answer| {
                answer.unwrap_or(Err(ServeError::Timeout {
                    after,
                    set_by: "request_timeout_s",
                }))
            }),
        )),
    }
}

/// [`call`] without the endpoint's timeout.
async fn call_now(
    cell: &SnapshotCell,
    endpoint: &EndpointState,
    req: Request,
) -> Result<Response, ServeError> {
    let mut backend = match req.shard_key() {
        Some(key) => endpoint.traffic.choose_at(shard_point(key)),
        None => endpoint.traffic.choose(),
    };
    if !endpoint.shadows.is_empty() {
        send_shadow_copies(endpoint, &req);
    }
    // Records queue and compute time; a request dropped on the way (a timeout, a caller
    // that left) counts as an error.
    let mut timing = backend.stats.begin();
    let slot = match backend.replicas.try_acquire() {
        Some(slot) if !backend.replicas.queue().has_waiters() => {
            timing.no_wait();
            slot
        }
        // The queue path is boxed so that the common path's future stays small.
        fast => {
            drop(fast);
            // No live replica and the endpoint allows failover: one of its other backends
            // serves, and its stats count the request.
            if let Some(other) = failover(endpoint, backend, req.shard_key()) {
                timing = timing.moved_to(&other.stats);
                backend = other;
            }
            let slot = Box::pin(wait_for_slot(cell, backend)).await?;
            timing.waited();
            slot
        }
    };
    context::note_served(&backend.name, slot.id());
    // A call to another node that could not be sent ran nowhere: it is tried once more,
    // on another replica (boxed: only remote calls keep a copy).
    let again = if slot.is_remote() {
        req.try_clone()
    } else {
        None
    };
    let mut answer = run_on(&slot, req).await;
    if let (Err(ServeError::NotSent { .. }), Some(copy)) = (&answer, again) {
        // The node could not be reached: a replica of another node (or a local one), if
        // one has room. Remote ids are `node/replica`.
        let node_of = |id: &str| id.split_once('/').map(|(node, _)| node.to_owned());
        let failed = node_of(slot.id());
        drop(slot);
        let other = backend
            .replicas
            .try_acquire_except(|r| node_of(r.id()) == failed);
        if let Some(other) = other {
            tracing::debug!(
                backend = &*backend.name,
                "not sent; tried once more on {}",
                other.id()
            );
            context::note_served(&backend.name, other.id());
            answer = Box::pin(run_on(&other, copy)).await;
            timing.finish(answer.is_ok());
            return keep_slot_while_streaming(answer, other, &backend.name);
        }
        timing.finish(false);
        return answer;
    }
    timing.finish(answer.is_ok());
    keep_slot_while_streaming(answer, slot, &backend.name)
}

/// A streamed answer keeps its replica slot until its last chunk, or until its caller
/// drops it (a client that left); any other answer frees the slot now.
pub(crate) fn keep_slot_while_streaming(
    answer: Result<Response, ServeError>,
    slot: Slot<'_>,
    backend: &str,
) -> Result<Response, ServeError> {
    match answer {
        Ok(response) if response.is_stream() => {
            let context = format!("backend `{backend}` (replica `{}`): ", slot.id());
            Ok(response.holding(slot.into_owned(), context))
        }
        answer => answer,
    }
}

/// Runs `req` on the replica of `slot`, in the scope of its trace if it has one.
pub(crate) async fn run_on(slot: &Slot<'_>, req: Request) -> Result<Response, ServeError> {
    match req.traceparent() {
        // Boxed: only traced requests pay for the task-local scope.
        Some(trace) => {
            let trace: std::sync::Arc<str> = trace.into();
            Box::pin(context::traced(trace, slot.call(req))).await
        }
        None => slot.call(req).await,
    }
}

/// Where a request for `backend` goes instead when it has no live replica and the
/// endpoint allows failover: another of the endpoint's backends that has one (logged at
/// most once a second).
fn failover<'a>(
    endpoint: &'a EndpointState,
    backend: &BackendState,
    shard_key: Option<&str>,
) -> Option<&'a std::sync::Arc<BackendState>> {
    if !endpoint.config.failover || backend.replicas.has_live() {
        return None;
    }
    let live = |b: &std::sync::Arc<BackendState>| b.replicas.has_live();
    let point = shard_key.map_or_else(fastrand::f64, shard_point);
    let other = endpoint.traffic.choose_among(point, live)?;
    endpoint.failover_seen(|| {
        tracing::warn!(
            endpoint = &*endpoint.name,
            from = &*backend.name,
            to = &*other.name,
            "backend has no live replica: its traffic goes to the endpoint's other backends until it is back"
        );
    });
    Some(other)
}

/// A point in [0, 1) fixed by `key` (64-bit FNV-1a): the same key, the same backend.
fn shard_point(key: &str) -> f64 {
    let hash = fnv1a(key.bytes());
    // The top 53 bits, as a fraction.
    #[allow(clippy::cast_precision_loss)]
    let point = (hash >> 11) as f64 / (1u64 << 53) as f64;
    point
}

/// Sends each shadow backend its share of copies, fire and forget: a shadow backend never
/// queues (a copy finding it full is dropped), and its answer, failure or slowness never
/// reaches the caller.
fn send_shadow_copies(endpoint: &EndpointState, req: &Request) {
    for (share, backend) in endpoint.shadows.iter() {
        if fastrand::f64() >= *share {
            continue;
        }
        let Some(copy) = req.try_clone() else {
            tracing::debug!(
                endpoint = &*endpoint.name,
                "a Rust value cannot be copied to a shadow backend"
            );
            continue;
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let mut timing = backend.stats.begin();
            let Some(slot) = backend.replicas.try_acquire() else {
                tracing::debug!(
                    backend = &*backend.name,
                    "shadow backend full: copy dropped"
                );
                return;
            };
            timing.no_wait();
            let answer = slot.call(copy).await;
            timing.finish(answer.is_ok());
            match answer {
                // Read to its end (and dropped), as a client would, with the slot taken
                // meanwhile.
                Ok(response) if response.is_stream() => {
                    if let Err(e) = drain(response.into_chunks(), SHADOW_STREAM_LIMIT).await {
                        tracing::debug!(backend = &*backend.name, "shadow stream: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(backend = &*backend.name, "shadow copy failed: {e}"),
            }
        });
    }
}

/// The most of a shadow backend's streamed answer read (and dropped) before the stream
/// is cut.
const SHADOW_STREAM_LIMIT: usize = 64 << 20;

/// Reads `chunks` to their end, keeping none, up to `limit` bytes.
async fn drain(mut chunks: crate::response::Chunks, limit: usize) -> Result<(), String> {
    use futures_util::StreamExt as _;
    let mut read = 0;
    while let Some(chunk) = chunks.next().await {
        read += chunk.map_err(|e| e.message().to_owned())?.len();
        if read > limit {
            return Err(format!("cut after {limit} bytes"));
        }
    }
    Ok(())
}

/// A slot on one of `backend`'s replicas, waiting in the backend's queue until one frees.
async fn wait_for_slot(
    cell: &SnapshotCell,
    backend: &BackendState,
) -> Result<Slot<'static>, ServeError> {
    let cold = backend.config.scaled_to_zero();
    if !backend.replicas.has_live() && !cold {
        return Err(ServeError::NoReplicas(backend.name.to_string()));
    }
    let name = &backend.name;
    let waited = backend
        .replicas
        .queue()
        .wait(backend.config.max_queued_requests, name, || {
            // The replica set may have changed while we waited: use the newest one.
            let snapshot = cell.load();
            let current = snapshot
                .backends
                .get(&**name)
                .ok_or_else(|| ServeError::BackendNotFound(name.to_string()))?;
            if !current.replicas.has_live() {
                // Scaled to zero: the autoscaler sees this request queued and starts one.
                if current.config.scaled_to_zero() {
                    return Ok(None);
                }
                // Every replica died: fail now rather than wait for a restart that may
                // not come.
                return Err(ServeError::NoReplicas(name.to_string()));
            }
            Ok(current.replicas.try_acquire().map(Slot::into_owned))
        });
    if !cold {
        return waited.await;
    }
    // A cold start that never comes (its replica cannot start) does not hold the caller
    // for ever.
    tokio::time::timeout(COLD_START_WAIT, waited)
        .await
        .unwrap_or_else(|_| Err(ServeError::NoReplicas(name.to_string())))
}

/// The longest a request waits for a backend scaled to zero to start a replica.
const COLD_START_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_points_are_fixed_and_spread() {
        assert_eq!(shard_point("user-1"), shard_point("user-1"));
        let points: Vec<f64> = (0..1000)
            .map(|i| shard_point(&format!("user-{i}")))
            .collect();
        assert!(points.iter().all(|p| (0.0..1.0).contains(p)));
        let low = points.iter().filter(|&&p| p < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 keys below 0.5");
    }
}
