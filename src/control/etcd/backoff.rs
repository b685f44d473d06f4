//! Capped exponential backoff with jitter for reconnecting to etcd, so a fleet of nodes that
//! lost etcd together does not come back in lockstep.

use std::time::Duration;

/// Delays double from `base` up to `cap`; each one is drawn uniformly from `[d/2, d]`.
#[derive(Debug)]
pub(super) struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub(super) fn new(base: Duration, cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            base,
            cap,
            current: base,
            rng: seed | 1,
        }
    }

    /// The next delay to wait before trying again.
    pub(super) fn next_delay(&mut self) -> Duration {
        let full = self.current;
        self.current = (self.current * 2).min(self.cap);
        // xorshift64: jitter needs no cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = full / 2;
        let spread = full.as_micros().saturating_sub(half.as_micros()) as u64;
        half + Duration::from_micros(self.rng % (spread + 1))
    }

    /// Back to `base` after a success.
    pub(super) fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_reset() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut b = Backoff::new(base, cap);
        let mut ceiling = base;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(cap);
        }
        assert!(b.next_delay() >= cap / 2);
        b.reset();
        assert!(b.next_delay() <= base);
    }
}
