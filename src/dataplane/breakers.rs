//! A worker's side of the circuit breakers: whether a request passes each breaker of its
//! frontend, the outcomes counted locally, and on the tick their flush into the node-wide
//! window plus the state check (at most once per `CheckPeriod`, by whichever worker's tick
//! comes first).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fast_hash::FastMap;
use crate::resilience::breaker::{Breaker, LocalCounts};
use crate::resilience::ejection::now_ms;
use crate::resilience::Registry;
use crate::route::Frontend;

/// A breaker this worker has used unused for this long is dropped from its map.
const FORGET_AFTER: Duration = Duration::from_secs(60);

struct Local {
    breaker: Arc<Breaker>,
    counts: LocalCounts,
    used: Instant,
}

/// The breakers a worker has seen, by address of their node-wide state.
#[derive(Default)]
pub struct WorkerBreakers {
    local: RefCell<FastMap<usize, Local>>,
}

impl WorkerBreakers {
    /// The first of `fe`'s breakers that sends the request to its fallback, if any.
    pub fn admit<'f>(&self, fe: &'f Frontend, now: Instant) -> Option<&'f Arc<Breaker>> {
        let ms = now_ms(now);
        let mut local = self.local.borrow_mut();
        for b in fe.middlewares.iter().filter_map(|m| m.breaker.as_ref()) {
            let l = local
                .entry(Arc::as_ptr(b) as usize)
                .or_insert_with(|| Local {
                    breaker: b.clone(),
                    counts: b.local(),
                    used: now,
                });
            l.used = now;
            if !b.admit(ms, &mut l.counts) {
                return Some(b);
            }
        }
        None
    }

    /// Count the answer to a request that passed `fe`'s breakers (none when the client left
    /// before an answer: status 0).
    pub fn record(&self, fe: &Frontend, status: u16, elapsed: Duration) {
        if status == 0 {
            return;
        }
        let mut local = self.local.borrow_mut();
        let us = elapsed.as_micros() as u64;
        for b in fe.middlewares.iter().filter_map(|m| m.breaker.as_ref()) {
            if let Some(l) = local.get_mut(&(Arc::as_ptr(b) as usize)) {
                l.counts.counts.record(status, us, &b.spec.condition.ranges);
            }
        }
    }

    /// The tick: flush, check, report transitions; forget breakers gone quiet.
    pub fn tick(&self, now: Instant, registry: &Registry) {
        let ms = now_ms(now);
        self.local.borrow_mut().retain(|_, l| {
            l.breaker.flush(ms, &mut l.counts);
            if let Some(state) = l.breaker.decide(ms) {
                registry.transition(&l.breaker, state);
            }
            now.saturating_duration_since(l.used) < FORGET_AFTER
        });
    }
}
