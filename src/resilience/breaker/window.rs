//! A circuit breaker's outcomes: what one worker counted in the current second ([`Counts`]),
//! and the node-wide 10 s window of one-second slots they are added to on the worker tick
//! ([`Window`]). A slot from an older second reads as empty and is reset when reused, so an
//! idle gap leaves nothing stale behind.

/// Seconds the window covers.
pub const WINDOW_SECS: u64 = 10;

/// Latency bins: bin `i` holds times up to 100 µs × 2^(i/4) (about 19% apart), the last one
/// everything above 26 s.
const BINS: usize = 74;

fn bin_upper_us(i: usize) -> u64 {
    (100.0 * 2f64.powf(i as f64 / 4.0)) as u64
}

fn bin_of(latency_us: u64) -> usize {
    if latency_us <= 100 {
        return 0;
    }
    let i = (4.0 * (latency_us as f64 / 100.0).log2()).ceil() as usize;
    i.min(BINS - 1)
}

/// Outcomes counted by one worker since its last flush.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub network_errors: u64,
    /// One counter per status range of the condition.
    pub ranges: Vec<u64>,
    /// Latency histogram; empty when the condition does not look at latency.
    pub latency: Vec<u64>,
}

impl Counts {
    pub fn new(ranges: usize, latency: bool) -> Counts {
        Counts {
            requests: 0,
            network_errors: 0,
            ranges: vec![0; ranges],
            latency: if latency { vec![0; BINS] } else { Vec::new() },
        }
    }

    /// One answer with `status`, `latency_us` after the request started.
    pub fn record(&mut self, status: u16, latency_us: u64, ranges: &[(u16, u16)]) {
        self.requests += 1;
        if status == 502 || status == 504 {
            self.network_errors += 1;
        }
        for (n, &(from, to)) in self.ranges.iter_mut().zip(ranges) {
            if (from..to).contains(&status) {
                *n += 1;
            }
        }
        if !self.latency.is_empty() {
            self.latency[bin_of(latency_us)] += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    pub fn clear(&mut self) {
        self.requests = 0;
        self.network_errors = 0;
        self.ranges.iter_mut().for_each(|n| *n = 0);
        self.latency.iter_mut().for_each(|n| *n = 0);
    }
}

/// Sums over the window: the same shape as [`Counts`].
pub type Totals = Counts;

impl Counts {
    /// Add `other` into these counts.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.network_errors += other.network_errors;
        for (a, b) in self.ranges.iter_mut().zip(&other.ranges) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// The `q`-th percentile of the recorded latencies, µs (the upper edge of its bin).
    pub fn latency_at(&self, q: f64) -> u64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((q / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return bin_upper_us(i);
            }
        }
        bin_upper_us(BINS - 1)
    }
}

/// The node-wide window: one slot per second, stamped with its second.
#[derive(Debug)]
pub struct Window {
    slots: Vec<(u64, Counts)>,
}

impl Window {
    pub fn new(ranges: usize, latency: bool) -> Window {
        Window {
            slots: (0..WINDOW_SECS)
                .map(|_| (u64::MAX, Counts::new(ranges, latency)))
                .collect(),
        }
    }

    /// Add a worker's counts for `second`.
    pub fn add(&mut self, second: u64, counts: &Counts) {
        let slot = &mut self.slots[(second % WINDOW_SECS) as usize];
        if slot.0 != second {
            if slot.0 != u64::MAX && slot.0 > second {
                return;
            }
            slot.0 = second;
            slot.1.clear();
        }
        slot.1.add(counts);
    }

    /// The sums of the seconds `second - 9 ..= second`.
    pub fn totals(&self, second: u64) -> Totals {
        let first = &self.slots[0].1;
        let mut t = Counts::new(first.ranges.len(), !first.latency.is_empty());
        for (s, c) in &self.slots {
            if *s != u64::MAX && *s <= second && *s + WINDOW_SECS > second {
                t.add(c);
            }
        }
        t
    }

    /// Forget everything (on a trip, as oxy's breaker resets its metrics).
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.0 = u64::MAX;
            slot.1.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bins_cover_their_range_monotonically() {
        assert_eq!(bin_of(50), 0);
        assert_eq!(bin_of(100), 0);
        assert!(bin_upper_us(bin_of(1_000)) >= 1_000);
        assert!(bin_upper_us(bin_of(1_000)) < 1_200);
        let mut last = 0;
        for us in [101, 500, 2_000, 40_000, 1_000_000, 30_000_000] {
            let b = bin_of(us);
            assert!(
                b >= last && bin_upper_us(b) >= us.min(bin_upper_us(BINS - 1)),
                "{us}"
            );
            last = b;
        }
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut c = Counts::new(0, true);
        for _ in 0..90 {
            c.record(200, 1_000, &[]);
        }
        for _ in 0..10 {
            c.record(200, 50_000, &[]);
        }
        assert!((1_000..1_200).contains(&c.latency_at(50.0)));
        assert!((1_000..1_200).contains(&c.latency_at(90.0)));
        assert!((50_000..60_000).contains(&c.latency_at(99.0)));
    }

    #[test]
    fn the_window_keeps_ten_seconds_and_nothing_stale() {
        let mut w = Window::new(1, false);
        let mut one = Counts::new(1, false);
        one.record(500, 1, &[(500, 600)]);
        for s in 100..110 {
            w.add(s, &one);
        }
        assert_eq!(w.totals(109).requests, 10);
        assert_eq!(w.totals(112).requests, 7);
        // Long idle: the old slots are not counted, and reusing one resets it.
        assert_eq!(w.totals(200).requests, 0);
        w.add(200, &one);
        assert_eq!(w.totals(200).requests, 1);
        assert_eq!(w.totals(200).ranges, [1]);
        w.clear();
        assert_eq!(w.totals(200).requests, 0);
    }
}
