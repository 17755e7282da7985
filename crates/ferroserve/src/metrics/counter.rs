//! Lock-free counters sharded by thread: a plain count, and HTTP answers counted by method and status code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::Method;

use super::shard;

/// One shard's count, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A count added to by many threads without sharing a cache line.
pub(crate) struct Counter {
    shards: Box<[Padded]>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            shards: (0..shard::COUNT).map(|_| Padded::default()).collect(),
        }
    }
}

impl Counter {
    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.shards[shard::index()]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The count, summed over the shards.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// The methods counted by name; any other is counted as `OTHER` (a client chooses the
/// method, and must not grow the label set).
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];

/// The label of `method`, as [`StatusCounts::add`] takes it.
#[inline]
pub(crate) fn method_index(method: &Method) -> u32 {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Distinct (method, status) pairs each shard counts without a lock.
const SLOTS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct StatusShard {
    /// `(method + 1) << 16 | status`, 0 when free.
    keys: [AtomicU32; SLOTS],
    counts: [AtomicU64; SLOTS],
}

/// HTTP answers counted by (method, status code): each shard keeps a few pairs in
/// lock-free slots, and the rare pairs past them in a map under a lock.
pub(crate) struct StatusCounts {
    shards: Box<[StatusShard]>,
    overflow: Mutex<HashMap<u32, u64>>,
}

impl Default for StatusCounts {
    fn default() -> Self {
        Self {
            shards: (0..shard::COUNT).map(|_| StatusShard::default()).collect(),
            overflow: Mutex::default(),
        }
    }
}

impl StatusCounts {
    /// Counts one answer to a request of method label `method` ([`method_index`]).
    #[inline]
    pub(crate) fn add(&self, method: u32, status: u16) {
        let key = ((method.min(7) + 1) << 16) | u32::from(status);
        let shard = &self.shards[shard::index()];
        for (slot, count) in shard.keys.iter().zip(&shard.counts) {
            let current = slot.load(Ordering::Acquire);
            if current == key {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if current == 0 {
                match slot.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // Another thread of this shard took the slot for the same pair.
                    Err(taken) if taken == key => {
                        count.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        if let Ok(mut overflow) = self.overflow.lock() {
            *overflow.entry(key).or_default() += 1;
        }
    }

    /// Every (method, status code, count) so far, sorted.
    pub(crate) fn read(&self) -> Vec<(&'static str, u16, u64)> {
        let mut totals: HashMap<u32, u64> = self
            .overflow
            .lock()
            .map(|overflow| overflow.clone())
            .unwrap_or_default();
        for shard in &*self.shards {
            for (slot, count) in shard.keys.iter().zip(&shard.counts) {
                let key = slot.load(Ordering::Acquire);
                if key != 0 {
                    *totals.entry(key).or_default() += count.load(Ordering::Relaxed);
                }
            }
        }
        let mut out: Vec<_> = totals
            .into_iter()
            .map(|(key, n)| {
                let method = METHODS[((key >> 16) as usize).saturating_sub(1).min(7)];
                (method, (key & 0xffff) as u16, n)
            })
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_threads() {
        let counter = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add(1)))
            })
            .collect();
        threads
            .into_iter()
            .for_each(|t| t.join().expect("no panic"));
        assert_eq!(counter.get(), 4000);
    }

    #[test]
    fn answers_are_counted_by_method_and_status_past_the_slots() {
        let counts = StatusCounts::default();
        for status in 200..220 {
            counts.add(method_index(&Method::GET), status);
            counts.add(method_index(&Method::GET), status);
        }
        counts.add(
            method_index(&Method::from_bytes(b"BREW").expect("a method")),
            418,
        );
        let read = counts.read();
        assert_eq!(read.len(), 21, "20 statuses of GET and one other method");
        assert!(read.iter().filter(|r| r.0 == "GET").all(|r| r.2 == 2));
        assert!(read.contains(&("OTHER", 418, 1)));
    }
}
