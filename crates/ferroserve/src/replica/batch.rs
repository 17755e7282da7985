//! Dynamic batching: a per-replica queue that gathers requests of one method and runs them as one batch call.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::ReplicaName;
use crate::backend::DynBackend;
use crate::error::{BackendError, ServeError};
use crate::metrics::{BackendStats, gauge_add};
use crate::request::Request;
use crate::response::Response;

/// When to run a batch: a pure policy, tested without a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchPolicy {
    /// The most requests one batch call gets.
    pub(crate) max_batch_size: usize,
    /// How long the oldest queued request may wait for others (0: take what is queued now).
    pub(crate) wait: Duration,
}

/// What the batch queue does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing is queued: wait for a request.
    Idle,
    /// Run a batch of the first `n` queued requests of the oldest request's method.
    Run(usize),
    /// Wait for more requests until this instant, then run what is there.
    WaitUntil(Instant),
}

impl BatchPolicy {
    /// Decides, given how many queued requests share the oldest one's method and when the
    /// oldest arrived.
    pub(crate) fn decide(
        &self,
        same_method: usize,
        oldest: Option<Instant>,
        now: Instant,
    ) -> Decision {
        let Some(oldest) = oldest else {
            return Decision::Idle;
        };
        if same_method >= self.max_batch_size {
            return Decision::Run(self.max_batch_size);
        }
        let deadline = oldest + self.wait;
        if now >= deadline {
            Decision::Run(same_method)
        } else {
            Decision::WaitUntil(deadline)
        }
    }
}

/// One request waiting in a batch queue.
struct Item {
    request: Request,
    arrived: Instant,
    reply: oneshot::Sender<Result<Response, ServeError>>,
}

/// The sending side of a replica's batch queue.
pub(crate) struct BatchQueue {
    items: mpsc::UnboundedSender<Item>,
    /// Its backend's stats: a request counts in the batch queue gauge from when it is
    /// sent until it goes into a batch or is dropped.
    stats: Arc<BackendStats>,
}

impl BatchQueue {
    /// Starts the queue's task for one replica of `backend`, counting its queue length
    /// and batch sizes in `stats`.
    pub(crate) fn start(
        policy: BatchPolicy,
        instance: Arc<dyn DynBackend>,
        names: ReplicaName,
        stats: Arc<BackendStats>,
    ) -> Self {
        let (items, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(policy, instance, receiver, names, stats.clone()));
        Self { items, stats }
    }

    /// Queues `request` and waits for its answer from a batch call.
    pub(crate) async fn call(&self, request: Request) -> Result<Response, ServeError> {
        let (reply, answer) = oneshot::channel();
        let item = Item {
            request,
            arrived: Instant::now(),
            reply,
        };
        gauge_add(&self.stats.batch_queued, 1);
        if self.items.send(item).is_err() {
            gauge_add(&self.stats.batch_queued, -1);
            return Err(ServeError::Internal(
                "the batch queue has stopped".to_owned(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(ServeError::Internal(
                "the batch queue dropped a request".to_owned(),
            ))
        })
    }
}

/// The queue's task: gathers, decides, runs one batch at a time, fans the answers back.
async fn run(
    policy: BatchPolicy,
    instance: Arc<dyn DynBackend>,
    mut receiver: mpsc::UnboundedReceiver<Item>,
    names: ReplicaName,
    stats: Arc<BackendStats>,
) {
    let mut queue: VecDeque<Item> = VecDeque::new();
    // Whatever it still holds when it ends leaves the batch queue gauge.
    let mut left = Left {
        stats: &stats,
        held: 0,
    };
    loop {
        while let Ok(item) = receiver.try_recv() {
            queue.push_back(item);
        }
        // Callers that gave up need no answer.
        let before = queue.len();
        queue.retain(|item| !item.reply.is_closed());
        left.taken(before - queue.len());
        left.held = queue.len();
        let method = queue.front().map(|i| i.request.method_name().to_owned());
        let same_method = method.as_deref().map_or(0, |m| {
            queue
                .iter()
                .filter(|i| i.request.method_name() == m)
                .count()
        });
        match policy.decide(
            same_method,
            queue.front().map(|i| i.arrived),
            Instant::now(),
        ) {
            Decision::Idle => match receiver.recv().await {
                Some(item) => queue.push_back(item),
                None => return,
            },
            Decision::WaitUntil(deadline) => {
                tokio::select! {
                    item = receiver.recv() => match item {
                        Some(item) => queue.push_back(item),
                        None => return,
                    },
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            Decision::Run(n) => {
                let Some(method) = method else { continue };
                let mut batch = Vec::with_capacity(n);
                let mut rest = VecDeque::with_capacity(queue.len());
                for item in queue.drain(..) {
                    if batch.len() < n && item.request.method_name() == method {
                        batch.push(item);
                    } else {
                        rest.push_back(item);
                    }
                }
                queue = rest;
                left.taken(batch.len());
                left.held = queue.len();
                stats
                    .batch_sizes
                    .record_value(u64::try_from(batch.len()).unwrap_or(u64::MAX));
                run_batch(&*instance, &method, batch, &names).await;
            }
        }
    }
}

/// The requests a batch queue's task holds, taken out of the batch queue gauge as they
/// go (into a batch, or dropped) and when the task ends.
struct Left<'a> {
    stats: &'a BackendStats,
    /// Requests in its queue that have not gone yet.
    held: usize,
}

impl Left<'_> {
    /// `n` requests left the queue.
    fn taken(&self, n: usize) {
        if n > 0 {
            gauge_add(
                &self.stats.batch_queued,
                -i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }
}

impl Drop for Left<'_> {
    fn drop(&mut self) {
        self.taken(self.held);
    }
}

/// Runs one batch call and answers each caller: its own response, or its own copy of the
/// batch's error with the status that error carries (a dead worker's 502, a user's status).
async fn run_batch(instance: &dyn DynBackend, method: &str, batch: Vec<Item>, names: &ReplicaName) {
    let (requests, replies): (Vec<Request>, Vec<_>) =
        batch.into_iter().map(|i| (i.request, i.reply)).unzip();
    match call_batch(instance, method, requests, names).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// One batch call of user code: exactly one answer per request, or the error that fails them all.
async fn call_batch(
    instance: &dyn DynBackend,
    method: &str,
    requests: Vec<Request>,
    names: &ReplicaName,
) -> Result<Vec<Response>, ServeError> {
    let count = requests.len();
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| instance.call_batch(requests)))
    {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(payload) => Err(payload),
    };
    match outcome {
        Ok(Ok(answers)) if answers.len() == count => Ok(answers),
        Ok(Ok(answers)) => Err(names.failed(
            &BackendError::msg(format!(
                "batch method `{method}` answered {} results for a batch of {count} requests",
                answers.len()
            )),
            "",
        )),
        Ok(Err(error)) => Err(names.failed(
            &error,
            &format!("batch method `{method}` failed for a batch of {count}: "),
        )),
        Err(payload) => Err(names.panicked(
            &*payload,
            &format!("batch method `{method}` panicked for a batch of {count}: "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, Methods};
    use http::StatusCode;

    /// A batch backend failing every batch with the error its first request names.
    struct Failing;

    impl Backend for Failing {
        async fn call(&self, _req: Request) -> Result<Response, BackendError> {
            Ok(Response::from("alone"))
        }

        fn batch_methods(&self) -> Methods {
            Methods::Any
        }

        async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
            match requests[0].text()?.as_str() {
                "died" => Err(BackendError::replica_died(
                    "its worker process died (signal 9)",
                )),
                "teapot" => {
                    Err(BackendError::msg("no coffee").with_status(StatusCode::IM_A_TEAPOT))
                }
                "short" => Ok(vec![Response::from("one")]),
                _ => Err(BackendError::msg("plain failure")),
            }
        }
    }

    /// Three callers sent together as one batch; each one's error.
    async fn batch_errors(first: &str) -> Vec<ServeError> {
        let names = ReplicaName {
            backend: "b".into(),
            replica: "b#1".into(),
        };
        let stats = BackendStats::detached("b");
        let queue = BatchQueue::start(policy(3, 1000), Arc::new(Failing), names, stats.clone());
        let calls = [first.to_owned(), "x".to_owned(), "y".to_owned()]
            .map(|arg| queue.call(Request::from_arg(arg.into())));
        let errors = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect_err("the batch fails"))
            .collect();
        let queued = stats
            .batch_queued
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(queued, 0, "the batch queue gauge is back to 0");
        assert_eq!(stats.batch_sizes.read().count(), 1, "one batch of 3");
        errors
    }

    #[tokio::test]
    async fn a_dead_worker_stays_502_for_every_caller() {
        for error in batch_errors("died").await {
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY, "{error}");
            assert_eq!(
                error.to_string(),
                "backend `b` (replica `b#1`) died: its worker process died (signal 9)"
            );
        }
    }

    #[tokio::test]
    async fn a_users_status_reaches_every_caller() {
        for error in batch_errors("teapot").await {
            assert_eq!(error.status(), StatusCode::IM_A_TEAPOT, "{error}");
        }
    }

    #[tokio::test]
    async fn batch_errors_are_prefixed_once() {
        for error in batch_errors("plain").await {
            assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                error.to_string(),
                "backend `b` (replica `b#1`) failed: batch method `__call__` failed for a batch of 3: plain failure"
            );
        }
        for error in batch_errors("short").await {
            assert_eq!(
                error.to_string(),
                "backend `b` (replica `b#1`) failed: batch method `__call__` answered 1 results for a batch of 3 requests"
            );
        }
    }

    fn policy(max: usize, wait_ms: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn an_empty_queue_waits_for_requests() {
        assert_eq!(policy(8, 5).decide(0, None, Instant::now()), Decision::Idle);
    }

    #[test]
    fn a_full_batch_runs_at_once() {
        let now = Instant::now();
        assert_eq!(policy(8, 1000).decide(8, Some(now), now), Decision::Run(8));
        assert_eq!(policy(8, 1000).decide(20, Some(now), now), Decision::Run(8));
    }

    #[test]
    fn a_partial_batch_waits_until_the_oldest_times_out() {
        let oldest = Instant::now();
        let p = policy(8, 10);
        assert_eq!(
            p.decide(3, Some(oldest), oldest + Duration::from_millis(4)),
            Decision::WaitUntil(oldest + Duration::from_millis(10))
        );
        assert_eq!(
            p.decide(3, Some(oldest), oldest + Duration::from_millis(10)),
            Decision::Run(3)
        );
        assert_eq!(
            p.decide(3, Some(oldest), oldest + Duration::from_millis(50)),
            Decision::Run(3)
        );
    }

    #[test]
    fn zero_wait_takes_what_is_queued_now() {
        let now = Instant::now();
        assert_eq!(policy(8, 0).decide(1, Some(now), now), Decision::Run(1));
        assert_eq!(policy(8, 0).decide(5, Some(now), now), Decision::Run(5));
    }
}
