//! The bounded wait queue of a backend: where requests wait when every replica is full.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::error::{RETRY_AFTER, ServeError};

/// How often a waiting request looks for a slot even when not woken.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Requests waiting for a free replica slot of one backend.
///
/// Arrivals skip the queue only when nobody waits; every released slot wakes one waiter;
/// past the limit a request is refused at once with [`ServeError::Overloaded`].
#[derive(Default)]
pub(crate) struct WaitQueue {
    waiting: AtomicUsize,
    notify: Notify,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WaitQueue {
    /// Whether any request waits.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// How many requests wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A slot was freed: wake one waiter, if any.
    pub(crate) fn released(&self) {
        if self.has_waiters() {
            self.notify.notify_one();
        }
    }

    /// The replica set changed: every waiter tries again.
    pub(crate) fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    /// Waits until `try_acquire` gives a slot, or refuses at once when `limit` requests
    /// already wait. `try_acquire` runs after each wake-up (and first of all).
    pub(crate) async fn wait<T>(
        &self,
        limit: usize,
        backend: &str,
        mut try_acquire: impl FnMut() -> Result<Option<T>, ServeError>,
    ) -> Result<T, ServeError> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= limit {
            return Err(ServeError::Overloaded {
                backend: backend.to_owned(),
                queued,
                retry_after: RETRY_AFTER,
            });
        }
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(slot) = try_acquire()? {
                return Ok(slot);
            }
            // Woken when a slot frees; checking again now and then also catches slots
            // freed without a wake-up (a worker finishing a call its caller left).
            let _ = tokio::time::timeout(RECHECK, notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_past_the_limit_are_refused_at_once() {
        let queue = Arc::new(WaitQueue::default());
        let free = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (queue, free) = (queue.clone(), free.clone());
            tokio::spawn(async move {
                queue
                    .wait(1, "b", || {
                        Ok(free.swap(false, Ordering::AcqRel).then_some(()))
                    })
                    .await
            })
        };
        while !queue.has_waiters() {
            tokio::task::yield_now().await;
        }
        let refused = queue.wait(1, "b", || Ok(None::<()>)).await;
        assert!(matches!(
            refused,
            Err(ServeError::Overloaded { queued: 1, .. })
        ));
        free.store(true, Ordering::Release);
        queue.released();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("no panic")
            .expect("gets the slot");
        assert_eq!(queue.len(), 0);
    }
}
