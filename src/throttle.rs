//! Throttling: vulcand's `ratelimit` (token bucket per key) and `connlimit` (requests in
//! flight per key) middlewares, with node-wide limits and a core-local hot path. Pure code:
//! no I/O, time is passed in or read from [`SharedBudgets::now`].
//!
//! # How a node-wide rate stays core-local
//!
//! Each key (limit identity + variable value) has one shared [`TokenPool`]: a GCRA bucket in
//! a single `AtomicU64`, refilled by time. A worker's [`LocalTable`] entry for the key claims
//! up to [`Rate::batch`] tokens from it with one compare-and-swap (about 10 ms of rate, at
//! most `burst / workers`, at least one) and spends them without touching shared memory.
//! When the pool is empty the worker remembers until when, and refuses locally until then.
//! Tokens claimed but not spent within 100 ms go back to the pool. Every admitted request
//! spent a token of the pool, so the node never admits more than `rate × time + burst`; a
//! worker can claim the whole rate when the key's traffic is all on its core.
//!
//! `connlimit` counts requests in flight in a shared `AtomicU32` per key; the count goes
//! down when the request's [`Admission`] is dropped, however the exchange ended.
//!
//! # Keys, refreshes, expiry
//!
//! A key is the bytes `identity ‖ variable value`, looked up by borrowed bytes (no
//! allocation for a known key). The identity hashes frontend id, middleware id and settings,
//! so bucket state survives a route refresh that leaves the middleware alone, and a changed
//! middleware starts from a fresh bucket on its next request. Local entries unused for
//! `idle_key_secs` are forgotten by the worker's sweep; shared budgets are dropped once no
//! worker references them and their bucket is full again (nothing is lost by forgetting
//! them). See [`local`] and [`shared`] for the bounds.
//!
//! # Missing variables
//!
//! A request without the header a `request.header.<Name>` limit groups by is limited under
//! one shared "missing" key per limit, as vulcand does (its extractor yields an empty
//! value): leaving the header out must not be a way around the limit.

mod bucket;
mod duration_text;
pub mod local;
pub mod shared;
mod spec;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

pub use bucket::{Rate, Take, TokenBucket, TokenPool};
pub use duration_text::{go_duration_ms, go_duration_ns};
pub use local::{Entry, LocalBucket, LocalTable};
pub use shared::{InFlight, InFlightGuard, SharedBudgets};
pub use spec::{edge_rate, parse, Limit, LimitKind, Variable};

use crate::route::RouteRequest;

/// Entries a worker's sweep looks at per tick.
const SWEEP_BATCH: usize = 4096;

/// What a worker needs to throttle, from the profile's `[throttle]` section.
#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    /// Status of a refused request: 429 or 503.
    pub reject_status: u16,
    /// Keys unused this long are forgotten, nanoseconds.
    pub idle_key_ns: u64,
    /// Keys one worker tracks at most.
    pub max_keys: usize,
    /// Workers sharing the budgets (sizes the batches).
    pub workers: usize,
}

/// A refused request: status, body naming the limit, and when to retry.
#[derive(Debug)]
pub struct Rejection {
    pub status: u16,
    pub message: Arc<str>,
    /// Id of the middleware that refused.
    pub middleware: Arc<str>,
    /// Time until the next token (rate limits); `None` for connection limits.
    pub retry_in_ns: Option<u64>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Rejection {
    /// `Retry-After` (whole seconds, rounded up) and vulcand's `X-Retry-In` (Go duration)
    /// header lines, CRLF-terminated. A connection limit says to retry after a second.
    pub fn header_lines(&self) -> String {
        let mut out = String::with_capacity(48);
        match self.retry_in_ns {
            Some(ns) => {
                let secs = ns.div_ceil(1_000_000_000).max(1);
                let _ = write!(
                    out,
                    "Retry-After: {secs}\r\nX-Retry-In: {}\r\n",
                    go_duration_ns(ns)
                );
            }
            None => out.push_str("Retry-After: 1\r\n"),
        }
        out
    }
}

/// An admitted request. Holds its `connlimit` slots; dropping it releases them.
#[derive(Debug, Default)]
pub struct Admission {
    first: Option<InFlightGuard>,
    more: Vec<InFlightGuard>,
    /// How long the request must wait for its turn (paced limits), in nanoseconds.
    pub delay_ns: u64,
}

impl Admission {
    fn hold(&mut self, guard: InFlightGuard) {
        match self.first {
            None => self.first = Some(guard),
            Some(_) => self.more.push(guard),
        }
    }
}

/// One worker's throttle: its local table plus the node's shared budgets.
pub struct Throttle {
    shared: Arc<SharedBudgets>,
    local: LocalTable,
    /// The key being looked up; reused so a known key costs no allocation.
    scratch: Vec<u8>,
    workers: u64,
    reject_status: u16,
}

impl Throttle {
    pub fn new(shared: Arc<SharedBudgets>, settings: &ThrottleSettings) -> Throttle {
        Throttle {
            shared,
            local: LocalTable::new(settings.max_keys, settings.idle_key_ns),
            scratch: Vec::with_capacity(64),
            workers: settings.workers.max(1) as u64,
            reject_status: settings.reject_status,
        }
    }

    /// The shared budgets for a data plane of these settings.
    pub fn shared_budgets(settings: &ThrottleSettings) -> Arc<SharedBudgets> {
        Arc::new(SharedBudgets::new(
            settings
                .max_keys
                .saturating_mul(settings.workers.max(1))
                .saturating_mul(2),
        ))
    }

    pub fn shared(&self) -> &Arc<SharedBudgets> {
        &self.shared
    }

    pub fn local(&self) -> &LocalTable {
        &self.local
    }

    /// Check every limit, in order, for a request from `peer`.
    pub fn admit<'a>(
        &mut self,
        limits: impl Iterator<Item = &'a Limit>,
        req: &dyn RouteRequest,
        peer: IpAddr,
    ) -> Result<Admission, Rejection> {
        let mut limits = limits.peekable();
        if limits.peek().is_none() {
            return Ok(Admission::default());
        }
        let now = self.shared.now();
        self.admit_at(limits, req, peer, now)
    }

    /// [`Throttle::admit`] at a given time (nanoseconds on [`SharedBudgets::now`]'s clock).
    pub fn admit_at<'a>(
        &mut self,
        limits: impl Iterator<Item = &'a Limit>,
        req: &dyn RouteRequest,
        peer: IpAddr,
        now: u64,
    ) -> Result<Admission, Rejection> {
        let mut admission = Admission::default();
        for limit in limits {
            write_key(&mut self.scratch, limit, req, peer);
            let (shared, key) = (&self.shared, &self.scratch);
            let entry = self
                .local
                .get_or_insert_with(key, now, || match &limit.kind {
                    LimitKind::Rate(rate) | LimitKind::Paced(rate) => Entry::Rate(LocalBucket {
                        pool: shared.pool(key, *rate, now),
                        tokens: 0,
                        deny_until: 0,
                    }),
                    LimitKind::Connections(_) => Entry::InFlight(shared.in_flight(key, now)),
                });
            let refused = |retry_in_ns| Rejection {
                status: self.reject_status,
                message: limit.message.clone(),
                middleware: limit.middleware.clone(),
                retry_in_ns,
            };
            match (entry, &limit.kind) {
                (Entry::Rate(b), LimitKind::Rate(rate)) => {
                    if b.tokens > 0 {
                        b.tokens -= 1;
                    } else if now < b.deny_until {
                        return Err(refused(Some(b.deny_until - now)));
                    } else {
                        match b.pool.claim(now, rate.batch(self.workers)) {
                            Ok(n) => b.tokens = n - 1,
                            Err(wait) => {
                                b.deny_until = now.saturating_add(wait);
                                return Err(refused(Some(wait)));
                            }
                        }
                    }
                }
                // Paced limits go to the node-wide bucket for every request: each one's wait
                // depends on how many were admitted before it, node-wide.
                (Entry::Rate(b), LimitKind::Paced(_)) => match b.pool.claim_paced(now) {
                    Ok(delay) => admission.delay_ns = admission.delay_ns.max(delay),
                    Err(wait) => return Err(refused(Some(wait))),
                },
                (Entry::InFlight(count), LimitKind::Connections(max)) => {
                    match count.try_acquire(*max) {
                        Some(guard) => admission.hold(guard),
                        None => return Err(refused(None)),
                    }
                }
                // Keys embed the identity, which differs between kinds: cannot happen.
                _ => {}
            }
        }
        Ok(admission)
    }

    /// Forget idle keys, a batch at a time. Called from the worker's ticker.
    pub fn sweep(&mut self) {
        let now = self.shared.now();
        self.sweep_at(now);
    }

    pub fn sweep_at(&mut self, now: u64) {
        self.local.sweep(now, SWEEP_BATCH);
        self.shared.sweep(now);
    }
}

/// `identity ‖ tag ‖ value` into `out`.
fn write_key(out: &mut Vec<u8>, limit: &Limit, req: &dyn RouteRequest, peer: IpAddr) {
    out.clear();
    out.extend_from_slice(&limit.identity.to_le_bytes());
    match &limit.variable {
        Variable::ClientIp => match peer.to_canonical() {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        },
        Variable::RequestHost => {
            out.push(b'h');
            out.extend(req.host().iter().map(u8::to_ascii_lowercase));
        }
        Variable::Header(name) => match req.header(name.as_bytes()) {
            Some(value) => {
                out.push(b'v');
                out.extend_from_slice(value);
            }
            None => out.push(b'-'),
        },
    }
}

#[cfg(test)]
mod tests;
