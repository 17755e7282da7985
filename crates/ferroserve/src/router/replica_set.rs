//! The replicas of a backend and power-of-two-choices replica selection under a concurrency cap, local replicas first, ties to the replica used last.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
///
/// The replicas on this node come first, then those on other nodes: a request goes to a
/// local replica when one has room, and to a remote one only when none has.
pub(crate) struct ReplicaSet {
    replicas: Box<[Arc<dyn Replica>]>,
    /// How many of `replicas`, from the first, run on this node.
    local: usize,
    max_concurrent: usize,
    /// Shared by every snapshot of this backend, so waiters survive a swap.
    queue: Arc<WaitQueue>,
    /// The index in `replicas` of the replica two choices picked last: of two equally
    /// busy replicas, this one wins, so light traffic stays on one warm replica (its
    /// caches, its interpreter's) instead of alternating between cold ones.
    last: Last,
}

/// [`ReplicaSet::last`], alone on its cache line: under load it changes often, and the
/// set's other fields, read by every request, must not share the line with it.
#[repr(align(64))]
struct Last(AtomicUsize);

/// One choice in this many takes a random first replica instead of the one picked last:
/// light traffic stays on one replica for about a thousand requests at a time, but never
/// for good on one that is slow or failing without being busier. Moving costs: one in 32
/// took 10 % off the iris model's requests/s at one connection (docs/BENCHMARKS.md).
const RESHUFFLE: u32 = 1024;

impl ReplicaSet {
    /// These replicas, each running at most `max_concurrent` requests; `queue` is where
    /// requests wait when all are full.
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    pub(crate) fn new(
        replicas: Vec<Arc<dyn Replica>>,
        max_concurrent: usize,
        queue: Arc<WaitQueue>,
    ) -> Self {
        let local = replicas.len();
        Self::with_remote(replicas, local, max_concurrent, queue)
    }

    /// As [`ReplicaSet::new`], where only the first `local` of `replicas` run on this node
    /// and the others on other nodes.
    pub(crate) fn with_remote(
        replicas: Vec<Arc<dyn Replica>>,
        local: usize,
        max_concurrent: usize,
        queue: Arc<WaitQueue>,
    ) -> Self {
        Self {
            local: local.min(replicas.len()),
            replicas: replicas.into(),
            max_concurrent,
            queue,
            last: Last(AtomicUsize::new(usize::MAX)),
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

    /// Whether any replica, here or on another node, can take a request now.
    pub(crate) fn has_live(&self) -> bool {
        self.replicas.iter().any(|r| r.is_alive())
    }

    /// The replicas on this node.
    fn local(&self) -> &[Arc<dyn Replica>] {
        &self.replicas[..self.local]
    }

    /// This node's replica `id`.
    pub(crate) fn local_replica(&self, id: &str) -> Option<&Arc<dyn Replica>> {
        self.local().iter().find(|r| r.id() == id)
    }

    /// Whether any replica on this node can take a request now.
    pub(crate) fn has_live_local(&self) -> bool {
        self.local().iter().any(|r| r.is_alive())
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

    /// Takes a slot on the less busy of two random local replicas, else on any local one
    /// with room; only then on a remote one, the same way; `None` when every replica is
    /// full. Without remote replicas: two choices over all, then any with room.
    pub(crate) fn try_acquire(&self) -> Option<Slot<'_>> {
        if self.local == self.replicas.len() {
            return self.choose(&self.replicas, 0);
        }
        let (local, remote) = self.replicas.split_at(self.local);
        self.choose(local, 0)
            .or_else(|| self.choose(remote, self.local))
    }

    /// A slot for a call tried again: on a local replica, else on a remote one that
    /// `skip` does not rule out (the replicas of a node that could not be reached).
    pub(crate) fn try_acquire_except(
        &self,
        skip: impl Fn(&dyn Replica) -> bool,
    ) -> Option<Slot<'_>> {
        if let Some(slot) = self.choose(self.local(), 0) {
            return Some(slot);
        }
        let remote = &self.replicas[self.local..];
        let n = remote.len();
        let start = fastrand::usize(..n.max(1));
        (0..n)
            .map(|i| &remote[(start + i) % n])
            .filter(|r| !skip(r.as_ref()))
            .find_map(|r| self.reserve(r))
    }

    /// A slot on one of this node's replicas only: what a call from another node runs on
    /// (it is never sent on to a third).
    pub(crate) fn try_acquire_local(&self) -> Option<Slot<'_>> {
        self.choose(self.local(), 0)
    }

    /// A slot on this node's replica `id`, if it is alive and has room.
    pub(crate) fn try_acquire_local_id(&self, id: &str) -> Option<Slot<'_>> {
        self.reserve(self.local_replica(id)?)
    }

    /// Two choices among `among` (which starts at index `offset` of the replicas), then
    /// any of them with room.
    #[inline]
    fn choose<'a>(&'a self, among: &'a [Arc<dyn Replica>], offset: usize) -> Option<Slot<'a>> {
        match among.len() {
            0 => None,
            1 => self.reserve(&among[0]),
            _ => self.two_choices(among, offset).or_else(|| self.any(among)),
        }
    }

    /// A slot on the less busy of two replicas of `among`, the one picked last and a random
    /// other, else on the other; of two equally busy ones, on the one picked last.
    #[inline]
    fn two_choices<'a>(&'a self, among: &'a [Arc<dyn Replica>], offset: usize) -> Option<Slot<'a>> {
        let n = among.len();
        match n {
            0 => return None,
            1 => return self.reserve(&among[0]),
            _ => {}
        }
        // The first choice is the replica picked last, when it is among these; the second
        // is random. The less busy wins, and a tie goes to the first.
        let last = self.last.0.load(Ordering::Relaxed);
        let first = match last.checked_sub(offset) {
            Some(i) if i < n && fastrand::u32(..RESHUFFLE) != 0 => i,
            _ => fastrand::usize(..n),
        };
        let mut second = fastrand::usize(..n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (&among[first], &among[second]);
        let b_first = b.in_flight() < a.in_flight();
        let ((less, i), (more, j)) = if b_first {
            ((b, second), (a, first))
        } else {
            ((a, first), (b, second))
        };
        let (slot, index) = match self.reserve(less) {
            Some(slot) => (slot, offset + i),
            None => (self.reserve(more)?, offset + j),
        };
        // Written only when it changes: under light traffic it stays put, and the cores
        // only read it.
        if last != index {
            self.last.0.store(index, Ordering::Relaxed);
        }
        Some(slot)
    }

    /// A slot on any replica of `among` with room, from a random start.
    fn any<'a>(&'a self, among: &'a [Arc<dyn Replica>]) -> Option<Slot<'a>> {
        let n = among.len();
        if n == 0 {
            return None;
        }
        let start = fastrand::usize(..n);
        (0..n).find_map(|i| self.reserve(&among[(start + i) % n]))
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
    async fn one_caller_at_a_time_stays_on_one_warm_replica() {
        let set = set(4, 1000).await;
        let picks: Vec<String> = (0..20_000)
            .filter_map(|_| set.try_acquire().map(|s| s.id().to_owned()))
            .collect();
        assert_eq!(picks.len(), 20_000);
        // A random pick would change replica 3 times in 4 (15,000 changes); the one picked
        // last wins but for a reshuffle one time in 1,024 (about 15 changes expected).
        let changes = picks.windows(2).filter(|w| w[0] != w[1]).count();
        assert!((1..=60).contains(&changes), "{changes} changes of replica");
        // Once it is busier, two choices move on.
        let held: Vec<Slot<'_>> = (0..3).filter_map(|_| set.try_acquire()).collect();
        let ids: std::collections::BTreeSet<&str> = held.iter().map(|s| s.id()).collect();
        assert!(ids.len() > 1, "{ids:?}");
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

    /// `local` replicas here (`l#N`) then `remote` ones (`r#N`, stand-ins).
    async fn mixed(local: usize, remote: usize, max: usize) -> ReplicaSet {
        let mut replicas: Vec<Arc<dyn Replica>> = Vec::new();
        for i in 0..local {
            replicas.push(ok_replica(&format!("l#{i}")).await);
        }
        for i in 0..remote {
            replicas.push(ok_replica(&format!("r#{i}")).await);
        }
        ReplicaSet::with_remote(replicas, local, max, Arc::new(WaitQueue::default()))
    }

    #[tokio::test]
    async fn local_replicas_go_first_while_they_have_room() {
        let set = mixed(2, 2, 3).await;
        let held: Vec<Slot<'_>> = (0..6).filter_map(|_| set.try_acquire()).collect();
        assert!(held.iter().all(|s| s.id().starts_with("l#")), "local first");
        let remote: Vec<Slot<'_>> = (0..6).filter_map(|_| set.try_acquire()).collect();
        assert_eq!(remote.len(), 6);
        assert!(
            remote.iter().all(|s| s.id().starts_with("r#")),
            "then remote"
        );
        assert!(set.try_acquire().is_none(), "all full");
        drop(held);
        assert!(set.try_acquire().is_some_and(|s| s.id().starts_with("l#")));
        // A call from another node never runs on a remote replica.
        let locals: Vec<Slot<'_>> = std::iter::from_fn(|| set.try_acquire_local()).collect();
        assert_eq!(locals.len(), 6);
        assert!(locals.iter().all(|s| s.id().starts_with("l#")));
        drop(locals);
        assert!(set.try_acquire_local_id("l#1").is_some());
        assert!(set.try_acquire_local_id("r#0").is_none(), "not a local one");
    }

    #[tokio::test]
    async fn any_local_replica_with_room_goes_before_a_remote_one() {
        // 4 local replicas of 1 slot each: even when two random choices land on full ones,
        // the free local ones are taken before any remote one.
        for _ in 0..50 {
            let set = mixed(4, 3, 1).await;
            let held: Vec<Slot<'_>> = (0..4).filter_map(|_| set.try_acquire()).collect();
            assert!(held.iter().all(|s| s.id().starts_with("l#")), "local first");
            assert!(set.try_acquire().is_some_and(|s| s.id().starts_with("r#")));
        }
    }

    #[tokio::test]
    async fn a_call_tried_again_skips_what_it_is_told_to() {
        let set = mixed(0, 3, 1).await;
        for _ in 0..20 {
            let slot = set.try_acquire_except(|r| r.id() != "r#2");
            assert_eq!(slot.as_ref().map(|s| s.id()), Some("r#2"));
        }
        let held = set.try_acquire_except(|r| r.id() != "r#2");
        assert!(
            set.try_acquire_except(|r| r.id() != "r#2").is_none(),
            "r#2 full"
        );
        drop(held);
        let with_local = mixed(1, 1, 1).await;
        let slot = with_local.try_acquire_except(|_| true);
        assert_eq!(
            slot.as_ref().map(|s| s.id()),
            Some("l#0"),
            "local ones first"
        );
    }

    #[tokio::test]
    async fn a_backend_with_only_remote_replicas_serves_through_them() {
        let set = mixed(0, 2, 1).await;
        assert!(set.has_live());
        assert!(!set.has_live_local());
        assert!(set.try_acquire_local().is_none());
        let held: Vec<Slot<'_>> = std::iter::from_fn(|| set.try_acquire()).collect();
        assert_eq!(held.len(), 2);
        let empty = ReplicaSet::with_remote(Vec::new(), 0, 1, Arc::new(WaitQueue::default()));
        assert!(!empty.has_live() && empty.try_acquire().is_none());
    }
}
