//! Giving memory back to the OS once a worker has gone quiet.
//!
//! When a keep-alive connection goes cold it frees its read buffer and request state. The
//! allocator keeps those pages and hands emptied ones back to the OS only from its own
//! allocation paths, which a worker that stopped getting new requests no longer runs: after
//! a burst, a quiet worker would keep the burst's memory resident. The worker's ticker asks
//! the allocator to release it once the worker has served no request and no connection has
//! become active for a while (a release walks the heap: never on a busy worker).

use std::cell::Cell;

/// Ticks (of the worker's 50 ms ticker) without a request or a connection becoming active
/// before freed memory is released, and the least time between two releases: half a second,
/// so that connections gone cold after `idle_hot_ms` (250 ms) cost no more than their idle
/// task a second after a burst.
const QUIET_TICKS: u32 = 10;

/// Counts activity (connections becoming active, requests served) and connections going
/// cold on one worker.
#[derive(Default)]
pub struct Reclaim {
    /// Spells of activity started (a new connection, or a cold one sending again) and
    /// requests served: a worker whose long-lived connections stay busy is not quiet.
    started: Cell<u64>,
    /// A spell ended since the last release, so there is freed memory to give back.
    freed: Cell<bool>,
    seen_started: Cell<u64>,
    quiet_ticks: Cell<u32>,
}

impl Reclaim {
    pub fn spell_started(&self) {
        self.started.set(self.started.get().wrapping_add(1));
    }

    pub fn request_served(&self) {
        self.started.set(self.started.get().wrapping_add(1));
    }

    pub fn spell_ended(&self) {
        self.freed.set(true);
    }

    /// Called by the ticker: whether the worker has been quiet long enough, with memory freed
    /// since the last release, that it should release it now.
    pub fn tick(&self) -> bool {
        let started = self.started.get();
        if started != self.seen_started.replace(started) {
            self.quiet_ticks.set(0);
            return false;
        }
        let quiet = self.quiet_ticks.get().saturating_add(1);
        self.quiet_ticks.set(quiet);
        if quiet < QUIET_TICKS || !self.freed.get() {
            return false;
        }
        self.freed.set(false);
        self.quiet_ticks.set(0);
        true
    }
}

/// Return the calling thread's free allocator pages to the OS.
pub fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: `mi_collect` only walks and releases the calling thread's own free pages.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(not(feature = "mimalloc"), target_env = "gnu"))]
    // SAFETY: `malloc_trim` is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_after_a_quiet_half_second_and_only_when_something_was_freed() {
        let r = Reclaim::default();
        r.spell_started();
        r.spell_ended();
        assert!(!r.tick(), "a spell started in this tick");
        let quiet: Vec<bool> = (0..QUIET_TICKS).map(|_| r.tick()).collect();
        assert_eq!(quiet.iter().filter(|&&x| x).count(), 1);
        assert!(quiet[QUIET_TICKS as usize - 1]);
        // Nothing freed since: no further release, however long the worker stays quiet.
        assert!((0..3 * QUIET_TICKS).all(|_| !r.tick()));
        // A busy worker (spells starting every tick) never releases.
        for _ in 0..3 * QUIET_TICKS {
            r.spell_started();
            r.spell_ended();
            assert!(!r.tick());
        }
        // Nor does one whose kept-alive connections keep serving requests while another
        // connection went cold.
        r.spell_ended();
        for _ in 0..3 * QUIET_TICKS {
            r.request_served();
            assert!(!r.tick());
        }
    }
}
