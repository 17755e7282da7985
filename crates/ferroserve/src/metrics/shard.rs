//! Which shard of a sharded counter this thread writes: threads take turns at first use, so the cores of a server each add to cache lines of their own.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per counter (a power of two): enough for the worker threads of a small machine
/// to write apart; more threads share.
pub(crate) const COUNT: usize = 8;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % COUNT);
}

/// This thread's shard.
#[inline]
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_spread_over_the_shards() {
        let mine = super::index();
        assert_eq!(mine, super::index(), "a thread keeps its shard");
        let others: std::collections::HashSet<usize> = (0..super::COUNT)
            .map(|_| std::thread::spawn(super::index).join().expect("no panic"))
            .collect();
        assert!(others.len() > 1, "new threads take other shards");
    }
}
