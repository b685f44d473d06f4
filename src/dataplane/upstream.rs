//! The worker's upstream side: keep-alive pools per server, and the choice of a server
//! (weighted round-robin or latency-aware power of two choices, see [`super::balance`]) among
//! those outlier ejection left in rotation. Core-local, no locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use monoio::net::{ReadReady, TcpStream};

use super::net_stream::NetStream;

use crate::config::Balancer;
use crate::fast_hash::FastMap;
use crate::resilience::balancer::Rng;
use crate::resilience::ejection::EjectionSettings;

pub use super::balance::InFlight;
use super::balance::Load;

/// Pool, health and balancing settings, from the profile.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub max_idle_per_server: usize,
    pub idle_timeout: Duration,
    pub ejection: EjectionSettings,
    pub balancer: Balancer,
}

/// An idle connection is reusable only while the server has sent nothing on it: not EOF (it
/// closed its side) and no bytes (an unsolicited response must never be taken for the answer to
/// the next request). On epoll: one non-blocking peek per reuse.
fn is_quiet(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into a valid one-byte buffer on a descriptor this stream owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// A waker that does nothing: the watch is only ever asked whether it completed.
fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every function of the table ignores the data pointer and does nothing.
    unsafe { Waker::from_raw(RAW) }
}

struct Idle {
    stream: NetStream,
    since: Instant,
    /// io_uring: a read-readiness poll armed when the connection entered the pool. Completed
    /// means the server sent bytes, closed or reset; still pending means quiet, learnt without
    /// a syscall. On reuse it goes along with the connection (see [`Upstreams::take`]).
    watch: Option<ReadReady>,
}

impl Idle {
    fn is_quiet(&mut self) -> bool {
        match &mut self.watch {
            Some(watch) => !fired(watch),
            None => is_quiet(self.stream.tcp()),
        }
    }
}

/// Whether a watch's poll completed (no syscall: the worker's ring already reported it).
fn fired(watch: &mut ReadReady) -> bool {
    let waker = noop_waker();
    Pin::new(watch)
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
}

pub struct Upstreams {
    pub(super) settings: UpstreamSettings,
    idle: RefCell<FastMap<SocketAddr, Vec<Idle>>>,
    /// The balancer's estimates, per server address.
    pub(super) load: RefCell<FastMap<SocketAddr, Load>>,
    pub(super) cursor: RefCell<FastMap<Box<str>, u64>>,
    pub(super) rng: Cell<Rng>,
    /// Zero of the worker's nanosecond clock for the estimates.
    pub(super) epoch: Instant,
    /// Idle connections are watched by an armed poll (io_uring) instead of a peek per reuse.
    watch_idle: bool,
}

impl Upstreams {
    pub fn new(settings: UpstreamSettings, seed: u64) -> Upstreams {
        Upstreams {
            settings,
            idle: RefCell::default(),
            load: RefCell::default(),
            cursor: RefCell::default(),
            rng: Cell::new(Rng::new(seed)),
            epoch: Instant::now(),
            watch_idle: false,
        }
    }

    /// Watch pooled connections with a poll each (on io_uring, where it costs no syscall).
    pub fn watching_idle(mut self, on: bool) -> Upstreams {
        self.watch_idle = on;
        self
    }

    /// A pooled connection to `addr` (a TLS one when `tls`), most recently used first;
    /// expired ones are closed. `now` is the worker's clock. With the connection comes its
    /// watch, still armed: the answer's first bytes complete it, so handing it back to
    /// [`Upstreams::put`] costs nothing, where dropping it now would cost a cancellation.
    pub fn take(
        &self,
        addr: SocketAddr,
        tls: bool,
        max_idle_age: Option<Duration>,
        now: Instant,
    ) -> Option<(NetStream, Option<ReadReady>)> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let ttl = max_idle_age.unwrap_or(self.settings.idle_timeout);
        while let Some(mut c) = list.pop() {
            if c.stream.is_tls() != tls {
                // The same address under another scheme: a stale choice either way.
                continue;
            }
            if now.saturating_duration_since(c.since) < ttl && c.is_quiet() {
                return Some((c.stream, c.watch));
            }
        }
        None
    }

    /// Keep a connection whose last exchange ended cleanly (`now`: the worker's clock), with
    /// the watch [`Upstreams::take`] gave out for it, if any.
    pub fn put(
        &self,
        addr: SocketAddr,
        stream: NetStream,
        last_watch: Option<ReadReady>,
        max_idle: Option<usize>,
        now: Instant,
    ) {
        // Normally completed by the answer; one still pending is cancelled.
        drop(last_watch);
        let cap = max_idle.unwrap_or(self.settings.max_idle_per_server);
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= cap {
            if cap == 0 {
                return;
            }
            list.remove(0);
        }
        // A watch that cannot be armed (a full ring, say) falls back to the peek.
        let watch = self
            .watch_idle
            .then(|| stream.tcp().watch_readable().ok())
            .flatten();
        list.push(Idle {
            stream,
            since: now,
            watch,
        });
    }

    /// Close idle connections past their timeout, and watched ones the server closed or sent
    /// something on (called from the worker's ticker).
    pub fn sweep(&self) {
        let ttl = self.settings.idle_timeout;
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain_mut(|c| c.since.elapsed() < ttl && !c.watch.as_mut().is_some_and(fired));
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Close this worker's idle connections to `addr` (a server just ejected: they are
    /// suspect too).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle.borrow_mut().remove(&addr);
    }
}
