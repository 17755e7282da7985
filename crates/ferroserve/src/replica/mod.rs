//! Replicas as the router sees them: one trait (in-flight count, slots, call, health) and the kinds under it.
//!
//! Every local kind is a [`LocalReplica`] around a backend instance: in-process Rust, or a
//! Python worker process (`python`). A replica on another machine will implement the same
//! [`Replica`] trait, so traffic, batching and handles do not change. Batching happens
//! inside a replica (its own batch queue gathers the calls of batch methods), so the trait
//! needs no batch call: a remote replica batches on its own node.

mod batch;
mod kind;
mod local;
mod onnx;
mod python;
mod remote;

pub(crate) use kind::factory_of;
pub(crate) use local::LocalReplica;
pub(crate) use onnx::METADATA_METHOD;
pub(crate) use python::handle_calls::{call_from_python, python_head, python_reply};
pub(crate) use remote::{
    CALL_PATH, Ejections, HEALTH_PREFIX, MAX_HEADER_LIST, PeerClient, PeerLimits, RemoteReplica,
    decode_head, decode_request, encode_answer, encode_error, encode_streamed, framed,
    with_deadline,
};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use crate::backend::Slots;
use crate::error::{BackendError, ServeError, panic_message};
use crate::request::Request;
use crate::response::Response;

/// One running instance of a backend, as the router sees it.
///
/// The router reserves a slot ([`Replica::try_reserve`]) before it calls, and releases it
/// when the call is over; a replica never runs more calls than the cap it is given.
pub(crate) trait Replica: Send + Sync + 'static {
    /// The replica's id, unique within its backend (`echo#2`).
    fn id(&self) -> &str;

    /// Its count of running calls.
    fn slots(&self) -> &Slots;

    /// Runs one request: alone, or through the replica's batch queue for a batch method.
    /// User errors and panics become typed errors, never a crash.
    fn call(&self, req: Request) -> ReplicaCall<'_>;

    /// Hands the replica a new `user_config`.
    fn reconfigure<'a>(
        &'a self,
        user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ServeError>>;

    /// Whether it can serve.
    fn check_health(&self) -> BoxFuture<'_, Result<(), ServeError>>;

    /// Whether it runs on another node (a call to it may fail before it was sent, and is
    /// then tried once more elsewhere).
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether it can take a request now (a worker whose socket broke cannot, from that
    /// moment, before the controller has replaced it).
    fn is_alive(&self) -> bool {
        self.slots().is_alive()
    }

    /// Stops it for good and waits until it has (a worker gets a SHUTDOWN frame, then a
    /// kill after 2 s); what a shutdown ends with.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The id of its worker process (a Python replica).
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Requests running now (with the calls a worker still runs for callers that left).
    fn in_flight(&self) -> usize {
        self.slots().count()
    }

    /// Takes a slot if fewer than `max` requests run.
    fn try_reserve(&self, max: usize) -> bool {
        self.slots().try_take(max)
    }

    /// Gives a slot back.
    fn release(&self) {
        self.slots().give_back();
    }
}

/// Names one replica in the errors its callers get.
#[derive(Clone)]
pub(crate) struct ReplicaName {
    pub(crate) backend: Arc<str>,
    pub(crate) replica: Arc<str>,
}

impl ReplicaName {
    /// The caller's error for user code that returned `error` (`context` prefixes the
    /// message), or for a replica whose worker died.
    pub(crate) fn failed(&self, error: &BackendError, context: &str) -> ServeError {
        if error.died {
            return ServeError::ReplicaDied {
                backend: self.backend.to_string(),
                replica: self.replica.to_string(),
                message: error.message().to_owned(),
            };
        }
        ServeError::Backend {
            backend: self.backend.to_string(),
            replica: self.replica.to_string(),
            status: error.status(),
            message: format!("{context}{}", error.message()),
            traceback: error.traceback.clone(),
        }
    }

    /// The caller's error for user code that panicked.
    pub(crate) fn panicked(
        &self,
        payload: &(dyn std::any::Any + Send),
        context: &str,
    ) -> ServeError {
        ServeError::Panicked {
            backend: self.backend.to_string(),
            replica: self.replica.to_string(),
            message: format!("{context}{}", panic_message(payload)),
        }
    }
}

/// The future of one [`Replica::call`]: a concrete type, so that the trait stays
/// object-safe without boxing the call a second time on the hot path.
pub(crate) struct ReplicaCall<'a>(CallState<'a>);

enum CallState<'a> {
    /// User code running in process; its error or panic is named when it ends.
    User {
        future: BoxFuture<'a, Result<Response, BackendError>>,
        name: &'a ReplicaName,
    },
    /// A call whose errors are already typed (a batch queue, a remote replica).
    Typed(BoxFuture<'a, Result<Response, ServeError>>),
    /// Refused before it ran (boxed: errors are rare, and the future stays small).
    Refused(Option<Box<ServeError>>),
}

impl<'a> ReplicaCall<'a> {
    /// Runs user code `future`; its errors and panics are reported as `name`'s.
    pub(crate) fn user(
        future: BoxFuture<'a, Result<Response, BackendError>>,
        name: &'a ReplicaName,
    ) -> Self {
        Self(CallState::User { future, name })
    }

    /// A future whose errors are already typed.
    pub(crate) fn typed(future: BoxFuture<'a, Result<Response, ServeError>>) -> Self {
        Self(CallState::Typed(future))
    }

    /// A call refused with `error`.
    pub(crate) fn refused(error: ServeError) -> Self {
        Self(CallState::Refused(Some(Box::new(error))))
    }
}

impl Future for ReplicaCall<'_> {
    type Output = Result<Response, ServeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            CallState::User { future, name } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => Poll::Ready(Ok(response)),
                    Ok(Poll::Ready(Err(error))) => Poll::Ready(Err(name.failed(&error, ""))),
                    Err(payload) => Poll::Ready(Err(name.panicked(&*payload, ""))),
                }
            }
            CallState::Typed(future) => future.as_mut().poll(cx),
            CallState::Refused(error) => Poll::Ready(Err(error.take().map_or_else(
                || ServeError::Internal("a replica call polled after it ended".to_owned()),
                |e| *e,
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) use local::tests;
