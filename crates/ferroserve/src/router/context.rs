//! What a request's own task knows while a replica runs it: its W3C trace context (for the handle calls its code makes) and, while the access log is on, which backend and replica served it.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    /// The `traceparent` of the request this task runs.
    static TRACE: Arc<str>;
    /// The backend and replica that served the request, once chosen.
    static SERVED: RefCell<Option<(Arc<str>, Arc<str>)>>;
}

/// The `traceparent` of the request the calling task runs, if it has one.
pub(crate) fn current_traceparent() -> Option<Arc<str>> {
    TRACE.try_with(Arc::clone).ok()
}

/// Runs `call` as part of trace `trace`: handle calls it makes carry it on.
pub(crate) async fn traced<F: Future>(trace: Arc<str>, call: F) -> F::Output {
    TRACE.scope(trace, call).await
}

/// Notes that `backend`'s replica `replica` serves the request of this task, if anything
/// records it (the access log); free otherwise.
#[inline]
pub(crate) fn note_served(backend: &Arc<str>, replica: &str) {
    let _ = SERVED.try_with(|served| {
        *served.borrow_mut() = Some((backend.clone(), replica.into()));
    });
}

/// Runs `call` and says which backend and replica served it (none when no replica did).
pub(crate) async fn recording_served<F: Future>(
    call: F,
) -> (F::Output, Option<(Arc<str>, Arc<str>)>) {
    SERVED
        .scope(RefCell::new(None), async move {
            let output = call.await;
            let served = SERVED.with(|served| served.borrow_mut().take());
            (output, served)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_trace_and_the_replica_are_seen_inside_only() {
        assert!(current_traceparent().is_none());
        let seen = traced("00-abc-def-01".into(), async { current_traceparent() }).await;
        assert_eq!(seen.as_deref(), Some("00-abc-def-01"));
        note_served(&"b".into(), "b#1"); // outside a recording: nothing happens
        let ((), served) = recording_served(async { note_served(&"b".into(), "b#2") }).await;
        let (backend, replica) = served.expect("recorded");
        assert_eq!((&*backend, &*replica), ("b", "b#2"));
    }
}
