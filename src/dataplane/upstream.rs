//! The worker's upstream side: keep-alive pools per server, and the choice of a server
//! (weighted round-robin or latency-aware power of two choices, see [`super::balance`]) among
//! those outlier ejection left in rotation. Core-local, no locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use monoio::net::{PendingRead, ReadReady, TcpStream};

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

/// At most this many pooled connections per worker hold a lent I/O buffer (2 MiB at the
/// default 16 KiB `buffer_bytes`, as many as the worker's free list keeps); the rest are
/// watched by a poll.
const MAX_LENT: usize = 128;

/// io_uring: what tells whether a pooled connection is still quiet, armed when it entered the
/// pool. Completed means the server sent bytes, closed or reset; still pending means quiet,
/// learnt without a syscall. On reuse it goes along with the connection into the exchange (see
/// [`Upstreams::take`]), where the answer completes it.
pub enum Watch {
    /// A receive armed into an I/O buffer lent by the last exchange (plain TCP): the answer
    /// to the next request lands in it, so reading that answer needs no submission and no
    /// poll of its own.
    Recv(PendingRead<Vec<u8>>),
    /// A readiness poll (TLS connections, whose bytes belong to the TLS layer; or when no
    /// buffer was lent).
    Poll(ReadReady),
}

impl Watch {
    /// Whether it completed (no syscall: the worker's ring already reported it). A completed
    /// receive's bytes are dropped with the connection.
    fn fired(&mut self) -> bool {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self {
            Watch::Recv(read) => Pin::new(read).poll(&mut cx).is_ready(),
            Watch::Poll(ready) => Pin::new(ready).poll(&mut cx).is_ready(),
        }
    }
}

struct Idle {
    stream: NetStream,
    since: Instant,
    watch: Option<Watch>,
}

impl Idle {
    fn is_quiet(&mut self) -> bool {
        match &mut self.watch {
            Some(watch) => !watch.fired(),
            None => is_quiet(self.stream.tcp()),
        }
    }

    fn holds_buffer(&self) -> bool {
        matches!(self.watch, Some(Watch::Recv(_)))
    }
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
    /// Idle connections are watched by an armed receive or poll (io_uring) instead of a peek
    /// per reuse.
    watch_idle: bool,
    /// The armed receives poll first (`IORING_RECVSEND_POLL_FIRST`, where the ring has it).
    poll_first: bool,
    /// Pooled connections holding a lent buffer (bounded by [`MAX_LENT`]).
    lent: Cell<usize>,
    /// A pooled connection taken for reuse takes a slot in the ring's registered-file table.
    register_files: bool,
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
            poll_first: false,
            lent: Cell::new(0),
            register_files: false,
        }
    }

    /// Watch pooled connections with an armed receive or poll each (on io_uring, where it
    /// costs no syscall); the receives poll first when `poll_first`.
    pub fn watching_idle(mut self, on: bool, poll_first: bool) -> Upstreams {
        self.watch_idle = on;
        self.poll_first = poll_first;
        self
    }

    /// Pooled connections taken for reuse take a registered-file slot (io_uring, where the
    /// worker registered a table): one syscall per connection, then no descriptor lookup per
    /// operation.
    pub fn registering_files(mut self, on: bool) -> Upstreams {
        self.register_files = on;
        self
    }

    /// Account for a pooled connection leaving the pool.
    fn release(&self, c: &Idle) {
        if c.holds_buffer() {
            self.lent.set(self.lent.get() - 1);
        }
    }

    /// A pooled connection to `addr` (a TLS one when `tls`), most recently used first;
    /// expired ones are closed. `now` is the worker's clock. With the connection comes its
    /// watch, still armed: the answer's first bytes complete it (a [`Watch::Recv`] is the
    /// answer's first read), where dropping it now would cost a cancellation.
    pub fn take(
        &self,
        addr: SocketAddr,
        tls: bool,
        max_idle_age: Option<Duration>,
        now: Instant,
    ) -> Option<(NetStream, Option<Watch>)> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let ttl = max_idle_age.unwrap_or(self.settings.idle_timeout);
        while let Some(mut c) = list.pop() {
            self.release(&c);
            if c.stream.is_tls() != tls {
                // The same address under another scheme: a stale choice either way.
                continue;
            }
            if now.saturating_duration_since(c.since) < ttl && c.is_quiet() {
                if self.register_files {
                    // Reused: a pooled connection usually carries many more exchanges, so it
                    // takes a registered-file slot (see `conn::REGISTER_AFTER_RESPONSES`).
                    c.stream.tcp().register_fixed();
                }
                return Some((c.stream, c.watch));
            }
        }
        None
    }

    /// Keep a connection whose last exchange ended cleanly (`now`: the worker's clock), with
    /// the watch [`Upstreams::take`] gave out for it, if any. `buf`, an empty I/O buffer, is
    /// lent to the connection for its next answer when it can take one (io_uring, plain TCP,
    /// fewer than [`MAX_LENT`] lent); otherwise it is handed back.
    pub fn put(
        &self,
        addr: SocketAddr,
        stream: NetStream,
        last_watch: Option<Watch>,
        buf: Option<Vec<u8>>,
        max_idle: Option<usize>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        // Normally completed by the answer; one still pending is cancelled.
        drop(last_watch);
        let cap = max_idle.unwrap_or(self.settings.max_idle_per_server);
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= cap {
            if cap == 0 {
                return buf;
            }
            self.release(&list.remove(0));
        }
        let (watch, spare) = self.arm(&stream, buf);
        list.push(Idle {
            stream,
            since: now,
            watch,
        });
        spare
    }

    /// The watch for a connection entering the pool, and `buf` unless it was lent. One that
    /// cannot be armed (a full ring, say) falls back to the peek.
    fn arm(&self, stream: &NetStream, buf: Option<Vec<u8>>) -> (Option<Watch>, Option<Vec<u8>>) {
        if !self.watch_idle {
            return (None, buf);
        }
        match (stream, buf) {
            (NetStream::Plain(tcp), Some(mut buf)) if self.lent.get() < MAX_LENT => {
                buf.clear();
                let read = tcp.read_owned(buf, self.poll_first).ok();
                if read.is_some() {
                    self.lent.set(self.lent.get() + 1);
                }
                (read.map(Watch::Recv), None)
            }
            (_, buf) => (stream.tcp().watch_readable().ok().map(Watch::Poll), buf),
        }
    }

    /// Close idle connections past their timeout, and watched ones the server closed or sent
    /// something on (called from the worker's ticker).
    pub fn sweep(&self) {
        let ttl = self.settings.idle_timeout;
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain_mut(|c| {
                let keep = c.since.elapsed() < ttl && !c.watch.as_mut().is_some_and(Watch::fired);
                if !keep {
                    self.release(c);
                }
                keep
            });
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Close this worker's idle connections to `addr` (a server just ejected, or one that
    /// let a request or a connection attempt time out: they are suspect too).
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(list) = self.idle.borrow_mut().remove(&addr) {
            list.iter().for_each(|c| self.release(c));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn upstreams(watch: bool) -> Upstreams {
        crate::dataplane::balance::tests::ups(Balancer::RoundRobin).watching_idle(watch, false)
    }

    /// A loopback connection: ringway's end and the server's.
    async fn pair(listener: &std::net::TcpListener) -> (NetStream, std::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let ours = TcpStream::connect_addr(addr).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (NetStream::Plain(ours), theirs)
    }

    /// Run `test` on an io_uring runtime with timers.
    pub(crate) fn io_uring(test: impl std::future::Future<Output = ()>) {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("an io_uring runtime")
            .block_on(test);
    }

    #[test]
    fn pooled_connections_keep_a_receive_armed_in_the_buffer_they_were_lent() {
        io_uring(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let ups = upstreams(true);
            let now = Instant::now();
            let mut servers = Vec::new();
            for _ in 0..3 {
                let (ours, theirs) = pair(&listener).await;
                let lent = ups.put(addr, ours, None, Some(Vec::with_capacity(64)), None, now);
                assert!(lent.is_none(), "the buffer goes with the connection");
                servers.push(theirs);
            }
            assert_eq!(ups.lent.get(), 3);

            // The server closes the oldest connection and sends unsolicited bytes on the next:
            // the sweep drops both, without a syscall, and their buffers with them.
            drop(servers.remove(0));
            servers[0].write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
            monoio::time::sleep(Duration::from_millis(50)).await;
            ups.sweep();
            assert_eq!(ups.lent.get(), 1);

            // The quiet one is reused; the answer to its next request lands in its buffer.
            let (up, watch) = ups.take(addr, false, None, Instant::now()).expect("pooled");
            assert_eq!(ups.lent.get(), 0);
            assert!(ups.take(addr, false, None, Instant::now()).is_none());
            let Some(Watch::Recv(read)) = watch else {
                panic!("no armed receive on a pooled plain connection")
            };
            servers[1]
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap();
            let (res, buf) = read.await;
            assert_eq!(res.unwrap(), 27);
            assert_eq!(buf, b"HTTP/1.1 204 No Content\r\n\r\n");
            assert_eq!(buf.capacity(), 64);

            // Back in the pool with that buffer; a connection without one gets a poll.
            assert!(ups.put(addr, up, None, Some(buf), None, now).is_none());
            let (other, _server) = pair(&listener).await;
            assert!(ups.put(addr, other, None, None, None, now).is_none());
            assert_eq!(ups.lent.get(), 1);
            ups.forget(addr);
            assert_eq!(ups.lent.get(), 0);
        });
    }

    #[test]
    fn at_most_max_lent_pooled_connections_hold_a_buffer() {
        io_uring(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let ups = upstreams(true);
            let mut servers = Vec::new();
            for i in 0..=MAX_LENT {
                let (ours, theirs) = pair(&listener).await;
                servers.push(theirs);
                let back = ups.put(
                    addr,
                    ours,
                    None,
                    Some(Vec::with_capacity(64)),
                    Some(1000),
                    Instant::now(),
                );
                assert_eq!(back.is_some(), i == MAX_LENT, "connection {i}");
            }
            assert_eq!(ups.lent.get(), MAX_LENT);
            // The one beyond the cap is watched by a poll, and taken first (most recent).
            let (_, watch) = ups.take(addr, false, None, Instant::now()).unwrap();
            assert!(matches!(watch, Some(Watch::Poll(_))));
            assert_eq!(ups.lent.get(), MAX_LENT);
        });
    }

    #[test]
    fn without_watches_the_buffer_is_handed_back() {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("an epoll runtime")
            .block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let ups = upstreams(false);
                let (ours, _theirs) = pair(&listener).await;
                let back = ups.put(
                    addr,
                    ours,
                    None,
                    Some(Vec::with_capacity(64)),
                    None,
                    Instant::now(),
                );
                assert_eq!(back.map(|b| b.capacity()), Some(64));
                let (_, watch) = ups.take(addr, false, None, Instant::now()).unwrap();
                assert!(watch.is_none());
            });
    }
}
