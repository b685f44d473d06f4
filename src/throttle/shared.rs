//! The node-wide side of throttling: per-key [`TokenPool`]s and [`InFlight`] counters shared
//! by every worker, in a sharded map.
//!
//! # Why a mutex is fine here
//!
//! A worker looks a key up here only when its own [`super::local::LocalTable`] has no entry
//! for it (the first request of a key on that core, or after the local entry expired or was
//! evicted); from then on the worker holds the `Arc` and the request path touches only the
//! atomics inside it. So the shard locks are taken on that creation path and by the sweeper,
//! never per request for a known key. Sixteen shards keep two workers (or a sweep) from
//! waiting on each other even under a flood of new keys, and a `HashMap` behind a `Mutex` is
//! simpler and easier to bound than a lock-free map, with no new dependency.
//!
//! # Expiry and bounds
//!
//! An entry is dropped when no worker references it any more and forgetting it loses
//! nothing: a token pool whose bucket is full again, a counter with nothing in flight. A
//! shard holding more than its share of `2 × max_keys × workers` first drops those, then any
//! pool no worker references (that key starts again with a full bucket: a flood of distinct
//! keys can cost a pushed-out key one extra burst, never memory); entries workers still
//! reference are never dropped, and those are bounded by the workers' own `max_keys`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bucket::{Rate, TokenPool};

const SHARDS: usize = 16;

/// Requests in flight for one `connlimit` key, node-wide.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
}

impl InFlight {
    /// Count one more request unless `max` are already in flight.
    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Option<InFlightGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightGuard(self.clone()))
    }

    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

/// One admitted request of a `connlimit` key; the count goes down when it is dropped,
/// however the exchange ended.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a shard holds for one key.
#[derive(Clone, Debug)]
pub enum Budget {
    Pool(Arc<TokenPool>),
    InFlight(Arc<InFlight>),
}

impl Budget {
    fn referenced(&self) -> bool {
        match self {
            Budget::Pool(p) => Arc::strong_count(p) > 1,
            Budget::InFlight(c) => Arc::strong_count(c) > 1,
        }
    }

    /// Forgetting it now loses nothing.
    fn settled(&self, now: u64) -> bool {
        match self {
            Budget::Pool(p) => p.is_full(now),
            Budget::InFlight(c) => c.current() == 0,
        }
    }
}

type Shard = HashMap<Box<[u8]>, Budget>;

/// Every key's shared budget. `Send + Sync`; one per data plane, shared by all workers.
pub struct SharedBudgets {
    epoch: Instant,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    per_shard: usize,
    next_sweep: AtomicUsize,
}

impl std::fmt::Debug for SharedBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudgets")
            .field("keys", &self.len())
            .finish()
    }
}

impl SharedBudgets {
    /// Room for about `max_keys` keys before unreferenced ones are pushed out; give it twice
    /// what all workers may reference, so a full shard always has something to push out.
    pub fn new(max_keys: usize) -> SharedBudgets {
        SharedBudgets {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: Default::default(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            next_sweep: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds since this registry was created: the clock every bucket is read with.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic while holding a shard lock cannot leave a half-updated map behind (every
        // update is one insert or remove), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool of `key`, created full with `rate` if it does not exist.
    pub fn pool(&self, key: &[u8], rate: Rate, now: u64) -> Arc<TokenPool> {
        let found = self.budget(key, now, || Budget::Pool(Arc::new(TokenPool::new(rate))));
        match found {
            Budget::Pool(p) => p,
            // Keys embed the limit identity, which differs between kinds.
            Budget::InFlight(_) => Arc::new(TokenPool::new(rate)),
        }
    }

    /// The in-flight counter of `key`.
    pub fn in_flight(&self, key: &[u8], now: u64) -> Arc<InFlight> {
        match self.budget(key, now, || Budget::InFlight(Arc::default())) {
            Budget::InFlight(c) => c,
            Budget::Pool(_) => Arc::default(),
        }
    }

    fn budget(&self, key: &[u8], now: u64, make: impl FnOnce() -> Budget) -> Budget {
        let mut shard = self.shard(key);
        if let Some(b) = shard.get(key) {
            return b.clone();
        }
        if shard.len() >= self.per_shard {
            shard.retain(|_, b| b.referenced() || !b.settled(now));
            // Free at least a quarter, so a full shard costs one scan per many new keys.
            if shard.len() >= self.per_shard * 3 / 4 {
                shard.retain(|_, b| b.referenced());
            }
        }
        let b = make();
        shard.insert(key.into(), b.clone());
        b
    }

    /// Drop settled, unreferenced keys of one shard (the next one each call), and give
    /// memory back when a shard shrank a lot. Called from the workers' tickers.
    pub fn sweep(&self, now: u64) {
        let i = self.next_sweep.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        shard.retain(|_, b| b.referenced() || !b.settled(now));
        if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
            let room = shard.len() * 2;
            shard.shrink_to(room);
        }
    }

    /// Keys held, all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room allocated, all shards (for tests of shrinking).
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).capacity())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_budgets_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedBudgets>();
        assert_send_sync::<Arc<TokenPool>>();
        assert_send_sync::<Arc<InFlight>>();
    }

    #[test]
    fn the_same_key_gets_the_same_pool_until_it_is_settled_and_unreferenced() {
        let shared = SharedBudgets::new(1000);
        let rate = Rate::new(1, 10, 1);
        let a = shared.pool(b"k", rate, 0);
        assert!(Arc::ptr_eq(&a, &shared.pool(b"k", rate, 0)));
        assert_eq!(a.claim(0, 1), Ok(1));
        drop(a);
        // Not full yet: kept, so the spent token is remembered.
        for _ in 0..SHARDS {
            shared.sweep(1_000_000_000);
        }
        assert_eq!(shared.len(), 1);
        assert!(shared.pool(b"k", rate, 0).claim(1_000_000_000, 1).is_err());
        for _ in 0..SHARDS {
            shared.sweep(10_000_000_000);
        }
        assert!(shared.is_empty());
    }

    #[test]
    fn in_flight_counts_are_released_by_their_guards() {
        let shared = SharedBudgets::new(1000);
        let c = shared.in_flight(b"c", 0);
        let g1 = c.try_acquire(2).unwrap();
        let g2 = shared.in_flight(b"c", 0).try_acquire(2).unwrap();
        assert!(c.try_acquire(2).is_none());
        drop(g1);
        assert_eq!(c.current(), 1);
        drop(c);
        for _ in 0..SHARDS {
            shared.sweep(0);
        }
        assert_eq!(shared.len(), 1, "a guard still references it");
        drop(g2);
        for _ in 0..SHARDS {
            shared.sweep(0);
        }
        assert!(shared.is_empty());
    }

    #[test]
    fn a_full_shard_pushes_out_unreferenced_keys_first() {
        let shared = SharedBudgets::new(SHARDS * 4);
        let rate = Rate::new(1, 3600, 1);
        let held: Vec<_> = (0..10u32)
            .map(|i| {
                let p = shared.pool(&i.to_be_bytes(), rate, 0);
                p.claim(0, 1).unwrap();
                p
            })
            .collect();
        for i in 10..100_000u32 {
            shared.pool(&i.to_be_bytes(), rate, 0).claim(0, 1).unwrap();
        }
        assert!(shared.len() <= SHARDS * 4 + 10, "{}", shared.len());
        for (i, p) in held.iter().enumerate() {
            let again = shared.pool(&(i as u32).to_be_bytes(), rate, 0);
            assert!(Arc::ptr_eq(p, &again), "a referenced pool was dropped");
        }
    }
}
