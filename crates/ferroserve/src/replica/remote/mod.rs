//! Replicas on other nodes: `RemoteReplica` implements the replica trait over the peer protocol (`wire`), sending each call on the `PeerClient` shared by every replica of that node, and leaving routing while it fails (`eject`).
//!
//! The node that runs a replica owns it: it batches, reconfigures, health-checks and stops
//! it. Here a remote replica only counts its calls (its own [`Slots`], capped as a local
//! replica's are) and sends them. A call whose caller leaves (it hung up, or its timeout
//! passed) is dropped, which resets its HTTP/2 stream; the owner then drops its own call,
//! which cancels it as a local caller leaving does.

mod client;
mod eject;
mod stream;
mod wire;
mod wire_error;

pub(crate) use client::{MAX_HEADER_LIST, PeerClient, PeerError, PeerLimits};
pub(crate) use eject::Ejections;
pub(crate) use stream::framed;
pub(crate) use wire::{
    CALL_PATH, CallHead, HEALTH_PREFIX, decode_head, decode_request, encode_answer, encode_error,
    encode_streamed,
};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::time::Instant;

use super::{Replica, ReplicaCall};
use crate::backend::Slots;
use crate::error::ServeError;
use crate::request::Request;
use crate::response::{Chunks, Response};
use client::AnswerBody;
use eject::{FAILURES_TO_EJECT, Outlier};

tokio::task_local! {
    /// When the caller of the calls made in this task stops waiting.
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the deadline its remote calls carry (an earlier one
/// already set stays).
pub(crate) async fn with_deadline<F: Future>(deadline: Instant, future: F) -> F::Output {
    let deadline = DEADLINE
        .try_with(|earlier| (*earlier).min(deadline))
        .unwrap_or(deadline);
    DEADLINE.scope(deadline, future).await
}

/// How long the caller of this task's calls still waits, if it has a deadline.
fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

/// A replica that runs on another node, reached through that node's [`PeerClient`].
pub(crate) struct RemoteReplica {
    /// `<node>/<replica id>`: how this node names it.
    display: String,
    node: String,
    backend: Arc<str>,
    /// Its id on the node that runs it.
    target: String,
    client: Arc<PeerClient>,
    /// The calls this node sends it now.
    slots: Slots,
    outlier: Outlier,
    ejections: Arc<Ejections>,
}

impl RemoteReplica {
    /// Replica `replica` of `backend`, run by `node` and reached through `client`; its
    /// failures count in its backend's `ejections`.
    pub(crate) fn new(
        backend: &str,
        node: &str,
        replica: &str,
        client: Arc<PeerClient>,
        ejections: Arc<Ejections>,
    ) -> Self {
        Self {
            display: format!("{node}/{replica}"),
            node: node.to_owned(),
            backend: backend.into(),
            target: replica.to_owned(),
            client,
            slots: Slots::default(),
            outlier: Outlier::default(),
            ejections,
        }
    }

    /// Whether it is replica `replica` of `node` at `addr`.
    pub(crate) fn is(&self, node: &str, addr: std::net::SocketAddr, replica: &str) -> bool {
        self.node == node && self.client.addr() == addr && self.target == replica
    }

    /// An error the owner named its replica in, renamed as this node names it.
    fn renamed(&self, mut error: ServeError) -> ServeError {
        if let ServeError::Backend { replica, .. }
        | ServeError::Panicked { replica, .. }
        | ServeError::ReplicaDied { replica, .. }
        | ServeError::NotSent { replica, .. } = &mut error
            && *replica == self.target
        {
            replica.clone_from(&self.display);
        }
        error
    }

    /// What the caller gets when the peer could not be reached or the connection failed.
    fn unreachable(&self, error: &PeerError) -> ServeError {
        let message = format!("node `{}` at {}: {error}", self.node, self.client.addr());
        match error {
            PeerError::TooLarge(_) => ServeError::Internal(message),
            PeerError::NotSent(_) => ServeError::NotSent {
                backend: self.backend.to_string(),
                replica: self.display.clone(),
                message,
            },
            PeerError::Broken(_) => ServeError::ReplicaDied {
                backend: self.backend.to_string(),
                replica: self.display.clone(),
                message,
            },
        }
    }

    async fn run(&self, sent: http::Request<Bytes>) -> Result<Response, ServeError> {
        let outcome = match self.client.send(sent).await {
            Ok((status, headers, AnswerBody::Whole(body))) => {
                wire::decode_answer(status, headers, body).map_err(|e| self.renamed(e))
            }
            Ok((status, headers, AnswerBody::Stream(body))) => {
                let chunks = stream::Unframed::new(body, self.client.max_answer_bytes());
                wire::decode_answer(status, headers, Bytes::new())
                    .map(|head| head.with_chunks(Chunks::new(chunks)))
            }
            Err(e) => Err(self.unreachable(&e)),
        };
        // A 5xx counts, but not a load signal (503: overloaded, no replica, shutting
        // down, deploying): ejecting a busy node would pile its load onto the others.
        let failed = match &outcome {
            Ok(response) => {
                response.status().is_server_error()
                    && response.status() != http::StatusCode::SERVICE_UNAVAILABLE
            }
            Err(e) => e.status().is_server_error() && e.kind() != crate::error::ErrorKind::Overload,
        };
        if let Some(period) = self.ejections.record(
            &self.display,
            &self.outlier,
            failed,
            std::time::Instant::now(),
        ) {
            tracing::warn!(
                backend = &*self.backend,
                replica = self.display,
                "remote replica ejected for {period:?} after {FAILURES_TO_EJECT} failures in a row"
            );
        }
        outcome
    }

    /// The call of `req`, as it goes on the wire.
    fn encode(&self, req: &Request) -> Result<http::Request<Bytes>, ServeError> {
        let request_id = req
            .header("x-request-id")
            .map_or_else(|| format!("{:016x}", fastrand::u64(..)), str::to_owned);
        let head = CallHead {
            backend: self.backend.to_string(),
            replica: self.target.clone(),
            request_id,
            deadline: remaining(),
        };
        wire::encode_call(&head, req, self.client.authority())
    }
}

impl Replica for RemoteReplica {
    fn id(&self) -> &str {
        &self.display
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn call(&self, req: Request) -> ReplicaCall<'_> {
        match self.encode(&req) {
            Ok(sent) => ReplicaCall::typed(Box::pin(self.run(sent))),
            Err(e) => ReplicaCall::refused(e),
        }
    }

    fn reconfigure<'a>(
        &'a self,
        _user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ServeError>> {
        // The node that runs it reconfigures it.
        Box::pin(async { Ok(()) })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ServeError>> {
        Box::pin(async move {
            let segment = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            let uri = format!(
                "http://{}{HEALTH_PREFIX}{}/{}",
                self.client.authority(),
                segment(&self.backend),
                segment(&self.target)
            );
            let mut req = http::Request::new(Bytes::new());
            *req.uri_mut() = uri
                .parse()
                .map_err(|e| ServeError::Internal(format!("a health check URI: {e}")))?;
            match self.client.send(req).await {
                Ok((status, headers, body)) => {
                    let body = match body {
                        AnswerBody::Whole(body) => body,
                        AnswerBody::Stream(_) => Bytes::new(),
                    };
                    wire::decode_answer(status, headers, body).map_err(|e| self.renamed(e))?;
                    Ok(())
                }
                Err(e) => Err(self.unreachable(&e)),
            }
        })
    }

    fn is_alive(&self) -> bool {
        self.slots.is_alive() && !self.ejections.is_ejected_now(&self.outlier)
    }
}

#[cfg(test)]
mod tests;
