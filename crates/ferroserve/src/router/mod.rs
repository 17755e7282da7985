//! The one request path shared by HTTP and handles: traffic choice, replica choice, queueing.

mod queue;
mod replica_set;
mod traffic;

pub(crate) use queue::WaitQueue;
pub(crate) use replica_set::{ReplicaSet, Slot};
pub(crate) use traffic::WeightedChoice;

use crate::controller::{BackendState, EndpointState, SnapshotCell};
use crate::error::ServeError;
use crate::request::Request;
use crate::response::Response;

/// Runs `req` on `endpoint`: picks a backend by weight, a replica by two choices, waits in
/// the bounded queue when every replica is full, and runs the request there.
pub(crate) async fn call(
    cell: &SnapshotCell,
    endpoint: &EndpointState,
    req: Request,
) -> Result<Response, ServeError> {
    let backend = endpoint.traffic.choose();
    let slot = match backend.replicas.try_acquire() {
        Some(slot) if !backend.queue.has_waiters() => slot,
        // The queue path is boxed so that the common path's future stays small.
        fast => {
            drop(fast);
            Box::pin(wait_for_slot(cell, backend)).await?
        }
    };
    slot.call(req).await
}

/// A slot on one of `backend`'s replicas, waiting in the backend's queue until one frees.
async fn wait_for_slot(
    cell: &SnapshotCell,
    backend: &BackendState,
) -> Result<Slot<'static>, ServeError> {
    if backend.replicas.is_empty() {
        return Err(ServeError::NoReplicas(backend.name.to_string()));
    }
    let name = &backend.name;
    backend
        .queue
        .wait(backend.config.max_queued_requests, name, || {
            // The replica set may have changed while we waited: use the newest one.
            let snapshot = cell.load();
            let current = snapshot
                .backends
                .get(&**name)
                .ok_or_else(|| ServeError::BackendNotFound(name.to_string()))?;
            Ok(current.replicas.try_acquire().map(Slot::into_owned))
        })
        .await
}
