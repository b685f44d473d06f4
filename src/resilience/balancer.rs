//! Latency-aware balancing (`[upstream] balancer = "p2c_ewma"`), as Finagle's and Linkerd's:
//! two servers drawn at random (by weight), the one with the lower cost wins, where cost is
//! a peak-sensitive moving average of its response time times (requests in flight + 1),
//! divided by its weight. A server that got slower is seen at once (the peak is taken as is)
//! and forgiven slowly (the average decays with a 10 s time constant while it gets no
//! traffic).
//!
//! Unlike Finagle and Linkerd, an estimate made of answers goes stale after a second without
//! news: the server then counts as no dearer than a candidate with a fresh estimate, and its
//! next answer replaces the estimate instead of being averaged into it. At low traffic the
//! dearest of three or more servers loses every draw, so with decay alone one slow answer (a
//! new instance's first, cold one) kept a server out of a worker's rotation for 10–30 s. Now
//! it is asked again within about a second, and is back in rotation with its first fast
//! answer. A server chosen that way whose answer is a 5xx, or still more than twice as slow as
//! (and over a millisecond slower than) the candidate it was chosen over, waits twice as long
//! before it is asked again (2, 4, … 32 s), so one that stays slow costs its callers a few
//! requests a minute, not one a second.
//!
//! A refused connection is charged too, but that charge fades with a 1 s constant: the
//! server's host answered, so its process is down or restarting, and once it listens again it
//! is back in the comparison within seconds instead of a minute. Other failures (a reset, a
//! connection or answer that timed out) are charged like a slow answer that never goes stale,
//! so a silent server is not sent a request every second to find out.
//!
//! The estimates are per worker: each core balances its own requests with what it saw,
//! without touching another core's memory.

/// How fast an estimate forgets, in nanoseconds (Finagle's and Linkerd's 10 s).
const DECAY_NS: f64 = 10e9;
/// How fast a refused connection's charge fades, in nanoseconds.
const REFUSED_DECAY_NS: f64 = 1e9;
/// How long an estimate made of answers stands without news, in nanoseconds (doubled for
/// each probe that found the server still slow, up to [`MAX_BACKOFF`] times).
const STALE_NS: u64 = 1_000_000_000;
/// At most 32 s between probes of a server that stays slow.
const MAX_BACKOFF: u8 = 5;
/// A probe's answer counts as still slow only when it is also this much slower than the
/// candidate it was chosen over (below a millisecond, twice as slow is scheduling noise).
const SLOW_MARGIN_NS: f64 = 1e6;

/// What an estimate was last made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Source {
    /// Measured answers: goes stale after [`STALE_NS`] without news.
    #[default]
    Answer,
    /// A refused connection's charge: fades with [`REFUSED_DECAY_NS`].
    Refused,
    /// Another failure's charge (reset, timed out): fades like an answer, never stale.
    Failed,
}

/// One server's load as one worker sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeakEwma {
    /// Response time estimate, ns; 0 until the first response.
    rtt_ns: f64,
    /// When `rtt_ns` was last updated (worker clock, ns).
    stamp_ns: u64,
    /// Requests in flight to the server from this worker.
    pub inflight: u32,
    /// What `rtt_ns` was last made of.
    source: Source,
    /// Probes in a row that found the server still slow: it goes stale after
    /// `STALE_NS << backoff`.
    backoff: u8,
    /// While chosen only because its estimate went stale: the fresh estimate of the candidate
    /// it was chosen over (ns; 0 otherwise), against which its next answer is judged.
    probe_bar_ns: f64,
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

    /// An estimate made of answers with no news for [`STALE_NS`]: compared as no dearer than
    /// a fresh peer's, and replaced by the next answer.
    fn is_stale(&self, now_ns: u64) -> bool {
        self.source == Source::Answer
            && self.stamp_ns != 0
            && now_ns.saturating_sub(self.stamp_ns) >= STALE_NS << self.backoff
    }

    fn decay_ns(&self) -> f64 {
        if self.source == Source::Refused {
            REFUSED_DECAY_NS
        } else {
            DECAY_NS
        }
    }

    /// A response took `rtt_ns`.
    pub fn observe(&mut self, rtt_ns: u64, now_ns: u64) {
        self.take(rtt_ns, now_ns);
        self.source = Source::Answer;
    }

    /// An attempt failed other than by a refusal (reset, timed out) and is charged as a
    /// response taking `charge_ns`: taken like an answer, but it never goes stale.
    pub fn charge_failed(&mut self, charge_ns: u64, now_ns: u64) {
        self.take(charge_ns, now_ns);
        self.source = Source::Failed;
    }

    /// Take a sample: a peak as is, a faster one averaged in (replacing a stale estimate).
    fn take(&mut self, rtt_ns: u64, now_ns: u64) {
        let sample = rtt_ns as f64;
        let current = if self.is_stale(now_ns) {
            None
        } else {
            self.rtt(now_ns)
        };
        if self.probe_bar_ns > 0.0 {
            let bar = self.probe_bar_ns;
            self.backoff = if sample > 2.0 * bar && sample - bar > SLOW_MARGIN_NS {
                (self.backoff + 1).min(MAX_BACKOFF)
            } else {
                0
            };
            self.probe_bar_ns = 0.0;
        }
        match current {
            // A peak is taken as is: a server that got slower loses traffic at once.
            Some(current) if sample <= current => {
                let elapsed = now_ns.saturating_sub(self.stamp_ns) as f64;
                let w = (-elapsed / self.decay_ns()).exp();
                self.rtt_ns = current * w + sample * (1.0 - w);
            }
            _ => self.rtt_ns = sample,
        }
        self.stamp_ns = now_ns.max(1);
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
        self.source = Source::Refused;
    }

    /// The fresh estimate of `peer` when this server's own is dearer and only counts as no
    /// dearer because it went stale: what choosing this server over `peer` probes it against.
    pub fn stale_against(&self, now_ns: u64, peer: &PeakEwma) -> Option<f64> {
        if !self.is_stale(now_ns) || peer.is_stale(now_ns) {
            return None;
        }
        let (own, bar) = (self.rtt(now_ns)?, peer.rtt(now_ns)?);
        (own > bar).then_some(bar)
    }

    /// This server was chosen over a candidate whose fresh estimate `bar_ns` is lower than its
    /// own stale one: its next answer says whether it is still slow.
    pub fn probing(&mut self, bar_ns: f64) {
        self.probe_bar_ns = bar_ns.max(1.0);
    }

    /// A 5xx answered while probing: it says nothing of the server's speed (a server failing
    /// fast must not look fast), but the server is not back either, so the estimate stands, as
    /// decayed so far, twice as long before the server is asked again.
    pub fn probe_failed(&mut self, now_ns: u64) {
        if self.probe_bar_ns == 0.0 {
            return;
        }
        self.probe_bar_ns = 0.0;
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
        if let Some(current) = self.rtt(now_ns).filter(|_| self.source == Source::Answer) {
            self.rtt_ns = current;
            self.stamp_ns = now_ns.max(1);
        }
    }

    /// Cost of sending one more request here rather than to `peer`, the other candidate. A
    /// server without an estimate is costed like its peer, and one whose estimate went stale
    /// no dearer than a peer with a fresh one: such a server competes on its requests in
    /// flight instead of looking free or dear.
    pub fn cost(&self, now_ns: u64, peer: &PeakEwma, weight: u32) -> f64 {
        let rtt = match self.rtt(now_ns) {
            None => peer.rtt(now_ns).unwrap_or(1.0),
            Some(own) if self.is_stale(now_ns) && !peer.is_stale(now_ns) => {
                peer.rtt(now_ns).map_or(own, |p| own.min(p))
            }
            Some(own) => own,
        }
        .max(1.0);
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
        silent.charge_failed(500 * MS, 1_000 * MS);
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
    fn an_estimate_of_answers_goes_stale_after_a_second_and_the_next_answer_replaces_it() {
        let mut fast = PeakEwma::default();
        fast.observe(MS, 1_000 * MS);
        let mut slow = PeakEwma::default();
        slow.observe(5 * MS, 1_000 * MS);
        // Within the second the slow answer stands against a fast peer kept fresh.
        fast.observe(MS, 1_900 * MS);
        assert!(slow.cost(1_900 * MS, &fast, 1) > 4.0 * fast.cost(1_900 * MS, &slow, 1));
        // A second without news: no dearer than the fresh peer, so they compete on requests
        // in flight; the stale estimate itself is still there (for `/routes`).
        fast.observe(MS, 2_000 * MS);
        assert_eq!(
            slow.cost(2_000 * MS, &fast, 1),
            fast.cost(2_000 * MS, &slow, 1)
        );
        assert!(slow.rtt(2_000 * MS).unwrap() > 4.0 * MS as f64);
        // Its next answer replaces the estimate instead of being averaged into it.
        slow.observe(MS, 2_000 * MS);
        assert_eq!(slow.rtt(2_000 * MS), Some(MS as f64));
        // A stale estimate does not make a server look cheaper than its own: against a dear
        // fresh peer (one that failed) it keeps its own, lower one.
        let mut silent = PeakEwma::default();
        silent.charge_failed(500 * MS, 2_000 * MS);
        assert_eq!(
            fast.cost(3_500 * MS, &silent, 1),
            fast.rtt(3_500 * MS).unwrap()
        );
        // Failure charges never go stale: a silent server is not asked again every second.
        assert!(silent.cost(3_500 * MS, &fast, 1) > 400.0 * MS as f64);
        let mut refused = PeakEwma::default();
        refused.charge_refused(500 * MS, 2_000 * MS);
        assert_eq!(
            refused.cost(3_500 * MS, &fast, 1),
            refused.rtt(3_500 * MS).unwrap()
        );
    }

    #[test]
    fn a_probe_that_finds_the_server_still_slow_doubles_the_wait_up_to_32_seconds() {
        let mut peer = PeakEwma::default();
        let mut sick = PeakEwma::default();
        sick.observe(300 * MS, 1_000 * MS);
        let mut t = 1_000 * MS;
        let mut waits = Vec::new();
        for _ in 0..7 {
            // Ask every 100 ms until the stale estimate lets it compete, then probe it.
            let asked_at = loop {
                t += 100 * MS;
                peer.observe(MS, t);
                if let Some(bar) = sick.stale_against(t, &peer) {
                    assert_eq!(bar, MS as f64);
                    break t;
                }
            };
            waits.push((asked_at - sick.stamp_ns) / (100 * MS));
            sick.probing(MS as f64);
            sick.observe(300 * MS, t);
        }
        // In tenths of a second: 1, 2, 4, 8, 16, 32, 32 s.
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 320]);
        // The probe's answer replaces the stale estimate even where it is a little faster
        // than the estimate had decayed to (judged before the wait doubles).
        let (mut slowish, mut other) = (PeakEwma::default(), PeakEwma::default());
        slowish.observe(300 * MS, 10_000 * MS);
        other.observe(MS, 11_000 * MS);
        assert!(slowish.stale_against(11_000 * MS, &other).is_some());
        slowish.probing(MS as f64);
        slowish.observe(200 * MS, 11_000 * MS);
        assert_eq!(slowish.rtt(11_000 * MS), Some(200.0 * MS as f64));
        // Below a millisecond, twice as slow is noise: the wait does not double.
        let (mut quick, mut quicker) = (PeakEwma::default(), PeakEwma::default());
        quick.observe(5 * MS, 10_000 * MS);
        quicker.observe(MS / 5, 11_000 * MS);
        assert!(quick.stale_against(11_000 * MS, &quicker).is_some());
        quick.probing((MS / 5) as f64);
        quick.observe(MS / 2, 11_000 * MS);
        quick.observe(5 * MS, 11_000 * MS);
        quicker.observe(MS / 5, 12_000 * MS);
        assert!(quick.stale_against(12_000 * MS, &quicker).is_some());
        // A probe answered with a 5xx (no speed measured): the estimate stands, as decayed so
        // far, and the wait doubles.
        let mut flaky = PeakEwma::default();
        flaky.observe(300 * MS, t);
        peer.observe(MS, t + 1_000 * MS);
        assert!(flaky.stale_against(t + 1_000 * MS, &peer).is_some());
        let decayed = flaky.rtt(t + 1_000 * MS).unwrap();
        flaky.probing(MS as f64);
        flaky.probe_failed(t + 1_000 * MS);
        assert_eq!(flaky.rtt(t + 1_000 * MS), Some(decayed));
        peer.observe(MS, t + 2_900 * MS);
        assert!(flaky.stale_against(t + 2_900 * MS, &peer).is_none());
        peer.observe(MS, t + 3_000 * MS);
        assert!(flaky.stale_against(t + 3_000 * MS, &peer).is_some());
        // Found fast (not more than twice its peer): back to a second.
        t += 32_000 * MS;
        sick.probing(MS as f64);
        sick.observe(2 * MS, t);
        peer.observe(MS, t + 900 * MS);
        assert!(sick.stale_against(t + 900 * MS, &peer).is_none());
        peer.observe(MS, t + 1_000 * MS);
        sick.observe(5 * MS, t + 1_000 * MS);
        peer.observe(MS, t + 2_000 * MS);
        assert!(sick.stale_against(t + 2_000 * MS, &peer).is_some());
    }

    #[test]
    fn cost_grows_with_requests_in_flight_and_shrinks_with_weight() {
        let mut e = PeakEwma::default();
        e.observe(2 * MS, 10);
        let none = PeakEwma::default();
        let base = e.cost(10, &none, 1);
        e.inflight = 3;
        assert_eq!(e.cost(10, &none, 1), base * 4.0);
        assert_eq!(e.cost(10, &none, 4), base);
        // Without an estimate of its own, a server is costed like its peer.
        e.inflight = 0;
        assert_eq!(none.cost(10, &e, 1), 2.0 * MS as f64);
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
