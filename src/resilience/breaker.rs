//! vulcand's `cbreaker` middleware, node-wide: every worker's outcomes feed one state.
//!
//! States, as oxy's: **Standby** (requests pass, outcomes are counted) → the `Condition` holds
//! on the last 10 s → **Tripped** (every request gets the `Fallback` for `FallbackDuration`;
//! the window is cleared) → **Recovering** (a share of requests passes, growing linearly from
//! none to all over `RecoveryDuration`; the condition is still checked and trips again) →
//! **Standby**. `OnTripped` runs on Standby → Tripped, `OnStandby` on Recovering → Standby.
//!
//! The request path reads the state (two atomics on a line that changes only on a
//! transition) and counts outcomes in worker-local [`window::Counts`]. Workers add their
//! counts to the shared window on their 50 ms tick, and the first worker whose tick finds
//! the check due (at most once per `CheckPeriod`) evaluates the condition and makes the
//! transition, which every worker sees on its next request. The shared window sits behind a
//! mutex that only ticks take. Outcomes of requests that were in flight when the breaker
//! tripped reach the window after it was cleared (at most one tick's worth).

pub mod condition;
pub mod spec;
pub mod window;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

pub use spec::{BreakerSpec, Fallback, Webhook};
use window::{Counts, Window};

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Standby = 0,
    Tripped = 1,
    Recovering = 2,
}

impl State {
    pub const ALL: [State; 3] = [State::Standby, State::Tripped, State::Recovering];

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Tripped,
            2 => State::Recovering,
            _ => State::Standby,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Standby => "standby",
            State::Tripped => "tripped",
            State::Recovering => "recovering",
        }
    }
}

/// One cbreaker middleware's node-wide state.
#[derive(Debug)]
pub struct Breaker {
    pub spec: Arc<BreakerSpec>,
    pub frontend: Arc<str>,
    pub middleware: Arc<str>,
    state: AtomicU8,
    /// Node ms the state began.
    since: AtomicU64,
    /// Node ms the state ends (Tripped, Recovering).
    until: AtomicU64,
    next_check: AtomicU64,
    window: Mutex<Window>,
    /// Transitions into each state, by [`State`] value.
    transitions: [AtomicU64; 3],
}

/// What a worker keeps per breaker between ticks.
#[derive(Debug)]
pub struct LocalCounts {
    pub counts: Counts,
    /// Recovery ramp: accumulated share of requests owed passage.
    credit: f64,
}

impl Breaker {
    pub fn new(spec: Arc<BreakerSpec>, frontend: Arc<str>, middleware: Arc<str>) -> Breaker {
        let c = &spec.condition;
        let window = Window::new(c.ranges.len(), c.needs_latency);
        Breaker {
            spec,
            frontend,
            middleware,
            state: AtomicU8::new(State::Standby as u8),
            since: AtomicU64::new(0),
            until: AtomicU64::new(0),
            next_check: AtomicU64::new(0),
            window: Mutex::new(window),
            transitions: Default::default(),
        }
    }

    /// Fresh worker-local counts for this breaker.
    pub fn local(&self) -> LocalCounts {
        let c = &self.spec.condition;
        LocalCounts {
            counts: Counts::new(c.ranges.len(), c.needs_latency),
            credit: 0.0,
        }
    }

    /// The state as requests see it at `now` (node ms): a Tripped state past its duration
    /// already recovers, a Recovering one past its duration already stands by, even before a
    /// tick made it official.
    pub fn state(&self, now: u64) -> State {
        let state = State::from_u8(self.state.load(Ordering::Acquire));
        let until = self.until.load(Ordering::Acquire);
        match state {
            State::Tripped if now >= until => State::Recovering,
            State::Recovering if now >= until => State::Standby,
            s => s,
        }
    }

    /// Whether a request at `now` goes to the backend (true) or gets the fallback.
    #[inline]
    pub fn admit(&self, now: u64, local: &mut LocalCounts) -> bool {
        let state = State::from_u8(self.state.load(Ordering::Acquire));
        if state == State::Standby {
            return true;
        }
        let until = self.until.load(Ordering::Acquire);
        let recovery = self.spec.recovery_ms.max(1);
        let ramp_start = match state {
            State::Tripped if now < until => return false,
            State::Tripped => until,
            State::Recovering if now >= until => return true,
            _ => self.since.load(Ordering::Acquire),
        };
        let share = (now.saturating_sub(ramp_start) as f64 / recovery as f64).min(1.0);
        local.credit += share;
        if local.credit >= 1.0 {
            local.credit -= 1.0;
            true
        } else {
            false
        }
    }

    /// Add a worker's counts (its tick) for `now`'s second.
    pub fn flush(&self, now: u64, local: &mut LocalCounts) {
        if local.counts.is_empty() {
            return;
        }
        if let Ok(mut w) = self.window.lock() {
            w.add(now / 1000, &local.counts);
        }
        local.counts.clear();
    }

    /// Check the condition if a check is due at `now`; returns the state entered, if any.
    pub fn decide(&self, now: u64) -> Option<State> {
        let due = self.next_check.load(Ordering::Acquire);
        if now < due
            || self
                .next_check
                .compare_exchange(
                    due,
                    now + self.spec.check_ms,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return None;
        }
        let holds = || {
            self.window
                .lock()
                .map(|w| self.spec.condition.holds(&w.totals(now / 1000)))
                .unwrap_or(false)
        };
        let until = self.until.load(Ordering::Acquire);
        let next = match State::from_u8(self.state.load(Ordering::Acquire)) {
            State::Standby if holds() => State::Tripped,
            State::Tripped if now >= until => State::Recovering,
            State::Recovering if holds() => State::Tripped,
            State::Recovering if now >= until => State::Standby,
            _ => return None,
        };
        match next {
            State::Tripped => {
                self.set(State::Tripped, now, now + self.spec.fallback_ms);
                if let Ok(mut w) = self.window.lock() {
                    w.clear();
                }
            }
            State::Recovering => self.set(State::Recovering, until, until + self.spec.recovery_ms),
            State::Standby => self.set(State::Standby, now, 0),
        }
        Some(next)
    }

    fn set(&self, state: State, since: u64, until: u64) {
        self.since.store(since, Ordering::Release);
        self.until.store(until, Ordering::Release);
        self.state.store(state as u8, Ordering::Release);
        self.transitions[state as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Transitions into `state` so far.
    pub fn transitions(&self, state: State) -> u64 {
        self.transitions[state as usize].load(Ordering::Relaxed)
    }

    /// Milliseconds until the current Tripped or Recovering state ends (0 in Standby).
    pub fn remaining(&self, now: u64) -> u64 {
        match self.state(now) {
            State::Standby => 0,
            State::Tripped => self.until.load(Ordering::Acquire).saturating_sub(now),
            State::Recovering => {
                let until = self.until.load(Ordering::Acquire);
                let state = State::from_u8(self.state.load(Ordering::Acquire));
                // Still officially Tripped: the recovery ends one recovery after that.
                let end = if state == State::Tripped {
                    until + self.spec.recovery_ms
                } else {
                    until
                };
                end.saturating_sub(now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn breaker(doc: serde_json::Value) -> Breaker {
        let spec = BreakerSpec::parse(&doc, &mut Vec::new()).expect("a valid breaker");
        Breaker::new(Arc::new(spec), "f".into(), "cb".into())
    }

    fn record(b: &Breaker, local: &mut LocalCounts, status: u16, n: usize) {
        for _ in 0..n {
            local.counts.record(status, 1_000, &b.spec.condition.ranges);
        }
    }

    #[test]
    fn trips_recovers_linearly_and_stands_by() {
        let b = breaker(json!({
            "Condition": "NetworkErrorRatio() > 0.5",
            "FallbackDuration": 1_000_000_000u64,
            "RecoveryDuration": 2_000_000_000u64,
            "CheckPeriod": 100_000_000u64
        }));
        let mut local = b.local();
        let t0 = 10_000;
        record(&b, &mut local, 502, 6);
        record(&b, &mut local, 200, 4);
        b.flush(t0, &mut local);
        assert_eq!(b.decide(t0), Some(State::Tripped));
        assert_eq!(b.decide(t0 + 50), None, "at most once per CheckPeriod");
        assert!(!b.admit(t0 + 500, &mut local));
        assert_eq!(b.state(t0 + 500), State::Tripped);
        // Past FallbackDuration requests see a recovery even before a tick makes it official.
        assert_eq!(b.state(t0 + 1_000), State::Recovering);
        assert_eq!(b.decide(t0 + 1_100), Some(State::Recovering));
        // Half-way through the recovery about half the requests pass.
        let passed = (0..1_000)
            .filter(|_| b.admit(t0 + 2_000, &mut local))
            .count();
        assert!((480..=520).contains(&passed), "{passed}");
        let passed = (0..1_000)
            .filter(|_| b.admit(t0 + 1_200, &mut local))
            .count();
        assert!((80..=120).contains(&passed), "{passed}");
        assert_eq!(b.decide(t0 + 3_000), Some(State::Standby));
        assert!(b.admit(t0 + 3_001, &mut local));
        assert_eq!(
            (
                b.transitions(State::Tripped),
                b.transitions(State::Recovering),
                b.transitions(State::Standby)
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_recovery_that_fails_again_trips_again_and_a_trip_clears_the_window() {
        let b = breaker(json!({
            "Condition": "ResponseCodeRatio(500, 600, 0, 600) > 0.5",
            "FallbackDuration": 1_000_000_000u64,
            "RecoveryDuration": 10_000_000_000u64
        }));
        let mut local = b.local();
        record(&b, &mut local, 500, 3);
        b.flush(1_000, &mut local);
        assert_eq!(b.decide(1_000), Some(State::Tripped));
        // The window was cleared at the trip: the old failures do not count again.
        assert_eq!(b.decide(2_100), Some(State::Recovering));
        assert_eq!(b.decide(2_300), None);
        record(&b, &mut local, 503, 2);
        b.flush(2_400, &mut local);
        assert_eq!(b.decide(2_500), Some(State::Tripped));
        assert_eq!(b.transitions(State::Tripped), 2);
    }

    #[test]
    fn a_quiet_window_never_trips() {
        let b = breaker(
            json!({"Condition": "NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50) > 10"}),
        );
        for t in 0..50 {
            assert_eq!(b.decide(t * 200), None);
        }
        assert_eq!(b.state(10_000), State::Standby);
    }

    #[test]
    fn breakers_are_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Breaker>();
    }
}
