//! Per-worker counters for the admin endpoint's `/metrics`.
//!
//! Every counter is written by exactly one worker thread and read by the admin thread, which
//! sums across workers when it renders a scrape. The request path never executes an atomic
//! read-modify-write and never touches a cache line another core writes:
//!
//! - A counter is an `AtomicU64` with a single writer, bumped as `store(load() + n, Relaxed)`:
//!   on x86-64 and AArch64 that compiles to a plain load and a plain store (no `lock` prefix,
//!   no exclusive monitor), exactly the cost of a `Cell<u64>`, and a single writer cannot lose
//!   an update. A reader sees each value untorn; values of different counters may be a few
//!   requests apart during a scrape, which a scrape tolerates (`_count` of a histogram is
//!   derived from its buckets at render time, so that pair is always consistent).
//! - Each worker's counters live in their own [`CachePadded`] block (crossbeam's, 128-byte
//!   aligned on x86-64 and AArch64, where the adjacent-line prefetcher pulls cache lines in
//!   pairs), so no two cores ever write the same line.
//! - This was chosen over `Cell`s published from the 50 ms ticker because it needs no copy per
//!   tick and a scrape is never stale; the cost on the request path is the same.
//!
//! Keyed series (per frontend, per throttling middleware) are kept in a worker-local map of
//! padded counter blocks. The map itself is worker-local (`RefCell`); the admin thread sees the
//! list of blocks as an `ArcSwap` snapshot the worker republishes from its ticker whenever a
//! key was added or dropped, so a series that first appeared is visible within one tick
//! (50 ms). Series of frontends that left the route table are dropped after
//! [`GONE_SERIES_TTL`], and a worker keeps at most [`MAX_SERIES`] frontends (the rest are
//! counted under [`OVERFLOW_FRONTEND`]), so memory stays bounded however routes churn.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;

use super::error::ProxyError;
use super::worker::Driver;
use crate::route::RouteTable;

/// Upper bounds of the request duration histogram, in seconds (`+Inf` follows).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for the request path.
const BUCKET_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Frontend label of requests that matched no route (or were refused before routing).
pub const NO_ROUTE_FRONTEND: &str = "";
/// Frontend label of requests of frontends beyond [`MAX_SERIES`] in one worker.
pub const OVERFLOW_FRONTEND: &str = "~overflow";
/// Most frontend series one worker keeps.
pub const MAX_SERIES: usize = 10_000;
/// How long the series of a frontend that left the route table is still exported.
pub const GONE_SERIES_TTL: Duration = Duration::from_secs(300);

/// Entries of a worker's cache of recently seen frontends' series.
const RECENT_FRONTENDS: usize = 16;
/// How often a worker looks for series of frontends that left the table.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Add to a counter that only the calling thread writes (see the module docs).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counters of one frontend in one worker.
#[derive(Default)]
pub struct FrontendCounters {
    /// Responses by status class: index 0 = 1xx ... 4 = 5xx.
    pub requests: [AtomicU64; 5],
    /// Non-cumulative duration buckets; the last one is `+Inf`.
    pub buckets: [AtomicU64; 15],
    pub duration_sum_ns: AtomicU64,
}

impl FrontendCounters {
    fn record(&self, status: u16, elapsed: Duration) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        bump(&self.requests[class], 1);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NS.partition_point(|b| *b < ns);
        bump(&self.buckets[bucket], 1);
        bump(&self.duration_sum_ns, ns);
    }
}

/// Node-wide counters of one worker (no labels besides the worker).
#[derive(Default)]
pub struct WorkerCounters {
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub upstream_connect_errors: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    pub upstream_requests_fresh: AtomicU64,
    pub upstream_requests_reused: AtomicU64,
    /// Further attempts, by [`RetryReason`].
    pub upstream_retries: [AtomicU64; RetryReason::ALL.len()],
    /// Retries the failover predicate asked for that the retry budget refused.
    pub retry_budget_exhausted: AtomicU64,
    /// Completed TLS handshakes: index = 2 × (TLS 1.3) + resumed.
    pub tls_handshakes_ok: [AtomicU64; 4],
    /// Handshakes that did not complete, by [`HandshakeEnd::index`] (1..).
    pub tls_handshakes_failed: [AtomicU64; 4],
    /// Durations of completed handshakes: non-cumulative buckets (last `+Inf`), sum.
    pub tls_handshake_buckets: [AtomicU64; 15],
    pub tls_handshake_sum_ns: AtomicU64,
    /// 0 = not started, 1 = io_uring, 2 = epoll.
    driver: AtomicU8,
}

/// How a TLS handshake ended (`ringway_tls_handshakes_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeEnd {
    Ok {
        tls13: bool,
        resumed: bool,
    },
    /// Not finished within `handshake_ms` (or no first byte in that time).
    Timeout,
    /// The client closed, or the connection broke, during the handshake.
    Closed,
    /// Not TLS, or refused by the configuration (version, ciphers, client certificate).
    Failed,
    /// Closed unfinished because the worker ran `max_handshakes` and a newer one came.
    Evicted,
}

impl HandshakeEnd {
    /// Labels of the failed results, by index in `tls_handshakes_failed`.
    pub const FAILED: [&'static str; 4] = ["timeout", "closed", "failed", "evicted"];

    fn failed_index(self) -> Option<usize> {
        match self {
            HandshakeEnd::Ok { .. } => None,
            HandshakeEnd::Timeout => Some(0),
            HandshakeEnd::Closed => Some(1),
            HandshakeEnd::Failed => Some(2),
            HandshakeEnd::Evicted => Some(3),
        }
    }
}

impl WorkerCounters {
    /// The worker's event loop, once it runs.
    pub fn driver(&self) -> Option<Driver> {
        match self.driver.load(Relaxed) {
            1 => Some(Driver::IoUring),
            2 => Some(Driver::Epoll),
            _ => None,
        }
    }
}

/// Why another attempt was made (`ringway_upstream_retries_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be made (refused, unreachable, connect timeout): nothing was
    /// sent.
    Connect,
    /// The connection broke after the request went out (reset, closed, unreadable response).
    Reset,
    /// No response within the read deadline.
    Timeout,
    /// The upstream answered with a status the failover predicate retries.
    Status,
    /// A pooled connection the server had closed; the same server on a new connection.
    Stale,
}

impl RetryReason {
    pub const ALL: [RetryReason; 5] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status,
        RetryReason::Stale,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
            RetryReason::Stale => "stale_connection",
        }
    }
}

/// A published list of keyed series: (key, counters).
pub type SeriesList<T> = Vec<(Arc<str>, Arc<CachePadded<T>>)>;

/// What the admin thread can read of one worker.
#[derive(Default)]
pub struct WorkerShared {
    pub counters: CachePadded<WorkerCounters>,
    pub frontends: ArcSwap<SeriesList<FrontendCounters>>,
    pub throttle_rejections: ArcSwap<SeriesList<AtomicU64>>,
}

/// Every worker's counters; the admin endpoint sums them per scrape.
pub struct NodeStats {
    workers: Vec<Arc<WorkerShared>>,
}

impl NodeStats {
    pub fn new(workers: usize) -> NodeStats {
        NodeStats {
            workers: (0..workers).map(|_| Arc::default()).collect(),
        }
    }

    pub fn workers(&self) -> &[Arc<WorkerShared>] {
        &self.workers
    }

    pub(super) fn worker(&self, i: usize) -> Arc<WorkerShared> {
        self.workers[i].clone()
    }
}

/// Frontend ids are short strings chosen by operators, not by clients: a non-keyed hash is
/// enough for the per-request lookup.
type FastMap<V> = crate::fast_hash::FastMap<Arc<str>, V>;

/// One frontend's series as the worker holds it.
pub struct FrontendSeries {
    pub id: Arc<str>,
    counters: Arc<CachePadded<FrontendCounters>>,
    /// When the frontend was first seen missing from the route table.
    gone_since: Cell<Option<Instant>>,
}

/// A frontend id as a route table holds it, and its series.
type RecentFrontend = (Arc<str>, Rc<FrontendSeries>);

/// A keyed family: the worker-local map and the list published to the admin thread.
struct Family<V> {
    local: RefCell<FastMap<V>>,
    dirty: Cell<bool>,
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Family {
            local: RefCell::default(),
            dirty: Cell::new(false),
        }
    }
}

/// The worker side of the counters. Only the owning worker calls these.
pub struct WorkerStats {
    shared: Arc<WorkerShared>,
    frontends: Family<Rc<FrontendSeries>>,
    /// Series of recently seen frontends, by the address of the route table's id: a pointer
    /// comparison per request instead of a hash lookup. Each entry keeps its id alive, so the
    /// address cannot name another string while the entry holds it.
    recent: RefCell<[Option<RecentFrontend>; RECENT_FRONTENDS]>,
    throttle: Family<Arc<CachePadded<AtomicU64>>>,
    no_route: Rc<FrontendSeries>,
    last_prune: Cell<Instant>,
}

impl WorkerStats {
    pub fn new(shared: Arc<WorkerShared>) -> WorkerStats {
        let no_route = Rc::new(FrontendSeries {
            id: Arc::from(NO_ROUTE_FRONTEND),
            counters: Arc::default(),
            gone_since: Cell::new(None),
        });
        let stats = WorkerStats {
            shared,
            frontends: Family::default(),
            recent: RefCell::new(Default::default()),
            throttle: Family::default(),
            no_route: no_route.clone(),
            last_prune: Cell::new(Instant::now()),
        };
        stats
            .frontends
            .local
            .borrow_mut()
            .insert(no_route.id.clone(), no_route);
        stats.frontends.dirty.set(true);
        stats.publish();
        stats
    }

    pub fn set_driver(&self, d: Driver) {
        let v = match d {
            Driver::IoUring => 1,
            Driver::Epoll => 2,
        };
        self.shared.counters.driver.store(v, Relaxed);
    }

    pub fn connection_opened(&self) {
        bump(&self.shared.counters.connections_active, 1);
        bump(&self.shared.counters.connections_total, 1);
    }

    pub fn handshake(&self, end: HandshakeEnd, took: Option<Duration>) {
        let c = &self.shared.counters;
        match end {
            HandshakeEnd::Ok { tls13, resumed } => {
                bump(
                    &c.tls_handshakes_ok[usize::from(tls13) * 2 + usize::from(resumed)],
                    1,
                );
                let ns = took.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
                bump(
                    &c.tls_handshake_buckets[BUCKET_NS.partition_point(|b| *b < ns)],
                    1,
                );
                bump(&c.tls_handshake_sum_ns, ns);
            }
            failed => {
                if let Some(i) = failed.failed_index() {
                    bump(&c.tls_handshakes_failed[i], 1);
                }
            }
        }
    }

    pub fn connection_closed(&self) {
        let c = &self.shared.counters.connections_active;
        c.store(c.load(Relaxed).saturating_sub(1), Relaxed);
    }

    pub fn bytes(&self, received: u64, sent: u64) {
        bump(&self.shared.counters.received_bytes, received);
        bump(&self.shared.counters.sent_bytes, sent);
    }

    /// A request went to a server, on a pooled (`reused`) or a new connection.
    pub fn upstream_request(&self, reused: bool) {
        let c = &self.shared.counters;
        bump(
            if reused {
                &c.upstream_requests_reused
            } else {
                &c.upstream_requests_fresh
            },
            1,
        );
    }

    /// An attempt on a server failed with `err` (connect errors and timeouts are counted).
    pub fn upstream_failed(&self, err: &ProxyError) {
        let c = &self.shared.counters;
        match err {
            ProxyError::Connect(_) => bump(&c.upstream_connect_errors, 1),
            ProxyError::ConnectTimeout => {
                bump(&c.upstream_connect_errors, 1);
                bump(&c.upstream_timeouts, 1);
            }
            ProxyError::UpstreamTimeout => bump(&c.upstream_timeouts, 1),
            _ => {}
        }
    }

    pub fn upstream_retry(&self, reason: RetryReason) {
        bump(&self.shared.counters.upstream_retries[reason as usize], 1);
    }

    pub fn retry_budget_exhausted(&self) {
        bump(&self.shared.counters.retry_budget_exhausted, 1);
    }

    /// A throttling middleware refused a request (`ringway_throttle_rejections_total`).
    pub fn throttle_rejected(&self, middleware_id: &str) {
        let mut map = self.throttle.local.borrow_mut();
        if let Some(c) = map.get(middleware_id) {
            bump(c, 1);
            return;
        }
        if map.len() >= MAX_SERIES {
            return;
        }
        let c: Arc<CachePadded<AtomicU64>> = Arc::default();
        bump(&c, 1);
        map.insert(Arc::from(middleware_id), c);
        self.throttle.dirty.set(true);
    }

    /// The series of frontend `id` (as the route table holds it), created on first use.
    pub fn frontend(&self, id: &Arc<str>) -> Rc<FrontendSeries> {
        let at = (Arc::as_ptr(id) as *const u8 as usize >> 4) % RECENT_FRONTENDS;
        let mut recent = self.recent.borrow_mut();
        if let Some((seen, series)) = &recent[at] {
            if Arc::ptr_eq(seen, id) {
                return series.clone();
            }
        }
        let series = self.series_named(id);
        recent[at] = Some((id.clone(), series.clone()));
        series
    }

    fn series_named(&self, id: &Arc<str>) -> Rc<FrontendSeries> {
        let mut map = self.frontends.local.borrow_mut();
        if let Some(s) = map.get(&**id) {
            return s.clone();
        }
        let key: Arc<str> = if map.len() >= MAX_SERIES {
            Arc::from(OVERFLOW_FRONTEND)
        } else {
            // A copy, so that the series never pins a whole route table in memory.
            Arc::from(&**id)
        };
        let series = map
            .entry(key.clone())
            .or_insert_with(|| {
                Rc::new(FrontendSeries {
                    id: key,
                    counters: Arc::default(),
                    gone_since: Cell::new(None),
                })
            })
            .clone();
        self.frontends.dirty.set(true);
        series
    }

    /// The series of requests that matched no route.
    pub fn no_route(&self) -> Rc<FrontendSeries> {
        self.no_route.clone()
    }

    /// Count one answered request.
    pub fn request(&self, series: &FrontendSeries, status: u16, elapsed: Duration) {
        series.counters.record(status, elapsed);
    }

    /// From the worker's ticker: drop series of frontends that left the table long ago and
    /// publish the lists of keyed series when they changed.
    pub fn tick(&self, table: &RouteTable) {
        if self.last_prune.get().elapsed() >= PRUNE_EVERY {
            self.last_prune.set(Instant::now());
            self.prune(table, Instant::now());
        }
        self.publish();
    }

    fn prune(&self, table: &RouteTable, now: Instant) {
        let mut map = self.frontends.local.borrow_mut();
        if map.len() <= 1 {
            return;
        }
        let live: HashSet<&str> = table.frontends().iter().map(|f| &*f.id).collect();
        let before = map.len();
        map.retain(|id, s| {
            if id.as_ref() == NO_ROUTE_FRONTEND || live.contains(id.as_ref()) {
                s.gone_since.set(None);
                return true;
            }
            match s.gone_since.get() {
                None => {
                    s.gone_since.set(Some(now));
                    true
                }
                Some(t) => now.duration_since(t) < GONE_SERIES_TTL,
            }
        });
        if map.len() != before {
            self.frontends.dirty.set(true);
            // A dropped series must not be found again through its old id.
            *self.recent.borrow_mut() = Default::default();
        }
    }

    fn publish(&self) {
        if self.frontends.dirty.replace(false) {
            let list: SeriesList<FrontendCounters> = self
                .frontends
                .local
                .borrow()
                .values()
                .map(|s| (s.id.clone(), s.counters.clone()))
                .collect();
            self.shared.frontends.store(Arc::new(list));
        }
        if self.throttle.dirty.replace(false) {
            let list: SeriesList<AtomicU64> = self
                .throttle
                .local
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.shared.throttle_rejections.store(Arc::new(list));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_whose_bound_is_not_below() {
        let c = FrontendCounters::default();
        c.record(200, Duration::from_micros(500));
        c.record(204, Duration::from_micros(501));
        c.record(404, Duration::from_secs(11));
        c.record(101, Duration::ZERO);
        let b: Vec<u64> = c.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(b[0], 2, "0 and exactly 0.5 ms are <= 0.0005");
        assert_eq!(b[1], 1);
        assert_eq!(b[14], 1, "+Inf");
        let r: Vec<u64> = c.requests.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(r, [1, 2, 0, 1, 0]);
        assert_eq!(DURATION_BUCKETS.len(), BUCKET_NS.len());
        for (s, ns) in DURATION_BUCKETS.iter().zip(BUCKET_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn counter_blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<CachePadded<FrontendCounters>>(), 128);
        assert_eq!(std::mem::align_of::<CachePadded<WorkerCounters>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<AtomicU64>>(), 128);
    }

    #[test]
    fn new_series_are_published_and_gone_frontends_dropped_after_the_ttl() {
        let shared = Arc::new(WorkerShared::default());
        let stats = WorkerStats::new(shared.clone());
        let a = stats.frontend(&Arc::from("a"));
        stats.request(&a, 200, Duration::from_millis(1));
        assert_eq!(
            shared.frontends.load().len(),
            1,
            "published at the next tick"
        );
        stats.publish();
        assert_eq!(shared.frontends.load().len(), 2);
        let empty = RouteTable::empty();
        let t0 = Instant::now();
        stats.prune(&empty, t0);
        assert_eq!(stats.frontends.local.borrow().len(), 2, "kept for a while");
        stats.prune(&empty, t0 + GONE_SERIES_TTL);
        stats.publish();
        let ids: Vec<String> = shared
            .frontends
            .load()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(ids, [NO_ROUTE_FRONTEND]);
    }

    #[test]
    fn a_frontend_counts_in_one_series_whichever_table_names_it_and_comes_back_after_a_prune() {
        let shared = Arc::new(WorkerShared::default());
        let stats = WorkerStats::new(shared.clone());
        let first: Arc<str> = Arc::from("users");
        let again: Arc<str> = Arc::from("users");
        stats.request(&stats.frontend(&first), 200, Duration::from_millis(1));
        stats.request(&stats.frontend(&first), 200, Duration::from_millis(1));
        stats.request(&stats.frontend(&again), 503, Duration::from_millis(1));
        let counts = || -> Vec<(String, u64)> {
            stats.publish();
            let list = shared.frontends.load();
            let count = |(k, c): &(Arc<str>, Arc<CachePadded<FrontendCounters>>)| {
                (
                    k.to_string(),
                    c.requests.iter().map(|r| r.load(Relaxed)).sum(),
                )
            };
            list.iter().map(count).collect()
        };
        let before = counts();
        assert!(before.contains(&("users".into(), 3)), "{before:?}");
        assert_eq!(before.len(), 2, "users and the no-route series: {before:?}");
        let empty = RouteTable::empty();
        let t0 = Instant::now();
        stats.prune(&empty, t0);
        stats.prune(&empty, t0 + GONE_SERIES_TTL);
        // The frontend is back in a later table: its requests count in a published series.
        stats.request(&stats.frontend(&first), 200, Duration::from_millis(1));
        let after = counts();
        assert!(after.contains(&("users".into(), 1)), "{after:?}");
        assert_eq!(after.len(), 2, "{after:?}");
    }

    #[test]
    fn throttle_rejections_are_counted_per_middleware() {
        let shared = Arc::new(WorkerShared::default());
        let stats = WorkerStats::new(shared.clone());
        stats.throttle_rejected("rl1");
        stats.throttle_rejected("rl1");
        stats.publish();
        let list = shared.throttle_rejections.load();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].1.load(Relaxed), 2);
    }
}
