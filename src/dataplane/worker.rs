//! Worker threads: one monoio runtime per thread, pinned one per core, each with its own
//! SO_REUSEPORT listener socket per listener and everything a request touches.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use super::access_log::AccessLog;
use super::buffers::{BufPool, ScratchPool};
use super::conn::serve;
use super::shutdown::Shutdown;
use super::stats::{NodeStats, WorkerShared, WorkerStats};
use super::upstream::{UpstreamSettings, Upstreams};
use crate::config::{
    AccessLogTarget, IoDriver, ListenerConfig, ListenerRole, Profile, TimeoutsConfig,
    UpstreamConfig, Workers,
};
use crate::control::TableHandle;
use crate::http::HeadLimits;
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
    pub listeners: Vec<ListenerConfig>,
    pub head_limits: HeadLimits,
    pub upstream_head_limits: HeadLimits,
    pub max_body_bytes: u64,
    pub buffer_bytes: usize,
    pub body_buffer_bytes: usize,
    pub idle_buffer_bytes: usize,
    pub timeouts: TimeoutsConfig,
    pub upstream: UpstreamConfig,
    pub shutdown_grace: Duration,
    pub throttle: ThrottleSettings,
    /// Node-wide throttle budgets, shared by every worker (batched access, see `throttle`).
    pub throttle_budgets: Arc<SharedBudgets>,
    pub access_log: AccessLogTarget,
}

impl DataPlaneConfig {
    pub fn from_profile(p: &Profile) -> DataPlaneConfig {
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
            throttle_budgets: Throttle::shared_budgets(&throttle),
            throttle,
            workers,
            pin: p.node.pin_workers,
            io_driver: p.node.io_driver,
            ring_entries: p.node.ring_entries,
            ring_fast_flags: p.node.ring_fast_flags,
            listeners: p.listeners.clone(),
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
    routes: TableHandle,
    /// The worker's own reference to the current table: requests clone the `Rc` (no atomic
    /// traffic between cores), the `Arc` is replaced only when a new table was published.
    #[allow(clippy::redundant_allocation)]
    table: RefCell<Rc<Arc<RouteTable>>>,
    /// Buffers for heads and small bodies.
    pub bufs: BufPool,
    /// Larger buffers for streaming the rest of a body.
    pub body_bufs: BufPool,
    pub scratch: ScratchPool,
    pub upstreams: Upstreams,
    /// Counters for `/metrics`, written only by this worker.
    pub stats: WorkerStats,
    pub access_log: AccessLog,
    pub shutdown: Shutdown,
    pub throttle: RefCell<Throttle>,
    /// Client connections currently open.
    pub active: Cell<usize>,
    id_seed: u64,
    id_counter: Cell<u64>,
}

impl Worker {
    /// The current route table. Reloaded only when the control plane published a new one;
    /// the request keeps the table it started with.
    #[allow(clippy::redundant_allocation)]
    pub fn table(&self) -> Rc<Arc<RouteTable>> {
        let current = self.routes.cell().load();
        let mut cached = self.table.borrow_mut();
        if !Arc::ptr_eq(&current, &cached) {
            *cached = Rc::new(arc_swap::Guard::into_inner(current));
        }
        cached.clone()
    }

    /// Return a buffer to the pool it came from.
    pub fn give_buf(&self, buf: Vec<u8>) {
        if self.body_bufs.owns(buf.capacity()) {
            self.body_bufs.give(buf);
        } else {
            self.bufs.give(buf);
        }
    }

    pub fn write_request_id(&self, out: &mut Vec<u8>) {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        super::exchange::write_request_id(out, self.id_seed, n);
    }
}

/// The running data plane.
pub struct WorkerSet {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    drivers: Vec<Driver>,
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
        self.stop.store(true, Ordering::SeqCst);
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
    s.listen(l.backlog)?;
    Ok(s.into())
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

/// Bind every listener once per worker and start the workers. Returns when all are serving.
pub fn start(cfg: Arc<DataPlaneConfig>, routes: TableHandle) -> anyhow::Result<WorkerSet> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(NodeStats::new(cfg.workers));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Driver, String>>();
    let mut threads = Vec::new();
    for i in 0..cfg.workers {
        let mut sockets = Vec::new();
        for l in &cfg.listeners {
            let s = bind_listener(l).map_err(|e| {
                anyhow::anyhow!("listener {:?}: cannot bind {}: {e}", l.name, l.addr)
            })?;
            sockets.push((s, l.role, l.addr));
        }
        let core = (cfg.pin && !cores.is_empty()).then(|| cores[i % cores.len()]);
        let (cfg, routes, stop, ready) =
            (cfg.clone(), routes.clone(), stop.clone(), ready_tx.clone());
        let shared = stats.worker(i);
        let t = std::thread::Builder::new()
            .name(format!("ringway-w{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = i, "could not pin to core {}", core.id);
                    }
                }
                run_worker(i, cfg, routes, sockets, stop, ready, shared);
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
        drivers,
        stats,
    })
}

type Sockets = Vec<(std::net::TcpListener, ListenerRole, SocketAddr)>;

fn run_worker(
    id: usize,
    cfg: Arc<DataPlaneConfig>,
    routes: TableHandle,
    sockets: Sockets,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<Driver, String>>,
    shared: Arc<WorkerShared>,
) {
    macro_rules! run_on {
        ($rt:expr, $driver:expr) => {{
            let mut rt = $rt;
            rt.block_on(worker_main(
                id, cfg, routes, sockets, stop, ready, $driver, shared,
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
        let build = |fast: bool| {
            let mut urb = io_uring::IoUring::builder();
            if fast {
                urb.setup_coop_taskrun().setup_single_issuer();
            }
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(cfg.ring_entries)
                .uring_builder(urb)
                .enable_timer()
                .build()
        };
        let rt = if cfg.ring_fast_flags {
            build(true).or_else(|e| {
                tracing::info!(
                    worker = id,
                    "io_uring fast setup flags refused ({e}); using defaults"
                );
                build(false)
            })
        } else {
            build(false)
        };
        match rt {
            Ok(rt) => return run_on!(rt, Driver::IoUring),
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
        Ok(rt) => run_on!(rt, Driver::Epoll),
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
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<Driver, String>>,
    driver: Driver,
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
    let w = Rc::new(Worker {
        id,
        bufs: BufPool::new(cfg.buffer_bytes, 1024),
        body_bufs: BufPool::new(cfg.body_buffer_bytes, 256),
        scratch: ScratchPool::default(),
        upstreams: Upstreams::new(UpstreamSettings {
            max_idle_per_server: cfg.upstream.max_idle_per_server,
            idle_timeout: Duration::from_millis(cfg.upstream.idle_timeout_ms),
            max_fails: cfg.upstream.max_fails,
            fail_timeout: Duration::from_millis(cfg.upstream.fail_timeout_ms),
        }),
        throttle: RefCell::new(Throttle::new(cfg.throttle_budgets.clone(), &cfg.throttle)),
        stats,
        access_log,
        cfg,
        routes,
        table: RefCell::new(table),
        shutdown: Shutdown::default(),
        active: Cell::new(0),
        id_seed: random_seed(id),
        id_counter: Cell::new(0),
    });
    let mut listeners = Vec::new();
    for (s, role, addr) in sockets {
        match TcpListener::from_std(s) {
            Ok(l) => listeners.push((l, role, addr)),
            Err(e) => {
                let _ = ready.send(Err(format!("listener {addr}: {e}")));
                return;
            }
        }
    }
    // Several accepts in flight per listener, so a burst of new connections is taken in one
    // pass through the ring instead of one accept per loop iteration.
    let mut accepting = Vec::new();
    for (l, role, _) in listeners {
        let l = Rc::new(l);
        for _ in 0..ACCEPTS_IN_FLIGHT {
            accepting.push(monoio::spawn(accept_loop(w.clone(), l.clone(), role)));
        }
    }
    tracing::info!(worker = id, driver = %driver, "worker serving");
    let _ = ready.send(Ok(driver));
    drop(ready);

    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
        w.throttle.borrow_mut().sweep();
        w.stats.tick(&w.table());
        w.access_log.flush();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            w.upstreams.sweep();
            last_sweep = Instant::now();
        }
    }
    w.shutdown.fire();
    for a in accepting {
        a.await;
    }
    let deadline = Instant::now() + w.cfg.shutdown_grace;
    while w.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
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

/// Accept operations kept pending per listener and worker.
const ACCEPTS_IN_FLIGHT: usize = 4;

/// Accepted sockets inherit TCP_NODELAY from the listener, so no per-connection setsockopt.
async fn accept_loop(w: Rc<Worker>, listener: Rc<TcpListener>, role: ListenerRole) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = w.shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = role;
                monoio::spawn(serve(w.clone(), stream, peer));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(worker = w.id, "accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
