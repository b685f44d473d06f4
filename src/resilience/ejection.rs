//! Outlier ejection: a server that fails `consecutive_failures` times in a row (5xx answers,
//! failed or timed-out connections, resets) is taken out of its backend's rotation for a
//! penalty that grows with each ejection in a row, then readmitted by one probe request.
//!
//! The health of a server is node-wide: every worker's outcomes count, through a few atomics
//! the request path reads (a healthy server's counter is only read, never written, so the
//! cache line stays shared between cores). Ejecting also needs the state of the server's
//! siblings (`max_ejection_percent`), which the caller passes in.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A probe request that never reported back (its client left mid-way) stops blocking the
/// next probe after this long.
const PROBE_TIMEOUT_MS: u64 = 30_000;

/// The node's millisecond clock for health and breaker state (one epoch for every thread).
pub fn now_ms(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Starts at 1 so that 0 can mean "never".
    now.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
        + 1
}

/// `[upstream]` ejection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EjectionSettings {
    /// Failures in a row that eject a server (0: ejection off).
    pub consecutive_failures: u32,
    /// First penalty, ms; the n-th ejection in a row lasts n times as long.
    pub base_ms: u64,
    /// Longest penalty, ms.
    pub max_ms: u64,
    /// Most servers of a backend out at once, percent (at least one).
    pub max_percent: u32,
}

impl Default for EjectionSettings {
    fn default() -> Self {
        EjectionSettings {
            consecutive_failures: 5,
            base_ms: 10_000,
            max_ms: 300_000,
            max_percent: 50,
        }
    }
}

/// Whether a server may take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    InRotation,
    /// Its penalty is over and this request is the one probe that decides its return.
    Probe,
    Ejected,
}

/// Node-wide health of one server of one backend.
#[derive(Debug, Default)]
pub struct ServerHealth {
    consecutive: AtomicU32,
    /// Node ms until which the server is out; 0: in rotation.
    ejected_until: AtomicU64,
    /// When the probe in flight was let through; 0: none.
    probe_since: AtomicU64,
    /// Ejections in a row (the penalty multiplier).
    times: AtomicU32,
    readmitted_at: AtomicU64,
    /// Every ejection so far (`ringway_upstream_ejections_total`).
    ejections: AtomicU64,
    /// The balancer's latency estimate, µs, as the worker that last reported saw it (0: none).
    rtt_estimate_us: AtomicU64,
    /// Requests in flight to the server, summed over workers from their last report (workers
    /// add the change since their previous report once a second; p2c_ewma only).
    inflight: AtomicU64,
    /// Requests sent on pooled and on new connections, summed over workers' reports.
    reused: AtomicU64,
    fresh: AtomicU64,
}

impl ServerHealth {
    /// Whether the server may take a request at `now` (node ms). Claims the probe when the
    /// penalty is over and no other request probes.
    #[inline]
    pub fn availability(&self, now: u64) -> Availability {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return Availability::InRotation;
        }
        if now < until {
            return Availability::Ejected;
        }
        let probe = self.probe_since.load(Ordering::Acquire);
        if probe != 0 && now.saturating_sub(probe) < PROBE_TIMEOUT_MS {
            return Availability::Ejected;
        }
        match self
            .probe_since
            .compare_exchange(probe, now, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Availability::Probe,
            Err(_) => Availability::Ejected,
        }
    }

    /// Out of rotation (penalty running, or its probe undecided).
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Milliseconds of penalty left at `now` (0 when in rotation or waiting for its probe).
    pub fn penalty_left(&self, now: u64) -> u64 {
        self.ejected_until
            .load(Ordering::Relaxed)
            .saturating_sub(now)
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The balancer's estimate of the server's response time, µs (0 before any).
    pub fn rtt_estimate_us(&self) -> u64 {
        self.rtt_estimate_us.load(Ordering::Relaxed)
    }

    /// Requests in flight as the workers last reported them.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A worker's change of its requests in flight since its last report.
    pub fn add_inflight(&self, delta: i64) {
        self.inflight.fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// A worker's counts of requests sent on pooled and new connections since its last report.
    pub fn add_connections(&self, reused: u64, fresh: u64) {
        self.reused.fetch_add(reused, Ordering::Relaxed);
        self.fresh.fetch_add(fresh, Ordering::Relaxed);
    }

    /// Share of requests sent on a pooled connection (`None` before any request).
    pub fn pool_reuse(&self) -> Option<f64> {
        let (r, f) = (
            self.reused.load(Ordering::Relaxed),
            self.fresh.load(Ordering::Relaxed),
        );
        (r + f > 0).then(|| r as f64 / (r + f) as f64)
    }

    /// A worker's balancer estimate, published on its tick.
    pub fn set_rtt_estimate_us(&self, us: u64) {
        self.rtt_estimate_us.store(us, Ordering::Relaxed);
    }

    /// Whether the penalty is over and no probe is in flight (no claim is made).
    pub fn probe_due(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let probe = self.probe_since.load(Ordering::Relaxed);
        until != 0 && now >= until && (probe == 0 || now.saturating_sub(probe) >= PROBE_TIMEOUT_MS)
    }

    /// A request got a non-5xx answer: the failure run ends. The probe's answer readmits the
    /// server (so does any answer once the penalty is over); an answer to a request that was
    /// already in flight when the server was ejected does not cut the penalty short.
    #[inline]
    pub fn success(&self, now: u64, probe: bool) -> bool {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 || (!probe && now < until) {
            return false;
        }
        self.ejected_until.store(0, Ordering::Release);
        self.probe_since.store(0, Ordering::Release);
        self.readmitted_at.store(now, Ordering::Relaxed);
        true
    }

    /// The probe this request held ended without a verdict (the client left): let another.
    pub fn release_probe(&self) {
        self.probe_since.store(0, Ordering::Release);
    }

    /// A request failed on this server. `siblings` gives (servers out, servers) of the
    /// backend, asked only when an ejection is due. Returns the penalty when this failure
    /// ejected the server. Two servers of one backend ejected in the same instant (by two
    /// workers) can take the backend one past `max_percent`.
    pub fn failure(
        &self,
        now: u64,
        s: &EjectionSettings,
        siblings: impl FnOnce() -> (usize, usize),
    ) -> Option<u64> {
        if s.consecutive_failures == 0 {
            return None;
        }
        let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 {
            // Out already: only a failed probe (its penalty over) sends it back, for longer.
            if now < until || self.probe_since.load(Ordering::Acquire) == 0 {
                return None;
            }
            let penalty = self.next_penalty(now, s);
            self.ejected_until.store(now + penalty, Ordering::Release);
            self.probe_since.store(0, Ordering::Release);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            return Some(penalty);
        }
        if run < s.consecutive_failures {
            return None;
        }
        let (out, total) = siblings();
        let allowed = (total * s.max_percent as usize / 100).max(1);
        if out >= allowed {
            return None;
        }
        let penalty = self.next_penalty(now, s);
        if self
            .ejected_until
            .compare_exchange(0, now + penalty, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Some(penalty)
    }

    /// base × ejections in a row (the run restarts after `max_ms` in rotation), capped at
    /// `max_ms`, plus up to 10% jitter so servers ejected together do not return together.
    fn next_penalty(&self, now: u64, s: &EjectionSettings) -> u64 {
        let readmitted = self.readmitted_at.load(Ordering::Relaxed);
        if readmitted != 0 && now.saturating_sub(readmitted) > s.max_ms {
            self.times.store(0, Ordering::Relaxed);
        }
        let times = self.times.fetch_add(1, Ordering::Relaxed) + 1;
        let penalty = s.base_ms.saturating_mul(u64::from(times)).min(s.max_ms);
        let spread = penalty / 10;
        let jitter = if spread == 0 {
            0
        } else {
            let mix = (now ^ (self as *const Self as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (mix >> 33) % spread
        };
        penalty + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EjectionSettings {
        EjectionSettings {
            consecutive_failures: 3,
            base_ms: 1_000,
            max_ms: 2_500,
            max_percent: 50,
        }
    }

    fn fail(h: &ServerHealth, now: u64) -> Option<u64> {
        h.failure(now, &settings(), || (0, 4))
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_breaks_the_run() {
        let h = ServerHealth::default();
        assert_eq!(fail(&h, 10), None);
        assert_eq!(fail(&h, 11), None);
        h.success(12, false);
        assert_eq!(fail(&h, 13), None);
        assert_eq!(fail(&h, 14), None);
        let penalty = fail(&h, 15).expect("third in a row ejects");
        assert!((1_000..1_100).contains(&penalty), "{penalty}");
        assert_eq!(h.availability(16), Availability::Ejected);
        assert!(h.is_ejected());
        assert_eq!(h.ejections(), 1);
    }

    #[test]
    fn one_probe_after_the_penalty_readmits_or_ejects_for_longer() {
        let h = ServerHealth::default();
        for t in 0..3 {
            fail(&h, t);
        }
        let back = 2 + 1_100;
        assert_eq!(h.availability(back), Availability::Probe);
        assert_eq!(
            h.availability(back),
            Availability::Ejected,
            "one probe at a time"
        );
        // The probe fails: out again, twice as long.
        let penalty = fail(&h, back + 5).expect("a failed probe ejects again");
        assert!((2_000..2_200).contains(&penalty), "{penalty}");
        let back = back + 5 + 2_200;
        assert_eq!(h.availability(back), Availability::Probe);
        assert!(
            !h.success(back - 1_000, false),
            "an answer in flight does not readmit"
        );
        assert!(h.success(back + 1, true), "a good probe readmits");
        assert_eq!(h.availability(back + 2), Availability::InRotation);
        assert_eq!(h.ejections(), 2);
    }

    #[test]
    fn penalties_are_capped_and_the_run_restarts_after_a_long_good_spell() {
        let h = ServerHealth::default();
        let mut now = 0;
        let mut penalties = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                now += 1;
                if let Some(p) = fail(&h, now) {
                    penalties.push(p);
                }
            }
            now += 3_000;
            assert_eq!(h.availability(now), Availability::Probe);
            h.success(now, true);
        }
        let whole: Vec<u64> = penalties.iter().map(|p| p / 500 * 500).collect();
        assert_eq!(whole, [1_000, 2_000, 2_500, 2_500], "{penalties:?}");
        // In rotation for longer than max_ms: the next ejection starts from the base again.
        now += 10_000;
        let p = (0..3).find_map(|i| fail(&h, now + i)).unwrap();
        assert!(p < 1_100, "{p}");
    }

    #[test]
    fn no_more_than_the_allowed_share_of_a_backend_is_ejected() {
        let s = settings();
        let h = ServerHealth::default();
        for t in 0..5 {
            assert_eq!(h.failure(t, &s, || (2, 4)), None, "2 of 4 out already");
        }
        assert!(h.failure(6, &s, || (1, 4)).is_some());
        // A backend of one server may lose it (then every server is out: panic mode).
        let alone = ServerHealth::default();
        assert!((0..3)
            .find_map(|t| alone.failure(t, &s, || (0, 1)))
            .is_some());
    }

    #[test]
    fn a_probe_whose_client_left_lets_another_probe() {
        let h = ServerHealth::default();
        for t in 0..3 {
            fail(&h, t);
        }
        assert_eq!(h.availability(5_000), Availability::Probe);
        h.release_probe();
        assert_eq!(h.availability(5_001), Availability::Probe);
        assert_eq!(h.availability(5_002), Availability::Ejected);
        assert_eq!(
            h.availability(5_001 + PROBE_TIMEOUT_MS),
            Availability::Probe,
            "a probe that never reports back stops blocking"
        );
    }

    #[test]
    fn ejection_off_never_ejects() {
        let off = EjectionSettings {
            consecutive_failures: 0,
            ..settings()
        };
        let h = ServerHealth::default();
        assert!((0..100).all(|t| h.failure(t, &off, || (0, 2)).is_none()));
    }
}
