//! Worker threads: one monoio runtime per thread, pinned one per core, each with its own
//! SO_REUSEPORT listener socket per listener and everything a request touches.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use super::access_log::AccessLog;
use super::breakers::WorkerBreakers;
use super::buffers::{BufPool, ScratchPool};
use super::conn::serve;
use super::idle_timers::{IdleTimers, Within};
use super::listener::ListenerCtx;
use super::pipes::PipePool;
use super::reclaim::Reclaim;
use super::shutdown::Shutdown;
use super::stats::{NodeStats, WorkerShared, WorkerStats};
use super::upstream::{UpstreamSettings, Upstreams};
use crate::config::{
    AccessLogTarget, IoDriver, ListenerConfig, Profile, TimeoutsConfig, UpstreamConfig, Workers,
};
use crate::control::{TableCache, TableHandle};
use crate::http::HeadLimits;
use crate::resilience::{LocalRetryBudget, Registry, RetryBudget};
use crate::route::RouteTable;
use crate::throttle::{SharedBudgets, Throttle, ThrottleSettings};

/// Everything the data plane needs from a profile.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    pub workers: usize,
    pub pin: bool,
    pub io_driver: IoDriver,
    pub ring_entries: u32,
    pub ring_fast_flags: bool,
    pub ring_registered_files: u32,
    pub listeners: Vec<ListenerConfig>,
    /// Role, expose rules and head limits of each listener, in `listeners` order.
    pub listener_ctx: Vec<ListenerCtx>,
    pub head_limits: HeadLimits,
    pub upstream_head_limits: HeadLimits,
    pub max_body_bytes: u64,
    pub buffer_bytes: usize,
    pub body_buffer_bytes: usize,
    pub idle_buffer_bytes: usize,
    pub splice_min_bytes: u64,
    pub timeouts: TimeoutsConfig,
    pub upstream: UpstreamConfig,
    pub shutdown_grace: Duration,
    pub throttle: ThrottleSettings,
    /// Node-wide throttle budgets, shared by every worker (batched access, see `throttle`).
    pub throttle_budgets: Arc<SharedBudgets>,
    /// The node-wide retry budget.
    pub retry_budget: Arc<RetryBudget>,
    /// The node's resilience state (breaker transitions and their webhooks).
    pub resilience: Arc<Registry>,
    pub access_log: AccessLogTarget,
    /// The client side of connections to `https://` servers.
    pub upstream_tls: Arc<rustls::ClientConfig>,
}

impl DataPlaneConfig {
    /// `tls`: the listeners' terminators and the upstream client, loaded beforehand.
    pub fn from_profile(
        p: &Profile,
        resilience: Arc<Registry>,
        tls: &crate::tls::NodeTls,
    ) -> DataPlaneConfig {
        let workers = match p.node.workers {
            Workers::Count(n) => n,
            Workers::Auto => core_affinity::get_core_ids().map_or(1, |c| c.len().max(1)),
        };
        let throttle = ThrottleSettings {
            reject_status: p.throttle.reject_status,
            idle_key_ns: p.throttle.idle_key_secs.saturating_mul(1_000_000_000),
            max_keys: p.throttle.max_keys,
            workers,
        };
        DataPlaneConfig {
            upstream_tls: tls.upstream.clone(),
            throttle_budgets: Throttle::shared_budgets(&throttle),
            retry_budget: Arc::new(RetryBudget::new(
                p.upstream.retry_budget_ratio,
                p.upstream.retry_budget_min_per_sec,
            )),
            resilience,
            throttle,
            workers,
            pin: p.node.pin_workers,
            io_driver: p.node.io_driver,
            ring_entries: p.node.ring_entries,
            ring_fast_flags: p.node.ring_fast_flags,
            ring_registered_files: p.node.ring_registered_files,
            listeners: p.listeners.clone(),
            listener_ctx: p
                .listeners
                .iter()
                .enumerate()
                .map(|(i, l)| ListenerCtx::new(l, p, tls.listeners.get(i).cloned().flatten()))
                .collect(),
            head_limits: p.head_limits(),
            upstream_head_limits: HeadLimits {
                max_head_bytes: p.limits.max_head_bytes.max(64 * 1024),
                max_target_bytes: p.limits.max_target_bytes,
                max_headers: p.limits.max_headers.max(200),
            },
            max_body_bytes: p.limits.max_body_bytes,
            buffer_bytes: p.limits.buffer_bytes,
            body_buffer_bytes: p.limits.body_buffer_bytes,
            idle_buffer_bytes: p.limits.idle_buffer_bytes,
            splice_min_bytes: p.limits.splice_min_bytes,
            timeouts: p.timeouts.clone(),
            upstream: p.upstream.clone(),
            shutdown_grace: Duration::from_secs(p.node.shutdown_grace_secs),
            access_log: p.log.access_log.clone(),
        }
    }
}

/// The event loop a worker ended up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// State owned by one worker thread. Shared by its tasks through `Rc`, never across threads.
pub struct Worker {
    pub id: usize,
    pub cfg: Arc<DataPlaneConfig>,
    /// The route source's current table, reloaded only when a new one was published.
    routes: RefCell<TableCache>,
    /// The worker's own reference to the current table: requests clone the `Rc` (no atomic
    /// traffic between cores), the `Arc` is replaced only when a new table was published.
    #[allow(clippy::redundant_allocation)]
    table: RefCell<Rc<Arc<RouteTable>>>,
    /// Buffers for heads and small bodies.
    pub bufs: BufPool,
    /// Larger buffers for streaming the rest of a body.
    pub body_bufs: BufPool,
    /// Pipes large bodies are spliced through.
    pub pipes: PipePool,
    pub scratch: ScratchPool,
    pub upstreams: Upstreams,
    /// Counters for `/metrics`, written only by this worker.
    pub stats: WorkerStats,
    pub access_log: AccessLog,
    pub shutdown: Shutdown,
    /// Deadlines of connections (idle, head, upstream I/O) fired by the ticker, and the
    /// worker's cached clock.
    pub idle_timers: IdleTimers,
    /// Fired when the worker stops accepting (a handover, or before `shutdown`).
    pub drain: Shutdown,
    pub throttle: RefCell<Throttle>,
    /// This worker's side of the node-wide retry budget.
    pub retry_budget: LocalRetryBudget,
    /// This worker's side of the circuit breakers.
    pub breakers: WorkerBreakers,
    /// Client connections currently open.
    pub active: Cell<usize>,
    /// TLS handshakes in progress, on every listener.
    pub handshakes: super::tls_accept::Handshakes,
    /// When to give memory freed by connections gone cold back to the OS.
    pub reclaim: Reclaim,
    /// The first read of an upstream's answer polls first (io_uring on Linux 5.19 or newer):
    /// the answer is never there yet when the read is issued right after the request.
    pub recv_poll_first: bool,
    /// Gathered writes go to the socket's `sendmsg` directly (a vectorized io_uring `SEND`,
    /// Linux 6.17 or newer) instead of through the file write path of a `WRITEV`.
    pub send_vectorized: bool,
    /// Buffers the kernel receives keep-alive clients' requests into, for connections that
    /// wait for their next request on a multishot receive (io_uring, Linux 6.0 or newer).
    pub recv_ring: Option<Rc<monoio::net::BufRing>>,
    /// The worker's io_uring has a table of registered files: long-lived connections take a
    /// slot in it (`TcpStream::register_fixed`).
    pub registered_files: bool,
    id_seed: u64,
    id_counter: Cell<u64>,
}

impl Worker {
    /// The current route table. Reloaded only when the control plane published a new one;
    /// the request keeps the table it started with.
    #[allow(clippy::redundant_allocation)]
    pub fn table(&self) -> Rc<Arc<RouteTable>> {
        let mut routes = self.routes.borrow_mut();
        let current = routes.load();
        let mut cached = self.table.borrow_mut();
        if !Arc::ptr_eq(current, &cached) {
            *cached = Rc::new(current.clone());
        }
        cached.clone()
    }

    /// Whether connections should close after their current request: the worker is draining
    /// (its listeners went to a newer process) or shutting down.
    pub fn closing(&self) -> bool {
        self.drain.fired() || self.shutdown.fired()
    }

    /// Run an I/O future with a deadline `limit` from the worker's clock; `None` when it
    /// passed (the I/O was cancelled).
    pub fn timed<F: std::future::Future>(&self, limit: Duration, f: F) -> Within<'_, F> {
        self.idle_timers.timed(limit, f)
    }

    /// Return a buffer to the pool it came from.
    pub fn give_buf(&self, buf: Vec<u8>) {
        if self.body_bufs.owns(buf.capacity()) {
            self.body_bufs.give(buf);
        } else {
            self.bufs.give(buf);
        }
    }

    /// A new request id, unique on this node.
    pub fn next_request_id(&self) -> [u8; 32] {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        super::exchange::request_id(self.id_seed, n)
    }
}

/// A listening socket as a handover passes it on: listener name, address, descriptor.
pub struct ListeningSocket {
    pub name: String,
    pub addr: SocketAddr,
    pub socket: std::net::TcpListener,
}

/// Name a handover gives the admin endpoint's socket (listener names are never empty).
pub const ADMIN_SOCKET: &str = "";

/// Listening sockets received from an older process at a handover.
#[derive(Default)]
pub struct Inherited {
    pub sockets: Vec<ListeningSocket>,
}

impl Inherited {
    /// The admin endpoint's socket, if it was handed over for `addr`.
    pub fn take_admin(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let i = self
            .sockets
            .iter()
            .position(|s| s.name == ADMIN_SOCKET && s.addr == addr)?;
        Some(self.sockets.remove(i).socket)
    }

    /// The received sockets of the listener at `addr`.
    fn take(&mut self, addr: SocketAddr) -> Vec<std::net::TcpListener> {
        let (mine, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|s| s.addr == addr && s.name != ADMIN_SOCKET);
        self.sockets = rest;
        mine.into_iter().map(|s| s.socket).collect()
    }
}

/// The running data plane.
pub struct WorkerSet {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    drivers: Vec<Driver>,
    /// Duplicates of every listening socket, for a handover; emptied when the workers stop,
    /// so a stopped node's ports refuse connections instead of queueing them.
    sockets: Arc<Mutex<Vec<ListeningSocket>>>,
    stats: Arc<NodeStats>,
}

impl WorkerSet {
    /// Event loop of each worker.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// Every worker's counters, for the admin endpoint.
    pub fn stats(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }

    /// Stop accepting, let in-flight requests finish (up to the grace period), close idle
    /// connections.
    pub fn stop(&self) {
        self.drain.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut s) = self.sockets.lock() {
            s.clear();
        }
    }

    /// Stop accepting but keep serving open connections, each until its next response (sent
    /// with `Connection: close`); idle ones stay open until [`WorkerSet::stop`]. For a
    /// handover: the sockets stay open in the newer process.
    pub fn drain(&self) {
        self.drain.store(true, Ordering::SeqCst);
    }

    /// The listening sockets, shared with the handover server.
    pub fn sockets(&self) -> Arc<Mutex<Vec<ListeningSocket>>> {
        self.sockets.clone()
    }

    /// Wait for every worker to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn bind_listener(l: &ListenerConfig) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if l.addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&l.addr.into())?;
    set_defer_accept(&s, l.defer_accept)?;
    s.listen(l.backlog)?;
    Ok(s.into())
}

/// Turn `TCP_DEFER_ACCEPT` on (1 s: a silent client is handed over after the handshake's first
/// retransmission, as nginx and HAProxy do) or off.
fn set_defer_accept(s: &impl std::os::fd::AsRawFd, on: bool) -> std::io::Result<()> {
    let secs = libc::c_int::from(on);
    // SAFETY: a valid socket descriptor, and an option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn random_seed(worker: usize) -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the valid buffer.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    let base = if n == 8 {
        u64::from_ne_bytes(seed)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id()) << 32
    };
    base ^ (worker as u64).rotate_left(56)
}

/// The sockets each worker accepts on: every listener's inherited sockets spread over the
/// workers (socket j to worker j mod n, so none is left unserved), plus fresh SO_REUSEPORT
/// binds until every worker has one per listener.
fn listening_sockets(
    cfg: &DataPlaneConfig,
    mut inherited: Inherited,
    all: &mut Vec<ListeningSocket>,
) -> anyhow::Result<Vec<Sockets>> {
    let mut per_worker: Vec<Sockets> = (0..cfg.workers).map(|_| Vec::new()).collect();
    for (li, l) in cfg.listeners.iter().enumerate() {
        let mut own = inherited.take(l.addr);
        let received = own.len();
        for s in &own {
            use std::os::fd::AsRawFd;
            // This profile's accept deferral and backlog (listen(2) again) apply to the
            // inherited socket too.
            if let Err(e) = set_defer_accept(s, l.defer_accept) {
                tracing::warn!(listener = %l.name, addr = %l.addr, "cannot set TCP_DEFER_ACCEPT on an inherited socket: {e}");
            }
            // SAFETY: a valid socket descriptor owned by `s`.
            unsafe { libc::listen(s.as_raw_fd(), l.backlog) };
        }
        while own.len() < cfg.workers {
            own.push(bind_listener(l).map_err(|e| {
                anyhow::anyhow!("listener {:?}: cannot bind {}: {e}", l.name, l.addr)
            })?);
        }
        if received > 0 {
            tracing::info!(listener = %l.name, addr = %l.addr, received, total = own.len(), "listening on inherited sockets");
        }
        for (j, s) in own.into_iter().enumerate() {
            all.push(ListeningSocket {
                name: l.name.clone(),
                addr: l.addr,
                socket: s.try_clone()?,
            });
            per_worker[j % cfg.workers].push((s, li));
        }
    }
    for s in inherited.sockets {
        tracing::warn!(listener = %s.name, addr = %s.addr, "inherited socket not in this profile: closed (its queued connections are reset)");
    }
    Ok(per_worker)
}

/// Start the workers on their listeners: sockets `inherited` from an older process, fresh
/// SO_REUSEPORT binds for the rest. Returns when all are serving.
pub fn start(
    cfg: Arc<DataPlaneConfig>,
    routes: TableHandle,
    inherited: Inherited,
) -> anyhow::Result<WorkerSet> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let drain = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(NodeStats::new(cfg.workers));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Driver, String>>();
    let mut threads = Vec::new();
    let mut all = Vec::new();
    let per_worker = listening_sockets(&cfg, inherited, &mut all)?;
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let core = (cfg.pin && !cores.is_empty()).then(|| cores[i % cores.len()]);
        let (cfg, routes, ready) = (cfg.clone(), routes.clone(), ready_tx.clone());
        let flags = (stop.clone(), drain.clone());
        let shared = stats.worker(i);
        let t = std::thread::Builder::new()
            .name(format!("ringway-w{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = i, "could not pin to core {}", core.id);
                    }
                }
                run_worker(i, cfg, routes, sockets, flags, ready, shared);
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut drivers = Vec::new();
    for _ in 0..cfg.workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                anyhow::bail!("worker failed to start: {e}");
            }
            Err(_) => anyhow::bail!("a worker exited during start-up"),
        }
    }
    Ok(WorkerSet {
        threads,
        stop,
        drain,
        drivers,
        sockets: Arc::new(Mutex::new(all)),
        stats,
    })
}

/// The event loop a worker runs on, and what its kernel offers.
#[derive(Clone, Copy)]
struct RingInfo {
    driver: Driver,
    /// Receives may set `IORING_RECVSEND_POLL_FIRST` (Linux 5.19).
    recv_poll_first: bool,
    /// Gathered writes may be vectorized sends (`IORING_SEND_VECTORIZED`, Linux 6.17).
    send_vectorized: bool,
    /// Keep-alive clients' requests may come through multishot receives into a provided-buffer
    /// ring (Linux 6.0).
    multishot_recv: bool,
}

/// Register a table of `want` file slots (at most the process's open-file limit) with this
/// worker's io_uring; the number of slots, 0 when the kernel refused (before Linux 5.19).
fn register_file_table(id: usize, want: u32) -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(u32::MAX as libc::rlim_t) as u32
    } else {
        1024
    };
    let slots = want.min(nofile);
    match monoio::utils::register_fixed_files(slots) {
        Ok(()) => slots,
        Err(e) => {
            tracing::warn!(
                worker = id,
                "no registered files, each operation looks its socket up: {e}"
            );
            0
        }
    }
}

/// io_uring setup flags a worker asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RingFlags {
    /// COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN: completions are processed only in the
    /// worker's own `io_uring_enter`, without interrupting it.
    Deferred,
    /// COOP_TASKRUN + SINGLE_ISSUER.
    Cooperative,
    Default,
}

/// A worker's sockets, each with the index of its listener.
type Sockets = Vec<(std::net::TcpListener, usize)>;

/// The `stop` and `drain` flags of a [`WorkerSet`].
type Flags = (Arc<AtomicBool>, Arc<AtomicBool>);

fn run_worker(
    id: usize,
    cfg: Arc<DataPlaneConfig>,
    routes: TableHandle,
    sockets: Sockets,
    flags: Flags,
    ready: mpsc::Sender<Result<Driver, String>>,
    shared: Arc<WorkerShared>,
) {
    macro_rules! run_on {
        ($rt:expr, $driver:expr, $poll_first:expr) => {{
            let mut rt = $rt;
            let driver = RingInfo {
                driver: $driver,
                recv_poll_first: $poll_first,
                // Probed once per process, with the other newer-kernel features.
                send_vectorized: $driver == Driver::IoUring
                    && cfg.ring_fast_flags
                    && monoio::utils::detect_vectorized_send(),
                multishot_recv: $driver == Driver::IoUring
                    && cfg.ring_fast_flags
                    && monoio::utils::detect_multishot_recv(),
            };
            rt.block_on(worker_main(
                id, cfg, routes, sockets, flags, ready, driver, shared,
            ));
        }};
    }
    let want_uring = cfg.io_driver != IoDriver::Epoll && monoio::utils::detect_uring();
    if cfg.io_driver == IoDriver::IoUring && !want_uring {
        let _ = ready.send(Err(
            "io_driver = \"io_uring\" but io_uring is unavailable here".into(),
        ));
        return;
    }
    if want_uring {
        // Setup flags, fastest first; each step needs an older kernel than the one before
        // (DEFER_TASKRUN 6.1, SINGLE_ISSUER 6.0, COOP_TASKRUN 5.19).
        let build = |flags: RingFlags| {
            let mut urb = io_uring::IoUring::builder();
            if flags != RingFlags::Default {
                urb.setup_coop_taskrun().setup_single_issuer();
            }
            if flags == RingFlags::Deferred {
                urb.setup_defer_taskrun();
            }
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(cfg.ring_entries)
                .uring_builder(urb)
                .enable_timer()
                .build()
        };
        // A ring with COOP_TASKRUN means Linux 5.19 or newer: receives may poll first.
        let rt = if cfg.ring_fast_flags {
            build(RingFlags::Deferred)
                .or_else(|e| {
                    tracing::info!(
                        worker = id,
                        "io_uring DEFER_TASKRUN refused ({e}); trying without it"
                    );
                    build(RingFlags::Cooperative)
                })
                .map(|rt| (rt, true))
                .or_else(|e| {
                    tracing::info!(
                        worker = id,
                        "io_uring fast setup flags refused ({e}); using defaults"
                    );
                    build(RingFlags::Default).map(|rt| (rt, false))
                })
        } else {
            build(RingFlags::Default).map(|rt| (rt, false))
        };
        match rt {
            Ok((rt, poll_first)) => return run_on!(rt, Driver::IoUring, poll_first),
            Err(e) if cfg.io_driver == IoDriver::IoUring => {
                let _ = ready.send(Err(format!("cannot set up io_uring: {e}")));
                return;
            }
            Err(e) => tracing::warn!(
                worker = id,
                "cannot set up io_uring ({e}); falling back to epoll"
            ),
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(rt) => run_on!(rt, Driver::Epoll, false),
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build the epoll runtime: {e}")));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker_main(
    id: usize,
    cfg: Arc<DataPlaneConfig>,
    routes: TableHandle,
    sockets: Sockets,
    (stop, drain): Flags,
    ready: mpsc::Sender<Result<Driver, String>>,
    RingInfo {
        driver,
        recv_poll_first,
        send_vectorized,
        multishot_recv,
    }: RingInfo,
    shared: Arc<WorkerShared>,
) {
    let access_log = match AccessLog::open(&cfg.access_log) {
        Ok(log) => log,
        Err(e) => {
            let _ = ready.send(Err(format!("access log {}: {e}", cfg.access_log)));
            return;
        }
    };
    let stats = WorkerStats::new(shared);
    stats.set_driver(driver);
    let table = Rc::new(routes.load());
    let recv_ring = if multishot_recv {
        match monoio::net::BufRing::new(RECV_RING_BUFFERS, RECV_RING_BUFFER_BYTES) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    worker = id,
                    "no receive buffer ring, one receive per request: {e}"
                );
                None
            }
        }
    } else {
        None
    };
    let registered_files = if driver == Driver::IoUring && cfg.ring_registered_files > 0 {
        register_file_table(id, cfg.ring_registered_files)
    } else {
        0
    };
    let w = Rc::new(Worker {
        id,
        // Pools keep what steady load reuses; a burst beyond it allocates and frees, so a
        // spike does not leave megabytes parked per worker.
        bufs: BufPool::new(cfg.buffer_bytes, 128),
        body_bufs: BufPool::new(cfg.body_buffer_bytes, 16),
        pipes: PipePool::new(cfg.splice_min_bytes),
        scratch: ScratchPool::default(),
        upstreams: Upstreams::new(
            UpstreamSettings {
                max_idle_per_server: cfg.upstream.max_idle_per_server,
                idle_timeout: Duration::from_millis(cfg.upstream.idle_timeout_ms),
                ejection: cfg.upstream.ejection(),
                balancer: cfg.upstream.balancer,
            },
            random_seed(id).rotate_left(17),
        )
        .watching_idle(driver == Driver::IoUring, recv_poll_first)
        .registering_files(registered_files > 0),
        throttle: RefCell::new(Throttle::new(cfg.throttle_budgets.clone(), &cfg.throttle)),
        retry_budget: LocalRetryBudget::new(cfg.retry_budget.clone()),
        breakers: WorkerBreakers::default(),
        stats,
        access_log,
        cfg,
        routes: RefCell::new(routes.cache()),
        table: RefCell::new(table),
        shutdown: Shutdown::default(),
        idle_timers: IdleTimers::default(),
        drain: Shutdown::default(),
        active: Cell::new(0),
        handshakes: Default::default(),
        reclaim: Reclaim::default(),
        recv_poll_first,
        send_vectorized,
        recv_ring,
        registered_files: registered_files > 0,
        id_seed: random_seed(id),
        id_counter: Cell::new(0),
    });
    let contexts: Vec<Rc<ListenerCtx>> = w
        .cfg
        .listener_ctx
        .iter()
        .map(|c| Rc::new(c.clone()))
        .collect();
    let mut listeners = Vec::new();
    for (s, li) in sockets {
        match TcpListener::from_std(s) {
            Ok(l) => listeners.push((l, contexts[li].clone())),
            Err(e) => {
                let _ = ready.send(Err(format!("listener {}: {e}", contexts[li].addr)));
                return;
            }
        }
    }
    // Several accepts in flight per listener, so a burst of new connections is taken in one
    // pass through the ring instead of one accept per loop iteration.
    let mut accepting = Vec::new();
    for (l, ctx) in listeners {
        let l = Rc::new(l);
        for _ in 0..ACCEPTS_IN_FLIGHT {
            accepting.push(monoio::spawn(accept_loop(
                w.clone(),
                l.clone(),
                ctx.clone(),
            )));
        }
    }
    tracing::info!(
        worker = id,
        driver = %driver,
        poll_first = recv_poll_first,
        vectorized_send = send_vectorized,
        multishot_recv = w.recv_ring.is_some(),
        registered_files,
        "worker serving"
    );
    let _ = ready.send(Ok(driver));
    drop(ready);

    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
        w.idle_timers.fire(Instant::now());
        if drain.load(Ordering::Relaxed) && !w.drain.fired() {
            tracing::info!(worker = id, "draining: no longer accepting");
            w.drain.fire();
        }
        w.throttle.borrow_mut().sweep();
        w.retry_budget.flush(w.idle_timers.now());
        w.breakers.tick(w.idle_timers.now(), &w.cfg.resilience);
        w.stats.tick(&w.table());
        w.access_log.flush();
        if w.reclaim.tick() {
            super::reclaim::release_free_memory();
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            w.upstreams.sweep();
            w.upstreams.sweep_load(Instant::now());
            last_sweep = Instant::now();
        }
    }
    w.drain.fire();
    w.shutdown.fire();
    for a in accepting {
        a.await;
    }
    let deadline = Instant::now() + w.cfg.shutdown_grace;
    while w.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
        // Header deadlines of connections still reading a head keep running while draining.
        w.idle_timers.fire(Instant::now());
    }
    if w.active.get() > 0 {
        tracing::warn!(
            worker = id,
            open = w.active.get(),
            "grace period over; closing connections"
        );
    }
    w.access_log.flush();
}

/// The receive buffer ring of a worker: 64 buffers of 2 KiB (128 KiB, touched as used). A
/// keep-alive client's request lands in one and is copied into the connection's own buffer
/// at once, so a buffer is out of the ring only between a completion and the task that takes
/// it; a connection that finds the ring empty reads into its own buffer instead. The ring's
/// size also bounds what a receive can take of a body before it is ended.
const RECV_RING_BUFFERS: u16 = 64;
const RECV_RING_BUFFER_BYTES: u32 = 2048;

/// Accept operations kept pending per listener and worker.
const ACCEPTS_IN_FLIGHT: usize = 4;

/// Accepted sockets inherit TCP_NODELAY from the listener, so no per-connection setsockopt.
async fn accept_loop(w: Rc<Worker>, listener: Rc<TcpListener>, ctx: Rc<ListenerCtx>) {
    loop {
        let canceller = monoio::io::Canceller::new();
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let accepted = monoio::select! {
            r = &mut accept => r,
            _ = w.drain.wait() => {
                // An accept that completed before the cancel took effect still yields its
                // connection: serve it rather than leak it.
                canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    monoio::spawn(serve(w.clone(), stream, peer, ctx.clone()));
                }
                break;
            },
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(serve(w.clone(), stream, peer, ctx.clone()));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(worker = w.id, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defer_accept_of(s: &impl std::os::fd::AsRawFd) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket descriptor, and an option buffer of the size passed.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn listeners_defer_accepts_as_their_profile_says() {
        let profile = crate::config::Profile::parse(
            "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"b\"\naddr = \"127.0.0.2:0\"\ndefer_accept = false\n\n\
             [routes]\nsource = \"file\"\nfile = \"r.json\"\n",
            std::path::Path::new("p.toml"),
        )
        .unwrap();
        let deferred = bind_listener(&profile.listeners[0]).unwrap();
        let at_once = bind_listener(&profile.listeners[1]).unwrap();
        assert_eq!(defer_accept_of(&deferred), 1);
        assert_eq!(defer_accept_of(&at_once), 0);
        // An inherited socket takes the newer profile's setting.
        set_defer_accept(&deferred, false).unwrap();
        assert_eq!(defer_accept_of(&deferred), 0);
    }
}
