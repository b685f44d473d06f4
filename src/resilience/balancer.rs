//! Latency-aware balancing (`[upstream] balancer = "p2c_ewma"`), as Finagle's and Linkerd's:
//! two servers drawn at random (by weight), the one with the lower cost wins, where cost is
//! a peak-sensitive moving average of its response time times (requests in flight + 1),
//! divided by its weight. A server that got slower is seen at once (the peak is taken as is)
//! and forgiven slowly (the average decays with a 10 s time constant while it gets no
//! traffic), so a slow server still gets an occasional request that tells whether it healed.
//! A refused connection is charged too, but that charge fades with a 1 s constant: the
//! server's host answered, so its process is down or restarting, and once it listens again it
//! is back in the comparison within seconds instead of a minute.
//!
//! The estimates are per worker: each core balances its own requests with what it saw,
//! without touching another core's memory.

/// How fast an estimate forgets, in nanoseconds (Finagle's and Linkerd's 10 s).
const DECAY_NS: f64 = 10e9;
/// How fast a refused connection's charge fades, in nanoseconds.
const REFUSED_DECAY_NS: f64 = 1e9;

/// One server's load as one worker sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeakEwma {
    /// Response time estimate, ns; 0 until the first response.
    rtt_ns: f64,
    /// When `rtt_ns` was last updated (worker clock, ns).
    stamp_ns: u64,
    /// Requests in flight to the server from this worker.
    pub inflight: u32,
    /// `rtt_ns` is a refused connection's charge, not a measured response.
    refused: bool,
}

impl PeakEwma {
    /// The estimate at `now_ns`, decayed for the time without news; `None` before the first
    /// response.
    pub fn rtt(&self, now_ns: u64) -> Option<f64> {
        if self.stamp_ns == 0 {
            return None;
        }
        let idle = now_ns.saturating_sub(self.stamp_ns) as f64;
        Some(self.rtt_ns * (-idle / self.decay_ns()).exp())
    }

    fn decay_ns(&self) -> f64 {
        if self.refused {
            REFUSED_DECAY_NS
        } else {
            DECAY_NS
        }
    }

    /// A response took `rtt_ns`.
    pub fn observe(&mut self, rtt_ns: u64, now_ns: u64) {
        let sample = rtt_ns as f64;
        match self.rtt(now_ns) {
            // A peak is taken as is: a server that got slower loses traffic at once.
            Some(current) if sample <= current => {
                let elapsed = now_ns.saturating_sub(self.stamp_ns) as f64;
                let w = (-elapsed / self.decay_ns()).exp();
                self.rtt_ns = current * w + sample * (1.0 - w);
            }
            _ => self.rtt_ns = sample,
        }
        self.stamp_ns = now_ns.max(1);
        self.refused = false;
    }

    /// A connection to the server was refused: it is charged as a response taking
    /// `penalty_ns`, a charge that fades with a 1 s constant. A larger estimate (a server that
    /// went silent) stands.
    pub fn charge_refused(&mut self, penalty_ns: u64, now_ns: u64) {
        let penalty = penalty_ns as f64;
        if self.rtt(now_ns).is_some_and(|current| current >= penalty) {
            return;
        }
        self.rtt_ns = penalty;
        self.stamp_ns = now_ns.max(1);
        self.refused = true;
    }

    /// Cost of sending one more request here; `peer_rtt` stands in for an estimate this
    /// server does not have yet (the other candidate's), so a new server competes on its
    /// requests in flight instead of looking free or dear.
    pub fn cost(&self, now_ns: u64, peer_rtt: Option<f64>, weight: u32) -> f64 {
        let rtt = self.rtt(now_ns).or(peer_rtt).unwrap_or(1.0).max(1.0);
        rtt * f64::from(self.inflight + 1) / f64::from(weight.max(1))
    }
}

/// A small, fast random source for choosing candidates (xorshift64*; not for secrets).
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_slower_response_is_taken_at_once_and_a_faster_one_slowly() {
        let mut e = PeakEwma::default();
        assert_eq!(e.rtt(5), None);
        e.observe(MS, 1_000 * MS);
        assert_eq!(e.rtt(1_000 * MS), Some(MS as f64));
        e.observe(40 * MS, 1_001 * MS);
        assert_eq!(e.rtt(1_001 * MS), Some(40.0 * MS as f64), "peak");
        e.observe(MS, 1_002 * MS);
        let after_one_fast = e.rtt(1_002 * MS).unwrap();
        assert!(after_one_fast > 39.0 * MS as f64, "{after_one_fast}");
        // Ten seconds without news: the estimate has decayed to about 1/e.
        let later = e.rtt(11_002 * MS).unwrap();
        assert!(
            (14.0 * MS as f64..15.0 * MS as f64).contains(&later),
            "{later}"
        );
    }

    #[test]
    fn a_refused_connections_charge_fades_in_seconds_and_a_silent_servers_stands() {
        let mut refused = PeakEwma::default();
        refused.observe(MS, 1_000 * MS);
        refused.charge_refused(500 * MS, 1_000 * MS);
        assert_eq!(refused.rtt(1_000 * MS), Some(500.0 * MS as f64));
        // Seven seconds later it is below a millisecond again (500 ms x e^-7).
        let faded = refused.rtt(8_000 * MS).unwrap();
        assert!(faded < MS as f64, "{faded}");
        // A server charged as slow as the connect deadline (it timed out) is still dear.
        let mut silent = PeakEwma::default();
        silent.observe(500 * MS, 1_000 * MS);
        assert!(silent.rtt(8_000 * MS).unwrap() > 200.0 * MS as f64);
        // A refusal does not soften a larger charge that stands.
        silent.charge_refused(100 * MS, 2_000 * MS);
        assert!(silent.rtt(8_000 * MS).unwrap() > 200.0 * MS as f64);
        // The first answer after a refusal is a measured response again, forgotten slowly.
        refused.observe(2 * MS, 9_000 * MS);
        assert_eq!(refused.rtt(9_000 * MS), Some(2.0 * MS as f64));
        let later = refused.rtt(19_000 * MS).unwrap();
        assert!(
            (0.7 * MS as f64..0.8 * MS as f64).contains(&later),
            "{later}"
        );
    }

    #[test]
    fn cost_grows_with_requests_in_flight_and_shrinks_with_weight() {
        let mut e = PeakEwma::default();
        e.observe(2 * MS, 10);
        let base = e.cost(10, None, 1);
        e.inflight = 3;
        assert_eq!(e.cost(10, None, 1), base * 4.0);
        assert_eq!(e.cost(10, None, 4), base);
        // Without an estimate of its own, a server is costed like its peer.
        let fresh = PeakEwma::default();
        assert_eq!(fresh.cost(10, Some(2.0 * MS as f64), 1), 2.0 * MS as f64);
    }

    #[test]
    fn the_random_source_covers_its_range_evenly() {
        let mut r = Rng::new(7);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[r.below(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
