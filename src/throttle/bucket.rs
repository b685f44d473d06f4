//! Token-bucket arithmetic: a [`Rate`] (requests per period, burst), a single-threaded
//! [`TokenBucket`], and the node-wide [`TokenPool`] that workers claim tokens from in batches.
//!
//! Both buckets are GCRA ("virtual scheduling"): the state is one number, the *theoretical
//! arrival time* `tat` in nanoseconds since an epoch. A full bucket has `tat <= now`; taking `n`
//! tokens moves `tat` forward by `n` emission intervals (`period / requests`), and is allowed
//! while `tat - now` stays within the burst's worth of intervals. This is the same admission
//! rule as a bucket of `burst` tokens refilled at `requests / period`, but the whole state fits
//! one `AtomicU64`, so a claim is a single compare-and-swap.
//!
//! Times are integer nanoseconds; products are computed in `u128` and saturate, so a rate of
//! one request per day and a rate of billions per second both work without overflow. Costs
//! are rounded up (never more than 1 ns per claim), so rounding never admits extra requests.

use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Credit and times saturate here, far beyond any real period, so sums never overflow.
const FAR: u64 = 1 << 62;

/// A configured rate: `requests` per `period_ns`, with a bucket of `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    requests: u64,
    period_ns: u64,
    burst: u64,
    /// How far ahead of `now` the theoretical arrival time may run: `burst` intervals.
    tolerance: u64,
}

/// The outcome of asking a bucket for tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// `n` tokens (at least one) were taken.
    Granted(u64),
    /// No token now; the next one is available after this many nanoseconds.
    Wait(u64),
}

impl Rate {
    /// `requests` (≥ 1) per `period_secs` (≥ 1) seconds with a bucket of `burst` (≥ 1) tokens;
    /// zeros are raised to 1.
    pub fn new(requests: u64, period_secs: u64, burst: u64) -> Rate {
        let requests = requests.max(1);
        let period_ns = period_secs.max(1).saturating_mul(NANOS_PER_SEC).min(FAR);
        let burst = burst.max(1);
        let mut rate = Rate {
            requests,
            period_ns,
            burst,
            tolerance: 0,
        };
        rate.tolerance = rate.cost(burst);
        rate
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn period_secs(&self) -> u64 {
        self.period_ns / NANOS_PER_SEC
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Nanoseconds `n` tokens stand for, rounded up, saturating at [`FAR`].
    fn cost(&self, n: u64) -> u64 {
        let ns = (u128::from(n) * u128::from(self.period_ns)).div_ceil(u128::from(self.requests));
        ns.min(u128::from(FAR)) as u64
    }

    /// Whole tokens `ns` of credit buys, rounded down.
    fn tokens_in(&self, ns: u64) -> u64 {
        let n = u128::from(ns) * u128::from(self.requests) / u128::from(self.period_ns);
        n.min(u128::from(self.burst)) as u64
    }

    /// How many tokens to claim from the shared pool at once for `workers` workers: about
    /// 10 ms of rate, never more than a fair share of the burst, at least one.
    pub fn batch(&self, workers: u64) -> u64 {
        let ten_ms = u128::from(self.requests) * 10_000_000 / u128::from(self.period_ns);
        let share = self.burst / workers.max(1);
        (ten_ms.min(u128::from(share)) as u64).max(1)
    }

    /// Take up to `want` tokens from a bucket whose state is `tat` at time `now`.
    /// Returns the new state when anything was granted.
    pub fn take(&self, tat: u64, now: u64, want: u64) -> (Take, u64) {
        let now = now.min(FAR);
        let base = tat.max(now);
        let limit = now + self.tolerance;
        let credit = limit.saturating_sub(base);
        let n = self.tokens_in(credit).min(want.max(1));
        if n == 0 {
            // The next token fits once `limit` passes `base + one interval`.
            let wait = (base + self.cost(1)).saturating_sub(limit).max(1);
            return (Take::Wait(wait), tat);
        }
        (Take::Granted(n), (base + self.cost(n)).min(FAR + FAR))
    }

    /// Give `n` unused tokens back: move `tat` back by their cost (rounded down, so giving
    /// back never creates credit).
    pub fn give_back(&self, tat: u64, n: u64) -> u64 {
        let ns = u128::from(n) * u128::from(self.period_ns) / u128::from(self.requests);
        tat.saturating_sub(ns.min(u128::from(FAR)) as u64)
    }
}

/// A bucket owned by one thread. A clock reading earlier than the last one counts as no time
/// elapsed (no refill, no underflow).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    tat: u64,
    last: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket {
            rate,
            tat: 0,
            last: 0,
        }
    }

    /// Take up to `want` tokens at `now` (nanoseconds since the epoch the caller chose).
    pub fn take(&mut self, now: u64, want: u64) -> Take {
        let now = now.max(self.last);
        self.last = now;
        let (take, tat) = self.rate.take(self.tat, now, want);
        self.tat = tat;
        take
    }

    /// Tokens available at `now` (without taking them).
    pub fn available(&self, now: u64) -> u64 {
        let now = now.max(self.last);
        let credit = (now + self.rate.tolerance).saturating_sub(self.tat.max(now));
        self.rate.tokens_in(credit)
    }
}

/// The node-wide budget of one key: a GCRA bucket in one atomic word, claimed in batches by
/// the workers' local buckets. A worker whose clock reading is a little older than the state
/// another worker just wrote simply gets less credit: readings never refill or underflow it.
#[derive(Debug)]
pub struct TokenPool {
    rate: Rate,
    tat: AtomicU64,
}

impl TokenPool {
    /// A full pool.
    pub fn new(rate: Rate) -> TokenPool {
        TokenPool {
            rate,
            tat: AtomicU64::new(0),
        }
    }

    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// Claim up to `want` tokens at `now`: `Ok(granted)` (≥ 1), or `Err(nanoseconds)` until
    /// the next token. One compare-and-swap unless another worker raced.
    pub fn claim(&self, now: u64, want: u64) -> Result<u64, u64> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            match self.rate.take(tat, now, want) {
                (Take::Wait(ns), _) => return Err(ns),
                (Take::Granted(n), next) => {
                    match self.tat.compare_exchange_weak(
                        tat,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(n),
                        Err(seen) => tat = seen,
                    }
                }
            }
        }
    }

    /// Claim one token for a paced limit: `Ok(delay)`, how long the request waits for its
    /// turn (0 when the bucket was full: GCRA's theoretical arrival time minus now), or
    /// `Err(nanoseconds)` until a token frees up when the burst is used.
    pub fn claim_paced(&self, now: u64) -> Result<u64, u64> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            match self.rate.take(tat, now, 1) {
                (Take::Wait(ns), _) => return Err(ns),
                (Take::Granted(_), next) => {
                    match self.tat.compare_exchange_weak(
                        tat,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(tat.saturating_sub(now)),
                        Err(seen) => tat = seen,
                    }
                }
            }
        }
    }

    /// Return `n` claimed but unspent tokens.
    pub fn give_back(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(self.rate.give_back(tat, n))
            });
    }

    /// Whether the bucket is full at `now` (forgetting it then loses nothing).
    pub fn is_full(&self, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    #[test]
    fn paced_claims_wait_their_turn_and_stop_at_the_burst() {
        // 10 per second, bucket of 3 (nginx burst=2 without nodelay).
        let pool = TokenPool::new(Rate::new(10, 1, 3));
        let now = 1_000 * SEC;
        assert_eq!(pool.claim_paced(now), Ok(0), "a full bucket: no wait");
        assert_eq!(
            pool.claim_paced(now),
            Ok(100 * MS),
            "one ahead: one interval"
        );
        assert_eq!(pool.claim_paced(now), Ok(200 * MS));
        let wait = pool.claim_paced(now).expect_err("the burst is used up");
        assert!(wait > 0 && wait <= 100 * MS, "{wait}");
        // A token later the next request is admitted, still behind the queue.
        assert_eq!(pool.claim_paced(now + 100 * MS), Ok(200 * MS));
    }

    #[test]
    fn a_full_bucket_admits_the_burst_then_refills_at_the_rate() {
        let mut b = TokenBucket::new(Rate::new(10, 1, 3));
        assert_eq!(b.take(0, 10), Take::Granted(3));
        assert_eq!(b.take(0, 1), Take::Wait(100 * MS));
        assert_eq!(b.take(50 * MS, 1), Take::Wait(50 * MS));
        assert_eq!(b.take(100 * MS, 1), Take::Granted(1));
        // A long idle refills to the burst, never beyond.
        assert_eq!(b.available(100 * SEC), 3);
        assert_eq!(b.take(100 * SEC, 10), Take::Granted(3));
    }

    #[test]
    fn admitted_count_over_time_is_rate_times_time_plus_burst() {
        let mut b = TokenBucket::new(Rate::new(100, 1, 5));
        let mut admitted = 0;
        // One attempt per 100 µs for 2 s.
        for i in 0..20_000u64 {
            if let Take::Granted(n) = b.take(i * 100_000, 1) {
                admitted += n;
            }
        }
        assert!((204..=206).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_clock_going_backwards_counts_as_no_time() {
        let mut b = TokenBucket::new(Rate::new(1, 1, 1));
        assert_eq!(b.take(10 * SEC, 1), Take::Granted(1));
        // Earlier reading: no refill, no underflow, a sensible wait.
        assert_eq!(b.take(SEC, 1), Take::Wait(SEC));
        assert_eq!(b.take(0, 1), Take::Wait(SEC));
        assert_eq!(b.take(11 * SEC, 1), Take::Granted(1));
    }

    #[test]
    fn huge_periods_and_huge_rates_do_not_overflow() {
        // One request per day.
        let mut day = TokenBucket::new(Rate::new(1, 86_400, 1));
        assert_eq!(day.take(0, 1), Take::Granted(1));
        assert_eq!(day.take(SEC, 1), Take::Wait(86_399 * SEC));
        assert_eq!(day.take(86_400 * SEC, 1), Take::Granted(1));
        // A century-long period with an absurd burst: the credit saturates (at ~146 years of
        // rate), nothing overflows.
        let mut long = TokenBucket::new(Rate::new(3, 100 * 365 * 86_400, u64::MAX));
        assert!(matches!(long.take(0, u64::MAX), Take::Granted(n) if n >= 1));
        assert!(matches!(long.take(0, 1), Take::Wait(_)));
        assert!(matches!(long.take(u64::MAX, 1), Take::Granted(_)));
        // Billions per second: batches are exact, single tokens cost at most 1 ns.
        let rate = Rate::new(u64::MAX, 1, 1_000_000);
        let mut fast = TokenBucket::new(rate);
        assert_eq!(fast.take(0, u64::MAX), Take::Granted(1_000_000));
        assert_eq!(fast.take(SEC, u64::MAX), Take::Granted(1_000_000));
        assert_eq!(rate.batch(2), 500_000);
        let mut third = TokenBucket::new(Rate::new(3, 1, 1));
        assert_eq!(third.take(0, 1), Take::Granted(1));
        assert_eq!(third.take(333_333_334, 1), Take::Granted(1));
    }

    #[test]
    fn batches_are_ten_ms_of_rate_capped_by_a_share_of_the_burst() {
        assert_eq!(Rate::new(100, 1, 3).batch(2), 1);
        assert_eq!(Rate::new(10_000, 1, 1000).batch(2), 100);
        assert_eq!(Rate::new(10_000, 1, 50).batch(2), 25);
        assert_eq!(Rate::new(1, 86_400, 1).batch(8), 1);
    }

    #[test]
    fn two_workers_drawing_in_batches_admit_at_most_rate_times_time_plus_burst() {
        let rate = Rate::new(1000, 1, 50);
        let pool = TokenPool::new(rate);
        let batch = rate.batch(2);
        // Each simulated worker keeps claimed tokens locally and caches "deny until".
        let mut local = [(0u64, 0u64); 2];
        let mut admitted = [0u64; 2];
        let mut t = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        while t < 3 * SEC {
            // Which core gets to the pool first varies, as it does for real.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let first = (rng & 1) as usize;
            for w in [first, 1 - first] {
                let (tokens, deny_until) = &mut local[w];
                // Worker 1 sees a slightly older clock, as on another core.
                let now = if w == 1 { t.saturating_sub(3_000) } else { t };
                if *tokens > 0 {
                    *tokens -= 1;
                    admitted[w] += 1;
                } else if now >= *deny_until {
                    match pool.claim(now, batch) {
                        Ok(n) => {
                            *tokens = n - 1;
                            admitted[w] += 1;
                        }
                        Err(wait) => *deny_until = now + wait,
                    }
                }
            }
            t += 20_000 + rng % 60_000;
        }
        let total = admitted[0] + admitted[1];
        let bound = 3 * 1000 + 50;
        assert!(total <= bound, "{total} > {bound}");
        assert!(total >= bound * 98 / 100, "{total} too low");
        assert!(admitted[0] > 1000 && admitted[1] > 1000, "{admitted:?}");
    }

    #[test]
    fn one_worker_can_use_the_whole_rate() {
        let rate = Rate::new(1000, 1, 10);
        let pool = TokenPool::new(rate);
        let mut admitted = 0;
        let mut tokens = 0;
        for i in 0..100_000u64 {
            let now = i * 10_000; // 1 s of attempts every 10 µs
            if tokens > 0 {
                tokens -= 1;
                admitted += 1;
            } else if let Ok(n) = pool.claim(now, rate.batch(2)) {
                tokens = n - 1;
                admitted += 1;
            }
        }
        assert!((1005..=1010).contains(&admitted), "{admitted}");
    }

    #[test]
    fn returned_tokens_can_be_claimed_again_and_never_exceed_the_burst() {
        let pool = TokenPool::new(Rate::new(1, 60, 4));
        assert_eq!(pool.claim(0, 3), Ok(3));
        assert_eq!(pool.claim(0, 3), Ok(1));
        assert!(pool.claim(0, 1).is_err());
        pool.give_back(3);
        assert_eq!(pool.claim(0, 10), Ok(3));
        assert!(!pool.is_full(0));
        pool.give_back(1000);
        assert!(pool.is_full(0));
        assert_eq!(pool.claim(0, 10), Ok(4));
    }

    #[test]
    fn concurrent_claims_never_overdraw() {
        let pool = std::sync::Arc::new(TokenPool::new(Rate::new(1, 3600, 10_000)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut got = 0;
                    while let Ok(n) = pool.claim(0, 7) {
                        got += n;
                    }
                    got
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 10_000);
    }
}
