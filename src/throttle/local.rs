//! A worker's own throttling state: one entry per key it has seen, holding the key's shared
//! budget and, for rate limits, the tokens this worker already claimed from it. Core-local
//! (owned by one worker, used through `&mut`); the request path for a known key is one hash
//! lookup by borrowed bytes and, most of the time, no atomic operation at all.
//!
//! Entries live in a slab (`Vec`) with a byte-keyed index, so the sweeper and the eviction
//! clock can walk them a few at a time from where they stopped.

use std::collections::HashMap;
use std::sync::Arc;

use super::bucket::TokenPool;
use super::shared::InFlight;

/// Claimed tokens not spent for this long go back to the shared pool, where other workers
/// can use them.
const RETURN_UNUSED_NS: u64 = 100_000_000;

/// A rate-limited key as one worker sees it.
#[derive(Debug)]
pub struct LocalBucket {
    pub pool: Arc<TokenPool>,
    /// Claimed from the pool, not spent yet.
    pub tokens: u64,
    /// The pool said no token before this time: refuse without asking it again.
    pub deny_until: u64,
}

#[derive(Debug)]
pub enum Entry {
    Rate(LocalBucket),
    InFlight(Arc<InFlight>),
}

impl Entry {
    /// Hand unspent tokens back before the entry goes away.
    fn release(&mut self) {
        if let Entry::Rate(b) = self {
            b.pool.give_back(std::mem::take(&mut b.tokens));
        }
    }
}

#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    entry: Entry,
    last_used: u64,
    /// Used since the eviction clock last passed (second chance).
    referenced: bool,
}

/// One worker's keys. When `max_keys` are held, inserting evicts one that was not used
/// since the eviction clock last passed it (CLOCK, an approximation of least recently
/// used). Evicting loses nothing: the key's state stays in the shared budget.
#[derive(Debug)]
pub struct LocalTable {
    index: HashMap<Box<[u8]>, u32>,
    slots: Vec<Slot>,
    sweep_at: usize,
    evict_at: usize,
    max_keys: usize,
    idle_ns: u64,
}

impl LocalTable {
    /// Keys unused for `idle_ns` are forgotten by [`LocalTable::sweep`].
    pub fn new(max_keys: usize, idle_ns: u64) -> LocalTable {
        LocalTable {
            index: HashMap::new(),
            slots: Vec::new(),
            sweep_at: 0,
            evict_at: 0,
            max_keys: max_keys.clamp(1, u32::MAX as usize),
            idle_ns,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Room allocated (slab and index), to check that memory is given back.
    pub fn capacity(&self) -> usize {
        self.slots.capacity().max(self.index.capacity())
    }

    /// The entry of `key`, marked used at `now`.
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        let i = *self.index.get(key)? as usize;
        let slot = &mut self.slots[i];
        slot.last_used = now;
        slot.referenced = true;
        Some(&mut slot.entry)
    }

    /// The entry of `key`, marked used at `now`; made by `make` if the key is new.
    pub fn get_or_insert_with(
        &mut self,
        key: &[u8],
        now: u64,
        make: impl FnOnce() -> Entry,
    ) -> &mut Entry {
        if let Some(&i) = self.index.get(key) {
            let slot = &mut self.slots[i as usize];
            slot.last_used = now;
            slot.referenced = true;
            return &mut slot.entry;
        }
        self.insert(key, make(), now)
    }

    /// Add `key` (not present), evicting another one when the table is full.
    pub fn insert(&mut self, key: &[u8], entry: Entry, now: u64) -> &mut Entry {
        if self.slots.len() >= self.max_keys {
            self.evict_one();
        }
        let i = self.slots.len();
        self.index.insert(key.into(), i as u32);
        self.slots.push(Slot {
            key: key.into(),
            entry,
            last_used: now,
            referenced: true,
        });
        &mut self.slots[i].entry
    }

    fn evict_one(&mut self) {
        // Two passes at most: the first clears every second chance.
        for _ in 0..2 * self.slots.len() {
            if self.evict_at >= self.slots.len() {
                self.evict_at = 0;
            }
            let slot = &mut self.slots[self.evict_at];
            if slot.referenced {
                slot.referenced = false;
                self.evict_at += 1;
            } else {
                self.remove_at(self.evict_at);
                return;
            }
        }
    }

    fn remove_at(&mut self, i: usize) {
        let mut slot = self.slots.swap_remove(i);
        slot.entry.release();
        self.index.remove(&slot.key);
        if let Some(moved) = self.slots.get(i) {
            if let Some(at) = self.index.get_mut(&moved.key) {
                *at = i as u32;
            }
        }
    }

    /// Look at up to `budget` entries from where the last sweep stopped: forget keys idle for
    /// `idle_ns` and give back tokens claimed but left unspent. Returns how many were
    /// forgotten. Memory is returned once the table shrank to a quarter of its room.
    pub fn sweep(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.sweep_at >= self.slots.len() {
                self.sweep_at = 0;
            }
            let slot = &mut self.slots[self.sweep_at];
            let idle = now.saturating_sub(slot.last_used);
            if idle >= self.idle_ns {
                // The last slot moves here; it is looked at next.
                self.remove_at(self.sweep_at);
                removed += 1;
                continue;
            }
            if idle >= RETURN_UNUSED_NS {
                if let Entry::Rate(b) = &mut slot.entry {
                    b.pool.give_back(std::mem::take(&mut b.tokens));
                }
            }
            self.sweep_at += 1;
        }
        if removed > 0 && self.capacity() > 64 && self.slots.len() < self.capacity() / 4 {
            let room = self.slots.len() * 2;
            self.slots.shrink_to(room);
            self.index.shrink_to(room);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::super::bucket::Rate;
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn bucket(pool: &Arc<TokenPool>, tokens: u64) -> Entry {
        Entry::Rate(LocalBucket {
            pool: pool.clone(),
            tokens,
            deny_until: 0,
        })
    }

    #[test]
    fn entries_are_found_by_borrowed_bytes_and_forgotten_when_idle() {
        let pool = Arc::new(TokenPool::new(Rate::new(1, 1, 1)));
        let mut t = LocalTable::new(10, 60 * SEC);
        t.insert(b"a", bucket(&pool, 0), 0);
        t.insert(b"b", bucket(&pool, 0), 0);
        assert!(t.get(b"a", 30 * SEC).is_some());
        assert!(t.get(b"c", 30 * SEC).is_none());
        assert_eq!(t.sweep(61 * SEC, 100), 1);
        assert!(t.get(b"a", 61 * SEC).is_some());
        assert!(t.get(b"b", 61 * SEC).is_none());
        assert_eq!(t.sweep(200 * SEC, 100), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn unspent_tokens_go_back_to_the_pool() {
        let pool = Arc::new(TokenPool::new(Rate::new(1, 3600, 5)));
        assert_eq!(pool.claim(0, 5), Ok(5));
        let mut t = LocalTable::new(10, 60 * SEC);
        t.insert(b"a", bucket(&pool, 3), 0);
        t.sweep(SEC, 100);
        assert_eq!(pool.claim(SEC, 10), Ok(3), "returned after a short idle");
        t.insert(b"b", bucket(&pool, 2), SEC);
        t.sweep(1000 * SEC, 100);
        assert!(t.is_empty());
        assert_eq!(pool.claim(1000 * SEC, 10), Ok(2), "returned when forgotten");
    }

    #[test]
    fn a_full_table_evicts_an_entry_not_used_recently() {
        let pool = Arc::new(TokenPool::new(Rate::new(1, 1, 1)));
        let mut t = LocalTable::new(3, 60 * SEC);
        for k in [b"a", b"b", b"c"] {
            t.insert(k, bucket(&pool, 0), 0);
        }
        // First eviction clears every second chance, then takes the first.
        t.insert(b"d", bucket(&pool, 0), 1);
        assert_eq!(t.len(), 3);
        assert!(t.get(b"a", 2).is_none());
        // b and c lost their second chance; d is fresh and c is used again.
        assert!(t.get(b"c", 2).is_some());
        t.insert(b"e", bucket(&pool, 0), 3);
        assert!(t.get(b"b", 4).is_none());
        for k in [b"c", b"d", b"e"] {
            assert!(t.get(k, 4).is_some());
        }
    }

    #[test]
    fn sweeping_visits_every_entry_in_small_batches() {
        let pool = Arc::new(TokenPool::new(Rate::new(1, 1, 1)));
        let mut t = LocalTable::new(1000, 10 * SEC);
        for i in 0..1000u32 {
            t.insert(
                &i.to_be_bytes(),
                bucket(&pool, 0),
                u64::from(i % 2) * 100 * SEC,
            );
        }
        let mut removed = 0;
        for _ in 0..10 {
            removed += t.sweep(50 * SEC, 100);
        }
        assert_eq!(removed, 500);
        for i in 0..1000u32 {
            assert_eq!(
                t.get(&i.to_be_bytes(), 50 * SEC).is_some(),
                i % 2 == 1,
                "{i}"
            );
        }
    }
}
