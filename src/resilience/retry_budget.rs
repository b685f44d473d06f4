//! The retry budget (as Linkerd's and Envoy's): over the last 10 s, retries may add at most
//! `ratio` × the requests of that window plus `min_per_sec` × 10 s, node-wide. A whole service
//! failing then costs its upstreams at most `1 + ratio` times the traffic, instead of the
//! `1 + max_retries` times a retry storm would.
//!
//! # Accounting
//!
//! Ten one-second buckets of (requests, retries), each count packed with its second into one
//! `AtomicU64`, so a bucket from an older second reads as zero and is reset by the first
//! writer of the new one without a lock. Requests are frequent: a worker counts them in a
//! `Cell` and adds them to the shared buckets on its 50 ms tick (one atomic operation per tick,
//! not per request), and its own unflushed count is added when it decides on a retry. Retries
//! are rare: each one is taken from the shared buckets at once, so the retries of every worker
//! count against the one node-wide limit (two workers deciding in the same instant can go one
//! retry each past it).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds the budget looks back.
pub const WINDOW_SECS: u64 = 10;

/// A count tagged with the second it belongs to: second in the high 32 bits.
fn pack(second: u64, count: u64) -> u64 {
    (second << 32) | count.min(u64::from(u32::MAX))
}

fn unpack(v: u64) -> (u64, u64) {
    (v >> 32, v & u64::from(u32::MAX))
}

/// One counter per second of the window.
struct Window {
    slots: [AtomicU64; WINDOW_SECS as usize],
}

impl Window {
    fn new() -> Window {
        Window {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, second: u64, n: u64) {
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (s, count) = unpack(cur);
            let next = if s == second {
                pack(second, count + n)
            } else if s < second {
                pack(second, n)
            } else {
                // A newer second already owns the slot: this count is too old to matter.
                return;
            };
            match slot.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The counts of the window ending at `second` (included).
    fn sum(&self, second: u64) -> u64 {
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|&(s, _)| s <= second && s + WINDOW_SECS > second)
            .map(|(_, count)| count)
            .sum()
    }
}

/// The node-wide budget. `Send + Sync`; one per data plane.
pub struct RetryBudget {
    epoch: std::time::Instant,
    ratio: f64,
    min_per_window: f64,
    requests: Window,
    retries: Window,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_window", &self.min_per_window)
            .finish()
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget {
            epoch: std::time::Instant::now(),
            ratio,
            min_per_window: f64::from(min_per_sec) * WINDOW_SECS as f64,
            requests: Window::new(),
            retries: Window::new(),
        }
    }

    /// The budget's second for an instant (the clock every worker shares).
    pub fn second(&self, now: std::time::Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Count `n` requests in `second` (see [`RetryBudget::second`]).
    pub fn deposit(&self, second: u64, n: u64) {
        if n > 0 {
            self.requests.add(second, n);
        }
    }

    /// Take one retry if the window allows it. `unflushed`: requests the caller counted but
    /// has not deposited yet.
    pub fn try_withdraw(&self, second: u64, unflushed: u64) -> bool {
        let requests = self.requests.sum(second) + unflushed;
        let allowed = self.ratio * requests as f64 + self.min_per_window;
        if (self.retries.sum(second) + 1) as f64 > allowed {
            return false;
        }
        self.retries.add(second, 1);
        true
    }

    /// (requests, retries) in the window ending at `second`.
    pub fn window(&self, second: u64) -> (u64, u64) {
        (self.requests.sum(second), self.retries.sum(second))
    }
}

/// A worker's side of the budget: requests counted locally until the tick.
pub struct LocalRetryBudget {
    shared: Arc<RetryBudget>,
    unflushed: Cell<u64>,
}

impl LocalRetryBudget {
    pub fn new(shared: Arc<RetryBudget>) -> LocalRetryBudget {
        LocalRetryBudget {
            shared,
            unflushed: Cell::new(0),
        }
    }

    /// One request on its way to a server (its first attempt).
    #[inline]
    pub fn count_request(&self) {
        self.unflushed.set(self.unflushed.get() + 1);
    }

    /// Add the requests counted since the last tick to the node-wide window.
    pub fn flush(&self, now: std::time::Instant) {
        let second = self.shared.second(now);
        self.shared.deposit(second, self.unflushed.replace(0));
    }

    /// Take a retry from the node-wide budget, if it has one.
    pub fn try_retry(&self, now: std::time::Instant) -> bool {
        let second = self.shared.second(now);
        self.shared.try_withdraw(second, self.unflushed.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<T: Send + Sync>() {}

    #[test]
    fn the_budget_is_shared_between_threads() {
        shared::<RetryBudget>();
    }

    #[test]
    fn retries_are_capped_at_the_ratio_of_requests_plus_the_minimum() {
        let b = RetryBudget::new(0.2, 1);
        // 10 s × 1/s of minimum, plus 20% of 100 requests.
        b.deposit(100, 100);
        let granted = (0..100).filter(|_| b.try_withdraw(100, 0)).count();
        assert_eq!(granted, 10 + 20);
        assert_eq!(b.window(100), (100, 30));
    }

    #[test]
    fn the_window_forgets_seconds_older_than_ten() {
        let b = RetryBudget::new(0.5, 0);
        b.deposit(10, 40);
        assert_eq!((0..100).filter(|_| b.try_withdraw(10, 0)).count(), 20);
        assert!(!b.try_withdraw(19, 0), "second 10 still counts at 19");
        // At 20, second 10 has left the window: no requests, no budget, and the old retries
        // no longer count either.
        assert_eq!(b.window(20), (0, 0));
        assert!(!b.try_withdraw(20, 0));
        b.deposit(20, 10);
        assert_eq!((0..100).filter(|_| b.try_withdraw(20, 0)).count(), 5);
        // A slot reused after an idle gap starts from zero.
        b.deposit(40, 2);
        assert_eq!(b.window(40), (2, 0));
    }

    #[test]
    fn unflushed_requests_of_the_caller_count() {
        let b = Arc::new(RetryBudget::new(1.0, 0));
        let local = LocalRetryBudget::new(b.clone());
        let now = std::time::Instant::now();
        let second = b.second(now);
        assert!(!local.try_retry(now));
        for _ in 0..3 {
            local.count_request();
        }
        assert!(local.try_retry(now));
        local.flush(now);
        assert_eq!(b.window(second), (3, 1));
        assert!(local.try_retry(now) && local.try_retry(now));
        assert!(!local.try_retry(now));
    }

    #[test]
    fn zero_ratio_and_minimum_allow_no_retry() {
        let b = RetryBudget::new(0.0, 0);
        b.deposit(1, 1_000);
        assert!(!b.try_withdraw(1, 0));
    }

    #[test]
    fn workers_on_several_threads_never_exceed_the_budget_by_more_than_one_each() {
        let b = Arc::new(RetryBudget::new(0.1, 0));
        b.deposit(3, 1_000);
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1_000).filter(|_| b.try_withdraw(3, 0)).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert!((100..=104).contains(&granted), "{granted}");
    }
}
