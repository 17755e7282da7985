//! The replicas of a backend and power-of-two-choices replica selection under a concurrency cap.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

use super::WaitQueue;
use crate::replica::Replica;

/// A held replica slot: the request runs on the replica it derefs to; dropping it frees
/// the slot and wakes one queued request. On the fast path it borrows the replica and the
/// queue from the request's snapshot, which saves reference-count round trips that both
/// cores would contend on.
pub(crate) struct Slot<'a> {
    replica: Option<Cow<'a, Arc<dyn Replica>>>,
    queue: Cow<'a, Arc<WaitQueue>>,
}

impl Slot<'_> {
    /// The same slot, owning its replica, to outlive the snapshot it came from.
    pub(crate) fn into_owned(mut self) -> Slot<'static> {
        Slot {
            replica: self.replica.take().map(|r| Cow::Owned(r.into_owned())),
            queue: Cow::Owned(Arc::clone(&self.queue)),
        }
    }
}

impl Deref for Slot<'_> {
    type Target = dyn Replica;

    fn deref(&self) -> &dyn Replica {
        // Only `into_owned` empties it, and it consumes the slot.
        self.replica
            .as_deref()
            .map(|replica| &**replica)
            .unwrap_or_else(|| unreachable!("a slot always holds its replica"))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(replica) = &self.replica {
            replica.release();
            self.queue.released();
        }
    }
}

/// The replicas of one backend as one snapshot publishes them, and the backend's queue.
pub(crate) struct ReplicaSet {
    replicas: Box<[Arc<dyn Replica>]>,
    max_concurrent: usize,
    /// Shared by every snapshot of this backend, so waiters survive a swap.
    queue: Arc<WaitQueue>,
}

impl ReplicaSet {
    /// These replicas, each running at most `max_concurrent` requests; `queue` is where
    /// requests wait when all are full.
    pub(crate) fn new(
        replicas: Vec<Arc<dyn Replica>>,
        max_concurrent: usize,
        queue: Arc<WaitQueue>,
    ) -> Self {
        Self {
            replicas: replicas.into(),
            max_concurrent,
            queue,
        }
    }

    /// The replicas.
    #[cfg(test)]
    pub(crate) fn replicas(&self) -> &[Arc<dyn Replica>] {
        &self.replicas
    }

    /// Where requests wait for a slot.
    pub(crate) fn queue(&self) -> &WaitQueue {
        &self.queue
    }

    /// Whether any replica can take a request now.
    pub(crate) fn has_live(&self) -> bool {
        self.replicas.iter().any(|r| r.is_alive())
    }

    /// A slot on `replica` if it is alive and runs fewer than the cap.
    fn reserve<'a>(&'a self, replica: &'a Arc<dyn Replica>) -> Option<Slot<'a>> {
        if !replica.is_alive() {
            return None;
        }
        // `then`, not `then_some`: a slot made eagerly would release on drop.
        replica.try_reserve(self.max_concurrent).then(|| Slot {
            replica: Some(Cow::Borrowed(replica)),
            queue: Cow::Borrowed(&self.queue),
        })
    }

    /// Takes a slot on the less busy of two random replicas; if both are full, on any
    /// replica with room; `None` when every replica is full.
    pub(crate) fn try_acquire(&self) -> Option<Slot<'_>> {
        let n = self.replicas.len();
        let slot = |r| self.reserve(r);
        match n {
            0 => return None,
            1 => return slot(&self.replicas[0]),
            _ => {}
        }
        let first = fastrand::usize(..n);
        let mut second = fastrand::usize(..n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (&self.replicas[first], &self.replicas[second]);
        let (less, more) = if b.in_flight() < a.in_flight() {
            (b, a)
        } else {
            (a, b)
        };
        slot(less).or_else(|| slot(more)).or_else(|| {
            let start = fastrand::usize(..n);
            (0..n).find_map(|i| slot(&self.replicas[(start + i) % n]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::tests::ok_replica;

    async fn set(n: usize, max: usize) -> ReplicaSet {
        let mut replicas: Vec<Arc<dyn Replica>> = Vec::new();
        for i in 0..n {
            replicas.push(ok_replica(&format!("b#{i}")).await);
        }
        ReplicaSet::new(replicas, max, Arc::new(WaitQueue::default()))
    }

    #[tokio::test]
    async fn never_above_the_cap() {
        let set = set(3, 2).await;
        let held: Vec<Slot<'_>> = std::iter::from_fn(|| set.try_acquire()).take(100).collect();
        assert_eq!(held.len(), 6, "3 replicas × 2 slots");
        assert!(set.replicas().iter().all(|r| r.in_flight() == 2));
        drop(held);
        assert!(set.replicas().iter().all(|r| r.in_flight() == 0));
    }

    #[tokio::test]
    async fn two_choices_keep_load_even() {
        let set = set(4, 1000).await;
        let held: Vec<Slot<'_>> = (0..400).filter_map(|_| set.try_acquire()).collect();
        let loads: Vec<usize> = set.replicas().iter().map(|r| r.in_flight()).collect();
        let (min, max) = (loads.iter().min().copied(), loads.iter().max().copied());
        assert_eq!(held.len(), 400);
        // Random choice spreads ±~20 here; the less loaded of two keeps it within a few.
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min <= 4),
            "loads {loads:?}"
        );
    }

    #[tokio::test]
    async fn the_less_busy_replica_is_preferred() {
        let set = set(2, 1000).await;
        for _ in 0..10 {
            assert!(set.replicas()[0].try_reserve(1000));
        }
        let slots: Vec<Slot<'_>> = (0..5).filter_map(|_| set.try_acquire()).collect();
        assert!(slots.iter().all(|s| s.id() == "b#1"));
    }
}
