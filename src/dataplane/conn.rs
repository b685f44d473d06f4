//! One client connection: read request heads (keep-alive, pipelining), route them, hand each
//! to [`super::exchange`], and answer what never reaches an upstream (4xx, 404, 503).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelableAsyncReadRent};
use monoio::net::{MultiRecv, ReadReady, RecvChunk, TcpStream};

use super::buffers::Scratch;
use super::error::{FallbackAnswer, ProxyError};
use super::exchange::{self, BodyState};
use super::idle_timers::IdleTimer;
use super::listener::ListenerCtx;
use super::net_stream::NetStream;
use super::record::RequestRecord;
use super::respond::{error_response, error_response_with, fallback_response};
use super::shutdown::Wait;
use super::view::RequestView;
use super::worker::Worker;
use crate::edge::Decision;
use crate::http::upgrade::{self, UpgradePolicy};
use crate::http::{
    parse_request, BodyFraming, ChunkedDecoder, HeaderField, HttpError, Parsed, RequestHead,
};

/// State of one client connection while it is active (from the first byte of a request until
/// it closes or stays quiet past `idle_hot_ms`). Buffers are reused across its requests.
pub struct Conn {
    pub stream: NetStream,
    pub peer: SocketAddr,
    /// The peer address as text, formatted once per connection (no heap).
    pub peer_ip: PeerText,
    /// Bytes read from the client; the current request always starts at offset 0.
    pub rbuf: Vec<u8>,
    /// Lines the proxy adds to a forwarded head.
    pub extra: Vec<u8>,
    pub iov: Vec<libc::iovec>,
    pub fields: Vec<HeaderField>,
    pub resp_fields: Vec<HeaderField>,
    /// An error response was sent and the connection will close with the client's request
    /// perhaps unread: drain before closing so the client sees the response, not a reset.
    pub linger: bool,
    /// The `connlimit` slots of a request that became a tunnel, released when it ends.
    pub tunnel_admission: Option<crate::throttle::Admission>,
    /// The X-Request-Id ringway generated for the request in flight, reused by every attempt.
    pub request_id: Option<[u8; 32]>,
    /// `100 Continue` was sent for the request in flight (a retry does not send another).
    pub continue_sent: bool,
    /// The attempt in flight got its answer before the upstream took the whole body (it
    /// stopped reading it): the answer says nothing about the server's health.
    pub early_answer: bool,
    /// The listener the connection came in on.
    pub listener: Rc<ListenerCtx>,
    /// The peer's forwarding fields are kept (mesh, or a trusted proxy in front of an edge).
    pub trusted_hop: bool,
    /// The path after an edge rewrite, for routing (reused across requests).
    pub rewritten: Vec<u8>,
    /// The target (path and query) a `rewrite` middleware gave the request in flight; empty
    /// when none did.
    pub target: Vec<u8>,
    /// The protocols the request in flight offers upstream in `Upgrade` (those the listener
    /// allows, comma separated); empty when it asks for no switch or none is allowed.
    pub upgrade_offer: Vec<u8>,
    /// Counters and access-log facts of the request in flight.
    pub rec: RequestRecord,
    /// Cancels the hot idle read; one per spell, so a busy connection's requests allocate
    /// none (a canceller's registration set keeps its capacity).
    canceller: monoio::io::Canceller,
    /// A multishot receive armed on a keep-alive client (plain TCP on io_uring): the next
    /// requests arrive through it, with no submission per request. While it is armed, bytes
    /// are read from it only; it is ended before anything else reads the socket (a body, a
    /// tunnel) and before the connection goes cold.
    multi: Option<MultiRecv>,
    /// A response on this connection kept it open: the client is a keep-alive one.
    kept_alive: bool,
    /// Responses that kept the connection open, up to [`REGISTER_AFTER_RESPONSES`].
    kept_responses: u8,
    /// A request's body or tunnel outran its head: the client sends more than heads, and its
    /// requests are read directly from then on (a multishot receive keeps receiving a body
    /// into the ring until it is ended, and those bytes are copied out).
    sends_bodies: bool,
}

/// A keep-alive client connection takes a slot in the worker's registered-file table once
/// this many responses kept it open (and keeps it for its life, cold waits included): each
/// receive and send on it then skips the kernel's descriptor lookup and file reference count,
/// about 50 ns each. Installing the socket is one `io_uring_register` call and emptying its slot
/// one more submission, about 1 µs together, which a connection earns back in about six
/// requests; shorter-lived connections never pay it.
const REGISTER_AFTER_RESPONSES: u8 = 8;

/// An IP address as text in a fixed inline buffer (the longest IPv6 text is 45 bytes).
pub struct PeerText {
    buf: [u8; 46],
    len: u8,
}

impl PeerText {
    /// Made once per spell (per connection where each carries one request): IPv4 digits are
    /// written directly, as `core::fmt` spends about a thousand instructions on them.
    pub fn new(ip: std::net::IpAddr) -> PeerText {
        let mut buf = [0u8; 46];
        let len = match ip {
            std::net::IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        buf[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        buf[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    buf[len] = b'0' + octet % 10;
                    len += 1;
                }
                len
            }
            std::net::IpAddr::V6(_) => {
                use std::io::Write as _;
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                let _ = write!(cursor, "{ip}");
                cursor.position() as usize
            }
        };
        PeerText {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// What happens after a request was answered.
pub enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: relay bytes both ways until either side closes.
    Tunnel(NetStream),
}

/// How a spell of activity on a connection ended.
enum SpellEnd {
    /// No request arrived within `idle_hot_ms`: wait for one without holding any buffer, up
    /// to the keep-alive deadline.
    Cold(Instant),
    Close,
    /// An error response was sent and the client's request may be unread: drain, then close.
    Linger,
    /// The upstream switched protocols: relay bytes both ways, holding the request's
    /// `connlimit` slots until the tunnel ends.
    Tunnel(NetStream, Option<crate::throttle::Admission>),
}

/// Buffers of the worker's receive ring left to connections already armed: a connection arms
/// a multishot receive only while more than these are free.
const MULTISHOT_RESERVE: u32 = 16;

/// Stands in for a peer address the socket cannot give (never expected after accept).
const UNKNOWN_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// One client connection, from accept to close. The future is an `async move` block whose
/// captures are the only copy of the connection's lasting state (an `async fn` would keep its
/// arguments twice in every connection's task).
pub fn serve(
    w: Rc<Worker>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    listener: Rc<ListenerCtx>,
) -> impl std::future::Future<Output = ()> {
    let trusted_hop = listener.trusts(peer.ip());
    tcp.set_send_vectorized(w.send_vectorized);
    let mut resumed = false;
    // The only copy of the connection's socket in the task (a second one, even moved out,
    // would keep its room in every connection's task).
    let mut stream = NetStream::Plain(tcp);
    async move {
        w.active.set(w.active.get() + 1);
        w.stats.connection_opened();
        'connection: {
            if listener.tls.is_some() {
                // The handshake's state is boxed: it is gone once the connection is established.
                match Box::pin(establish(&w, &listener, stream)).await {
                    Some(s) => stream = s,
                    None => break 'connection,
                }
            }
            loop {
                // While requests come, the connection's buffers, record and request state live
                // in one allocation per spell of activity (not per request); a cold
                // connection's task keeps only the socket, its identity and the small
                // readiness wait below.
                w.reclaim.spell_started();
                // The peer address is the one accept reported, kept in the socket's own meta
                // (no copy in the task, no syscall).
                let peer = stream.tcp().peer_addr().unwrap_or(UNKNOWN_PEER);
                let conn = Conn::new(&w, stream, peer, listener.clone(), trusted_hop);
                let active = boxed(|| spell(conn, &w, resumed));
                // The spell's outcome is dropped within this block, so it takes no room in
                // the task while the connection waits cold.
                let deadline = {
                    let (back, end) = active.await;
                    w.reclaim.spell_ended();
                    stream = back;
                    match end {
                        SpellEnd::Cold(deadline) => deadline,
                        SpellEnd::Close => break,
                        // Rare endings are boxed so their state does not enlarge every task.
                        rare => {
                            Box::pin(rare_ending(&w, stream, rare)).await;
                            break;
                        }
                    }
                };
                stream.release_idle();
                // A TLS connection may hold a decrypted request already: no wait then.
                if !stream.has_buffered() && !cold_wait(&w, stream.tcp(), deadline).await {
                    break;
                }
                resumed = true;
            }
        }
        w.active.set(w.active.get() - 1);
        w.stats.connection_closed();
    }
}

/// Run the TLS handshake of a TLS listener's new connection.
async fn establish(w: &Worker, listener: &ListenerCtx, stream: NetStream) -> Option<NetStream> {
    match (&listener.tls, stream) {
        (Some(t), NetStream::Plain(tcp)) => super::tls_accept::accept(w, tcp, t)
            .await
            .map(|s| NetStream::Tls(Box::new(s))),
        (_, stream) => Some(stream),
    }
}

/// A future pinned in its own allocation, built there: `Box::pin(f)` builds `f` on the stack
/// and then copies it (several KiB for an exchange) into the heap.
#[inline(always)]
fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: the value was written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// Serve requests until the connection closes or goes cold; gives the socket back.
/// `resumed`: the client was seen sending after a cold wait.
async fn spell(mut conn: Conn, w: &Worker, resumed: bool) -> (NetStream, SpellEnd) {
    let mut end = conn.run(w, resumed).await;
    conn.return_scratch(w);
    conn.end_spell(w);
    w.bufs.give(std::mem::take(&mut conn.rbuf));
    if matches!(end, SpellEnd::Close) && conn.linger {
        end = SpellEnd::Linger;
    }
    (conn.stream, end)
}

/// Drain before closing, or relay a tunnel.
async fn rare_ending(w: &Worker, stream: NetStream, end: SpellEnd) {
    match end {
        SpellEnd::Linger => lingering_close(stream, w.bufs.take()).await,
        SpellEnd::Tunnel(up, admission) => {
            super::tunnel::relay(stream, up, w.cfg.timeouts.tunnel_idle()).await;
            drop(admission);
        }
        SpellEnd::Cold(_) | SpellEnd::Close => {}
    }
}

/// Wait, holding no buffer, until the client sends again (true), or until the keep-alive
/// deadline or shutdown (false).
fn cold_wait<'a>(w: &'a Worker, stream: &TcpStream, deadline: Instant) -> ColdWait<'a> {
    ColdWait {
        ready: stream.watch_readable().ok(),
        timer: w.idle_timers.until(deadline),
        shutdown: w.shutdown.wait(),
    }
}

/// A cold connection's wait: the client sends (`true`), or the keep-alive deadline passes,
/// the worker shuts down or no readiness poll could be armed (`false`). Every idle
/// connection's task holds one, so it is a plain struct of the three waits (96 bytes)
/// rather than a `select!` over a borrowing `readable()` (216).
struct ColdWait<'a> {
    ready: Option<ReadReady>,
    timer: IdleTimer<'a>,
    shutdown: Wait<'a>,
}

impl Future for ColdWait<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let me = &mut *self;
        // A byte that arrived wins over a deadline that passed in the same turn.
        match me.ready.as_mut().map(|r| Pin::new(r).poll(cx)) {
            None => return Poll::Ready(false),
            Some(Poll::Ready(r)) => return Poll::Ready(r.is_ok()),
            Some(Poll::Pending) => {}
        }
        if Pin::new(&mut me.timer).poll(cx).is_ready()
            || Pin::new(&mut me.shutdown).poll(cx).is_ready()
        {
            return Poll::Ready(false);
        }
        Poll::Pending
    }
}

/// Half-close, then read and discard what the client still sends (up to a second), as nginx's
/// `lingering_close`: closing with unread bytes would send a reset that can destroy the error
/// response before the client reads it.
async fn lingering_close(mut stream: NetStream, mut buf: Vec<u8>) {
    use monoio::io::AsyncWriteRent;
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    loop {
        buf.clear();
        let cap = buf.capacity();
        match monoio::time::timeout_at(deadline.into(), stream.read(buf.slice_mut(0..cap))).await {
            Ok((Ok(n), back)) if n > 0 => buf = back.into_inner(),
            _ => return,
        }
    }
}

enum HeadRead {
    Head(RequestHead),
    /// The client closed or idled out between requests: close quietly.
    Idle,
    /// Nothing arrived within `idle_hot_ms`: go on waiting cold until the given deadline.
    Cold(Instant),
}

/// How the wait for the first byte of a request ended.
enum Awaited {
    Bytes,
    /// The client closed, the keep-alive timeout passed or the worker shuts down.
    Close,
    /// Nothing arrived within `idle_hot_ms`; the keep-alive timeout falls at the deadline.
    Cold(Instant),
}

impl Conn {
    fn new(
        w: &Worker,
        stream: NetStream,
        peer: SocketAddr,
        listener: Rc<ListenerCtx>,
        trusted_hop: bool,
    ) -> Conn {
        Conn {
            stream,
            peer,
            peer_ip: PeerText::new(peer.ip()),
            rbuf: Vec::with_capacity(w.cfg.idle_buffer_bytes),
            extra: Vec::new(),
            iov: Vec::new(),
            fields: Vec::new(),
            resp_fields: Vec::new(),
            linger: false,
            tunnel_admission: None,
            request_id: None,
            continue_sent: false,
            early_answer: false,
            trusted_hop,
            listener,
            rewritten: Vec::new(),
            target: Vec::new(),
            upgrade_offer: Vec::new(),
            rec: RequestRecord::default(),
            canceller: monoio::io::Canceller::new(),
            multi: None,
            kept_alive: false,
            kept_responses: 0,
            sends_bodies: false,
        }
    }

    /// Serve requests until the connection closes or goes cold. `resumed`: bytes are known to
    /// be waiting, so the first head is read under the header timeout at once.
    async fn run(&mut self, w: &Worker, mut resumed: bool) -> SpellEnd {
        loop {
            let head = match self.read_head(w, resumed).await {
                Ok(HeadRead::Head(h)) => h,
                Ok(HeadRead::Idle) => return SpellEnd::Close,
                Ok(HeadRead::Cold(deadline)) => return SpellEnd::Cold(deadline),
                Err(e) => {
                    self.begin_request(w, None);
                    Box::pin(self.answer_error(w, &e, false, false)).await;
                    self.end_request(w, false, true);
                    return SpellEnd::Close;
                }
            };
            resumed = false;
            if self.multi.is_some() && self.reads_past_head(&head) {
                self.sends_bodies = true;
                self.end_multishot().await;
            }
            self.begin_request(w, Some(&head));
            // The exchange's state lives in its own allocation for the length of the request
            // (recycled by the allocator's thread-local free list), so an idle connection's
            // task stays small instead of reserving room for the largest exchange state.
            self.request_id = None;
            self.continue_sent = false;
            let next = boxed(|| self.handle(w, head)).await;
            self.end_request(w, true, !matches!(next, Next::KeepAlive));
            self.return_scratch(w);
            match next {
                // A response that promised keep-alive is honoured while draining: the next
                // request is still served (with `Connection: close`); only shutdown cuts it.
                Next::KeepAlive if !w.shutdown.fired() => {
                    if self.kept_responses < REGISTER_AFTER_RESPONSES {
                        self.kept_responses += 1;
                        if self.kept_responses == REGISTER_AFTER_RESPONSES && w.registered_files {
                            self.stream.tcp().register_fixed();
                        }
                    }
                    self.kept_alive = true;
                    self.release_idle_buffer(w)
                }
                Next::KeepAlive | Next::Close => return SpellEnd::Close,
                Next::Tunnel(up) => return SpellEnd::Tunnel(up, self.tunnel_admission.take()),
            }
        }
    }

    /// Take the worker's pooled per-request vectors (fields, proxy lines, iovecs) for a request.
    fn borrow_scratch(&mut self, w: &Worker) {
        if self.fields.capacity() == 0 {
            let s = w.scratch.take();
            self.fields = s.fields;
            self.resp_fields = s.resp_fields;
            self.extra = s.extra;
            self.iov = s.iov;
        }
    }

    /// Give the per-request vectors back, so an idle connection holds none of them.
    fn return_scratch(&mut self, w: &Worker) {
        if self.fields.capacity() != 0 {
            w.scratch.give(Scratch {
                fields: std::mem::take(&mut self.fields),
                resp_fields: std::mem::take(&mut self.resp_fields),
                extra: std::mem::take(&mut self.extra),
                iov: std::mem::take(&mut self.iov),
            });
        }
    }

    /// Wait for the next request. For `idle_hot_ms` a read with the small idle buffer is
    /// pending (the fast path for busy keep-alive clients); after that the read is cancelled
    /// (safely: bytes it got are kept) and the connection goes cold: its caller drops the
    /// spell's state and waits for readability alone until the keep-alive timeout.
    async fn idle_wait(&mut self, w: &Worker) -> Awaited {
        let keepalive = w.cfg.timeouts.keepalive();
        let deadline = w.idle_timers.now() + keepalive;
        let hot = w.cfg.timeouts.idle_hot().min(keepalive);
        if self.rbuf.capacity() == 0 {
            self.rbuf = Vec::with_capacity(w.cfg.idle_buffer_bytes);
        }
        if self.multi.is_none() && self.kept_alive && !self.sends_bodies {
            self.arm_multishot(w);
        }
        if let Some(m) = self.multi.as_mut() {
            let got = monoio::select! {
                r = m.recv() => Some(r),
                _ = w.idle_timers.until(deadline - keepalive + hot) => None,
                _ = w.shutdown.wait() => return Awaited::Close,
            };
            match got {
                Some(Ok(Some(chunk))) => {
                    self.take_chunk(&chunk);
                    return Awaited::Bytes;
                }
                Some(Ok(None)) => return Awaited::Close,
                // The ring had no buffer left: this wait reads into the connection's buffer.
                Some(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => self.multi = None,
                Some(Err(_)) => return Awaited::Close,
                None => {
                    // Going cold: end the receive, keeping what it got before that took effect.
                    let got = self.rbuf.len();
                    let eof = self.end_multishot().await;
                    if self.rbuf.len() > got {
                        return Awaited::Bytes;
                    }
                    if eof || hot >= keepalive {
                        return Awaited::Close;
                    }
                    return Awaited::Cold(deadline);
                }
            }
        }
        // The next request is rarely there yet when this read is issued, so the read polls
        // before trying the socket instead of failing with EAGAIN first (where the kernel has
        // it). The exception is a new connection's first request on a listener that defers
        // accepts: the accept completed because its first bytes arrived.
        let waiting = self.kept_alive || !self.listener.defer_accept;
        self.stream
            .set_recv_poll_first(w.recv_poll_first && waiting && self.stream.plain().is_some());
        let buf = std::mem::take(&mut self.rbuf);
        let cap = buf.capacity();
        let (cancelled, (res, back)) = {
            let read = self
                .stream
                .cancelable_read(buf.slice_mut(0..cap), self.canceller.handle());
            let mut read = std::pin::pin!(read);
            let first = monoio::select! {
                r = &mut read => Some(r),
                _ = w.idle_timers.until(deadline - keepalive + hot) => None,
                _ = w.shutdown.wait() => return Awaited::Close,
            };
            match first {
                Some(r) => (false, r),
                None => {
                    self.canceller = std::mem::take(&mut self.canceller).cancel();
                    (true, read.await)
                }
            }
        };
        self.rbuf = back.into_inner();
        self.stream.set_recv_poll_first(false);
        match res {
            Ok(0) => return Awaited::Close,
            Ok(n) => {
                self.rec.rx += n as u64;
                return Awaited::Bytes;
            }
            Err(_) if !cancelled => return Awaited::Close,
            Err(_) => {}
        }
        if hot >= keepalive {
            return Awaited::Close;
        }
        Awaited::Cold(deadline)
    }

    /// Arm a multishot receive for the next requests, where the worker has a buffer ring with
    /// room and the connection is plain TCP.
    fn arm_multishot(&mut self, w: &Worker) {
        if let (Some(ring), Some(tcp)) = (&w.recv_ring, self.stream.plain()) {
            // Leave the last buffers to connections whose receive is armed already.
            if ring.available() >= MULTISHOT_RESERVE {
                self.multi = tcp.recv_multishot(ring).ok();
            }
        }
    }

    /// Bytes a multishot receive delivered join the request buffer (and the buffer goes back
    /// to the ring).
    fn take_chunk(&mut self, chunk: &RecvChunk) {
        self.rbuf.extend_from_slice(chunk);
        self.rec.rx += chunk.len() as u64;
        // The kernel may end a receive with bytes (its completion queue was full): the next
        // wait arms a new one.
        if self.multi.as_ref().is_some_and(MultiRecv::is_ended) {
            self.multi = None;
        }
    }

    /// End the multishot receive, if one is armed, and wait until it has: what it received
    /// before the cancellation took effect is appended to `rbuf`, in order, so the socket can
    /// be read directly afterwards. True when the client's end of stream came through it.
    async fn end_multishot(&mut self) -> bool {
        let Some(mut m) = self.multi.take() else {
            return false;
        };
        m.cancel();
        loop {
            match m.recv().await {
                Ok(Some(chunk)) => self.take_chunk(&chunk),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Whether the request in `rbuf` has bytes still to come that its exchange reads from
    /// the socket itself: a body not wholly received yet, or a protocol switch.
    fn reads_past_head(&self, head: &RequestHead) -> bool {
        head.upgrade
            || match head.framing {
                BodyFraming::Empty => false,
                BodyFraming::Length(n) => ((self.rbuf.len() - head.head_len) as u64) < n,
                _ => true,
            }
    }

    /// Between requests, keep only a small buffer (or none bigger than needed for pipelined
    /// bytes already received).
    fn release_idle_buffer(&mut self, w: &Worker) {
        let small = w.cfg.idle_buffer_bytes;
        if self.rbuf.capacity() > small && self.rbuf.len() <= small {
            let mut fresh = Vec::with_capacity(small);
            fresh.extend_from_slice(&self.rbuf);
            let big = std::mem::replace(&mut self.rbuf, fresh);
            w.bufs.give(big);
        }
    }

    async fn read_head(&mut self, w: &Worker, resumed: bool) -> Result<HeadRead, ProxyError> {
        let limits = self.listener.head_limits;
        let header_timeout = self.listener.header_timeout;
        let mut scanned = 0;
        // The request's clock starts with its first byte (pipelined: with the previous one's
        // end; after a cold wait: with the readiness that ended it); its deadlines and its
        // duration are measured from there.
        let mut deadline =
            (resumed || !self.rbuf.is_empty()).then(|| w.idle_timers.refresh() + header_timeout);
        loop {
            if self.rbuf.is_empty() && deadline.is_none() {
                match self.idle_wait(w).await {
                    Awaited::Bytes => {}
                    Awaited::Close => return Ok(HeadRead::Idle),
                    Awaited::Cold(deadline) => return Ok(HeadRead::Cold(deadline)),
                }
                // From the first byte on, the whole head must arrive within `header_ms`.
                deadline = Some(w.idle_timers.refresh() + header_timeout);
            }
            if !self.rbuf.is_empty() {
                self.borrow_scratch(w);
                match parse_request(&self.rbuf, scanned, &limits, &mut self.fields)? {
                    Parsed::Complete(h) => return Ok(HeadRead::Head(h)),
                    Parsed::Partial { scanned: s } => scanned = s,
                }
            }
            if self.rbuf.len() == self.rbuf.capacity() {
                let want = (self.rbuf.capacity() * 2)
                    .max(1024)
                    .min(limits.max_head_bytes + 1);
                if want <= self.rbuf.len() {
                    return Err(
                        crate::http::HttpError::HeadTooLarge("header section too large").into(),
                    );
                }
                self.rbuf.reserve_exact(want - self.rbuf.len());
            }
            let until = deadline.unwrap_or_else(|| w.idle_timers.now() + header_timeout);
            if let Some(m) = self.multi.as_mut() {
                let got = monoio::select! {
                    r = m.recv() => r,
                    _ = w.idle_timers.until(until) => return Err(ProxyError::ClientTimeout),
                };
                match got {
                    Ok(Some(chunk)) => self.take_chunk(&chunk),
                    // The ring had no buffer left: read into the request buffer instead.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.multi = None,
                    Ok(None) | Err(_) => return Err(ProxyError::ClientGone),
                }
                continue;
            }
            let buf = std::mem::take(&mut self.rbuf);
            let len = buf.len();
            let cap = buf.capacity();
            let read = self.stream.read(buf.slice_mut(len..cap));
            // The header deadline rides on the ticker's coarse timers: a monoio timer here
            // would make every connection's task hundreds of bytes larger.
            let (res, back) = monoio::select! {
                r = read => r,
                _ = w.idle_timers.until(until) => return Err(ProxyError::ClientTimeout),
            };
            self.rbuf = back.into_inner();
            match res {
                Ok(0) => return Err(ProxyError::ClientGone),
                Ok(n) => self.rec.rx += n as u64,
                Err(_) => return Err(ProxyError::ClientGone),
            }
        }
    }

    /// Route and proxy one request whose head is at the start of `rbuf`.
    async fn handle(&mut self, w: &Worker, head: RequestHead) -> Next {
        // An edge listener lets through only what an expose rule allows, before any route,
        // throttle or service is involved.
        let listener = self.listener.clone();
        let mut rewrite = None;
        let mut edge_limit = None;
        let mut upgrades = UpgradePolicy::AnyButH2c;
        if let Some(policy) = &listener.edge {
            let path = head.path.of(&self.rbuf);
            match policy.decide(head.method_span.of(&self.rbuf), path) {
                Decision::Forward(rule) => {
                    edge_limit = rule.limit.as_ref();
                    upgrades = rule.upgrade_policy();
                    rewrite = rule.rewrite();
                    if let Some(r) = rewrite {
                        self.rewritten.clear();
                        self.rewritten.extend_from_slice(r.prefix);
                        self.rewritten.extend_from_slice(&path[r.cut..]);
                    }
                }
                Decision::Hidden => return self.refuse(w, &head, ProxyError::NotExposed).await,
                Decision::MethodNotAllowed(allow) => {
                    let err = ProxyError::MethodNotAllowed(allow.into());
                    return self.refuse(w, &head, err).await;
                }
                Decision::DotSegment => {
                    let err = HttpError::Malformed("dot segment in the path");
                    return self.refuse(w, &head, err.into()).await;
                }
            }
        }
        self.upgrade_offer.clear();
        if head.upgrade {
            self.filter_upgrade(upgrades);
        }
        let table = w.table();
        let view = RequestView {
            buf: &self.rbuf,
            head: &head,
            fields: &self.fields,
            path_override: rewrite.is_some().then_some(&self.rewritten[..]),
        };
        if let Some(limit) = edge_limit {
            let admitted =
                w.throttle
                    .borrow_mut()
                    .admit(std::iter::once(limit), &view, self.peer.ip());
            match admitted {
                Err(r) => {
                    w.stats.throttle_rejected(&r.middleware);
                    return self.refuse(w, &head, ProxyError::Throttled(r)).await;
                }
                // nginx `limit_req` without `nodelay`: wait for this request's turn, on a
                // precise timer kept out of line (128-byte aligned, it would make every
                // request's state an over-aligned allocation).
                Ok(a) if a.delay_ns > 0 => {
                    Box::pin(monoio::time::sleep(std::time::Duration::from_nanos(
                        a.delay_ns,
                    )))
                    .await;
                }
                Ok(_) => {}
            }
        }
        let Some(frontend) = table.lookup(&view) else {
            return self.refuse(w, &head, ProxyError::NoRoute).await;
        };
        self.rec.frontend = Some(w.stats.frontend(&frontend.id));
        let limits = frontend
            .middlewares
            .iter()
            .filter_map(|m| m.limit.as_deref());
        let admitted = w.throttle.borrow_mut().admit(limits, &view, self.peer.ip());
        // Held until the exchange ends (connlimit slots).
        let admission = match admitted {
            Ok(a) => a,
            Err(r) => {
                w.stats.throttle_rejected(&r.middleware);
                return self.refuse(w, &head, ProxyError::Throttled(r)).await;
            }
        };
        let backend = table.backend(frontend.backend);

        // Body bytes already received, and whether the whole body is here.
        let max_body = frontend
            .settings
            .max_body_bytes
            .or((w.cfg.max_body_bytes > 0).then_some(w.cfg.max_body_bytes));
        // A body is kept for a replay only when the frontend's failover rule could ever
        // send this request again.
        let retain = if frontend
            .settings
            .failover
            .may_retry(head.method, head.method_span.of(&self.rbuf))
        {
            w.cfg.upstream.retry_body_bytes
        } else {
            0
        };
        let mut body = match BodyState::start(&self.rbuf, &head, max_body, retain) {
            Ok(b) => b,
            Err(e) => return self.refuse(w, &head, e).await,
        };
        if let (Some(max), BodyFraming::Length(n)) = (max_body, head.framing) {
            if n > max {
                return self.refuse(w, &head, ProxyError::BodyTooLarge(max)).await;
            }
        }
        // vulcand's cbreaker middlewares: a tripped one answers in the service's place.
        let breakers = frontend.middlewares.iter().any(|m| m.breaker.is_some());
        if breakers {
            if let Some(b) = w.breakers.admit(frontend, w.idle_timers.now()) {
                let answer = fallback_answer(b, head.path.of(&self.rbuf));
                return self.refuse(w, &head, answer).await;
            }
        }
        if let Err(answer) = super::rewrite::apply(self, &head, frontend, rewrite) {
            return self.refuse(w, &head, answer).await;
        }
        if backend.servers.is_empty() {
            return self.refuse(w, &head, ProxyError::NoServer).await;
        }
        let next = exchange::proxy(self, w, &head, frontend, backend, &mut body, rewrite).await;
        if breakers {
            let elapsed = w
                .idle_timers
                .refresh()
                .saturating_duration_since(self.rec.started());
            w.breakers.record(frontend, self.rec.status, elapsed);
        }
        // A protocol switch keeps its connlimit slots for the life of the tunnel.
        if matches!(next, Next::Tunnel(_)) {
            self.tunnel_admission = Some(admission);
        }
        next
    }

    /// Keep the protocols of the request's `Upgrade` offer that the listener allows. A request
    /// left with none is served as plain HTTP/1.1: a switched connection is a tunnel that no
    /// expose rule, method rule, throttle or access log sees into.
    fn filter_upgrade(&mut self, policy: UpgradePolicy<'_>) {
        let counts =
            upgrade::filter_offer(&self.rbuf, &self.fields, policy, &mut self.upgrade_offer);
        if counts.dropped > 0 {
            tracing::debug!(
                peer = %self.peer,
                listener = %self.listener.name,
                kept = counts.kept,
                removed = counts.dropped,
                "upgrade protocols not allowed on this listener were removed from the request"
            );
        }
    }

    /// Answer a request that reaches no upstream. The connection stays open only when the
    /// request's body is entirely in the buffer (so it can be skipped) and the client wants it.
    async fn refuse(&mut self, w: &Worker, head: &RequestHead, err: ProxyError) -> Next {
        let body_end = match head.framing {
            BodyFraming::Empty => Some(head.head_len),
            // A length no buffer can hold (even one that would overflow) means "not here".
            BodyFraming::Length(n) => (head.head_len as u64)
                .checked_add(n)
                .filter(|&end| end <= self.rbuf.len() as u64)
                .map(|end| end as usize),
            BodyFraming::Chunked => {
                let mut d = ChunkedDecoder::new();
                match d.advance(&self.rbuf[head.head_len..]) {
                    Ok(p) if p.done => Some(head.head_len + p.consumed),
                    _ => None,
                }
            }
            BodyFraming::UntilClose => None,
        };
        let keep = head.keep_alive && body_end.is_some() && !w.closing();
        let head_only = head.method == crate::http::request::Method::Head;
        let keep = self.answer_error(w, &err, keep, head_only).await && keep;
        if keep {
            let end = body_end.unwrap_or(self.rbuf.len());
            self.consume(end);
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Write ringway's own error response. Returns false when the client could not be written.
    pub async fn answer_error(
        &mut self,
        w: &Worker,
        err: &ProxyError,
        keep_alive: bool,
        head_only: bool,
    ) -> bool {
        let Some((status, reason)) = err.response() else {
            return false;
        };
        tracing::debug!(peer = %self.peer, blame = ?err.blame(), status, "{err}");
        self.linger |= !keep_alive;
        let mut out = std::mem::take(&mut self.extra);
        match (err, err.header_lines()) {
            (ProxyError::Fallback(a), _) => fallback_response(&mut out, a, keep_alive, head_only),
            (_, Some(extra)) => {
                error_response_with(&mut out, status, reason, &extra, keep_alive, head_only)
            }
            (_, None) => error_response(&mut out, status, reason, keep_alive, head_only),
        }
        let len = out.len() as u64;
        let res = w
            .timed(w.cfg.timeouts.send(), self.stream.write_all(out))
            .await;
        match res {
            Some((r, back)) => {
                self.extra = back;
                if r.is_ok() {
                    self.rec.status = status;
                    self.rec.tx += len;
                }
                r.is_ok()
            }
            None => false,
        }
    }

    /// Drop the first `n` bytes of `rbuf` (a finished request); pipelined bytes move to the front.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.rbuf.len());
        if n == self.rbuf.len() {
            self.rbuf.clear();
        } else {
            self.rbuf.copy_within(n.., 0);
            self.rbuf.truncate(self.rbuf.len() - n);
        }
    }
}

/// The answer of a tripped breaker for a request to `path`.
fn fallback_answer(b: &crate::resilience::breaker::Breaker, path: &[u8]) -> ProxyError {
    use crate::resilience::breaker::Fallback;
    let answer = match &b.spec.fallback {
        Fallback::Response {
            status,
            content_type,
            body,
        } => FallbackAnswer {
            breaker: b.middleware.clone(),
            status: *status,
            content_type: content_type.clone(),
            body: body.clone(),
            location: None,
        },
        Fallback::Redirect { url, preserve_path } => {
            let mut location = url.clone();
            if *preserve_path {
                location.push_str(&String::from_utf8_lossy(path));
            }
            FallbackAnswer {
                breaker: b.middleware.clone(),
                status: 302,
                content_type: Some("text/plain; charset=utf-8".into()),
                body: b"Found".to_vec(),
                location: Some(location),
            }
        }
    };
    ProxyError::Fallback(Box::new(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::upstream::tests::io_uring;

    fn returned_size<A, B, C, D, Fut, F: FnOnce(A, B, C, D) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn returned_layout<A, B, C, Fut, F: FnOnce(A, B, C) -> Fut>(_: &F) -> (usize, usize) {
        (std::mem::size_of::<Fut>(), std::mem::align_of::<Fut>())
    }

    #[test]
    fn a_spell_and_a_request_are_plain_allocations() {
        // Both are boxed (a spell per hot spell, an exchange per request). An over-aligned
        // future (one holding a monoio timer, 128-byte aligned) takes the allocator's aligned
        // path, several hundred instructions a request instead of a few dozen: millisecond
        // timers belong out of line (`exchange::dial_server`), I/O deadlines on `w.timed`.
        for (what, (size, align)) in [
            ("a spell", returned_layout(&spell)),
            ("a request", returned_layout(&Conn::handle)),
        ] {
            assert!(
                align <= 16,
                "{what}'s state is {align}-byte aligned ({size} bytes)"
            );
        }
    }

    #[test]
    fn peer_text_is_the_address_as_written_everywhere_else() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut ips: Vec<IpAddr> = vec![
            Ipv4Addr::new(0, 0, 0, 0).into(),
            Ipv4Addr::new(255, 255, 255, 255).into(),
            Ipv4Addr::new(127, 0, 0, 1).into(),
            Ipv4Addr::new(10, 9, 100, 199).into(),
            Ipv6Addr::LOCALHOST.into(),
            "2001:db8::8a2e:370:7334".parse().unwrap(),
            "::ffff:192.0.2.128".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
        ];
        // Every octet value in every position.
        ips.extend((0..=255u8).map(|b| IpAddr::from([b, 255 - b, b / 3, b.wrapping_mul(7)])));
        for ip in ips {
            assert_eq!(
                std::str::from_utf8(PeerText::new(ip).as_bytes()).unwrap(),
                ip.to_string()
            );
        }
    }

    #[test]
    fn an_idle_connection_task_stays_small() {
        // Every open connection, idle ones included, holds this future for its whole life;
        // what a request needs belongs in the spell's allocation. (200 bytes with Rust 1.95.)
        let size = returned_size(&serve);
        assert!(size <= 224, "a connection's task grew to {size} bytes");
    }

    /// A connected pair on loopback: ours on the runtime, theirs a plain blocking socket.
    async fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect_addr(listener.local_addr().unwrap())
            .await
            .unwrap();
        (ours, listener.accept().unwrap().0)
    }

    /// Give the ring a turn, so completions the kernel has for us are taken in.
    async fn settle() {
        monoio::time::sleep(std::time::Duration::from_millis(30)).await;
    }

    #[test]
    fn a_multishot_receive_yields_every_write_in_order_then_the_end_and_gives_buffers_back() {
        if !monoio::utils::detect_multishot_recv() {
            return; // Linux 6.0 or newer
        }
        io_uring(async {
            use std::io::Write;
            let ring = monoio::net::BufRing::new(8, 64).unwrap();
            let (ours, mut theirs) = pair().await;
            let mut m = ours.recv_multishot(&ring).unwrap();
            let sent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
            let mut got = Vec::new();
            for piece in sent.chunks(100) {
                theirs.write_all(piece).unwrap();
                let want = got.len() + piece.len();
                while got.len() < want {
                    let chunk = m.recv().await.unwrap().expect("bytes, not the end");
                    assert!(chunk.len() <= 64, "a chunk fits its buffer");
                    got.extend_from_slice(&chunk);
                }
            }
            assert_eq!(got, sent);
            drop(theirs);
            assert!(m.recv().await.unwrap().is_none(), "then the end");
            assert!(m.is_ended());
            assert_eq!(ring.available(), 8, "every buffer is back in the ring");
        });
    }

    #[test]
    fn an_empty_ring_ends_the_receive_and_the_bytes_wait_in_the_socket() {
        if !monoio::utils::detect_multishot_recv() {
            return;
        }
        io_uring(async {
            use std::io::Write;
            let ring = monoio::net::BufRing::new(2, 16).unwrap();
            let (mut ours, mut theirs) = pair().await;
            let mut m = ours.recv_multishot(&ring).unwrap();
            let sent: Vec<u8> = (0..100u8).collect();
            theirs.write_all(&sent).unwrap();
            // Two buffers held: the third receive finds the ring empty.
            let a = m.recv().await.unwrap().unwrap();
            let b = m.recv().await.unwrap().unwrap();
            let err = m.recv().await.err().expect("the ring ran dry");
            assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "{err}");
            assert!(m.is_ended());
            let mut got = [&a[..], &b[..]].concat();
            drop((a, b));
            assert_eq!(ring.available(), 2);
            // Nothing was lost: the rest is read from the socket directly.
            while got.len() < sent.len() {
                let (n, buf) = ours.read(Vec::with_capacity(256)).await;
                assert!(n.unwrap() > 0);
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, sent);
        });
    }

    #[test]
    fn a_cancelled_receive_still_yields_what_it_got_and_the_socket_reads_on() {
        if !monoio::utils::detect_multishot_recv() {
            return;
        }
        io_uring(async {
            use std::io::Write;
            let ring = monoio::net::BufRing::new(4, 64).unwrap();
            let (mut ours, mut theirs) = pair().await;
            let mut m = ours.recv_multishot(&ring).unwrap();
            theirs.write_all(b"abc").unwrap();
            settle().await;
            m.cancel();
            assert_eq!(&m.recv().await.unwrap().unwrap()[..], b"abc");
            let end = m.recv().await.err().expect("then the cancellation");
            assert_eq!(end.raw_os_error(), Some(libc::ECANCELED), "{end}");
            theirs.write_all(b"def").unwrap();
            let (n, buf) = ours.read(Vec::with_capacity(16)).await;
            assert_eq!(n.unwrap(), 3);
            assert_eq!(buf, b"def");

            // Dropped with bytes nobody took: its buffers go back to the ring.
            let m = ours.recv_multishot(&ring).unwrap();
            theirs.write_all(b"ghi").unwrap();
            settle().await;
            assert_eq!(ring.available(), 3, "one buffer holds the unread bytes");
            drop(m);
            assert_eq!(ring.available(), 4);
            settle().await;
            assert_eq!(ring.available(), 4);
        });
    }

    /// Read from `theirs` until `want` bytes arrived (or fail after two seconds).
    fn read_exact_within(theirs: &mut std::net::TcpStream, want: usize) -> Vec<u8> {
        use std::io::Read;
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = vec![0; want];
        theirs.read_exact(&mut got).expect("the bytes arrive");
        got
    }

    /// Whether the peer sees the end of the stream within two seconds.
    fn sees_end(theirs: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        loop {
            match theirs.read(&mut [0; 16]) {
                // The ring's task work for this thread interrupts a wait with a timeout.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return matches!(r, Ok(0)),
            }
        }
    }

    #[test]
    fn a_registered_socket_carries_every_operation_and_closing_it_reaches_the_peer() {
        io_uring(async {
            use monoio::io::AsyncWriteRent;
            use std::io::Write;
            if monoio::utils::register_fixed_files(2).is_err() {
                return; // Linux 5.19 or newer
            }
            assert!(
                monoio::utils::register_fixed_files(2).is_err(),
                "one table per ring"
            );
            let (mut a, mut ta) = pair().await;
            assert!(!a.is_fixed());
            assert!(a.register_fixed() && a.is_fixed() && a.register_fixed());

            // Sends, gathered sends (vectorized where the kernel has them), receives.
            let (n, _) = a.write(b"hello".to_vec()).await;
            assert_eq!(n.unwrap(), 5);
            assert_eq!(read_exact_within(&mut ta, 5), b"hello");
            for vectorized in [false, true] {
                a.set_send_vectorized(vectorized && monoio::utils::detect_vectorized_send());
                let parts = monoio::buf::VecBuf::from(vec![b"ab".to_vec(), b"cd".to_vec()]);
                let (n, _) = a.writev(parts).await;
                assert_eq!(n.unwrap(), 4);
                assert_eq!(read_exact_within(&mut ta, 4), b"abcd");
            }
            ta.write_all(b"xyz").unwrap();
            let (n, buf) = a.read(Vec::with_capacity(16)).await;
            assert_eq!((n.unwrap(), &buf[..]), (3, &b"xyz"[..]));
            // A receive armed ahead (a pooled upstream's) and a readiness watch.
            let pending = a.read_owned(Vec::with_capacity(16), true).unwrap();
            ta.write_all(b"pooled").unwrap();
            let (n, buf) = pending.await;
            assert_eq!((n.unwrap(), &buf[..]), (6, &b"pooled"[..]));
            let ready = a.watch_readable().unwrap();
            ta.write_all(b"!").unwrap();
            ready.await.unwrap();
            let (n, _) = a.read(Vec::with_capacity(16)).await;
            assert_eq!(n.unwrap(), 1);
            // A keep-alive client's multishot receive.
            if monoio::utils::detect_multishot_recv() {
                let ring = monoio::net::BufRing::new(4, 64).unwrap();
                let mut m = a.recv_multishot(&ring).unwrap();
                ta.write_all(b"next request").unwrap();
                assert_eq!(&m.recv().await.unwrap().unwrap()[..], b"next request");
                m.cancel();
                while m.recv().await.is_ok_and(|c| c.is_some()) {}
            }

            // Both slots taken: a third socket works without one.
            let (mut b, mut tb) = pair().await;
            assert!(b.register_fixed());
            let (mut c, mut tc) = pair().await;
            assert!(!c.register_fixed() && !c.is_fixed(), "the table is full");
            let (n, _) = c.write(b"c".to_vec()).await;
            assert_eq!(n.unwrap(), 1);
            assert_eq!(read_exact_within(&mut tc, 1), b"c");

            // Closing a registered socket empties its slot, so the peer sees the end. The slot
            // is not handed out again while that emptying waits in the submission queue
            // (it would empty the next socket's slot instead)...
            drop(a);
            assert!(!c.register_fixed(), "the slot is still being emptied");
            // ...and is once the kernel has taken it.
            settle().await;
            assert!(
                sees_end(&mut ta),
                "the peer of a closed registered socket sees the end"
            );
            assert!(c.register_fixed(), "the emptied slot is taken again");
            let (n, _) = c.write(b"C".to_vec()).await;
            assert_eq!(n.unwrap(), 1);
            assert_eq!(read_exact_within(&mut tc, 1), b"C");
            let (n, _) = b.write(b"b".to_vec()).await;
            assert_eq!(n.unwrap(), 1);
            assert_eq!(read_exact_within(&mut tb, 1), b"b");

            // A socket taken out of the runtime leaves its slot; the descriptor stays open.
            let fd = std::os::fd::IntoRawFd::into_raw_fd(b);
            // SAFETY: `fd` was just handed over, open, and is owned by nobody else.
            let mut plain =
                unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            plain.write_all(b"out").unwrap();
            assert_eq!(read_exact_within(&mut tb, 3), b"out");
            drop(plain);
            settle().await;
            assert!(sees_end(&mut tb));
            let (d, mut td) = pair().await;
            assert!(d.register_fixed(), "its slot is free again");
            drop((c, d));
            settle().await;
            assert!(sees_end(&mut tc) && sees_end(&mut td));
        });
    }

    #[test]
    fn without_io_uring_nothing_is_registered_and_sockets_work_as_before() {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("an epoll runtime")
            .block_on(async {
                use monoio::io::AsyncWriteRent;
                assert!(monoio::utils::register_fixed_files(16).is_err());
                let (mut a, mut ta) = pair().await;
                assert!(!a.register_fixed() && !a.is_fixed());
                let (n, _) = a.write(b"ok".to_vec()).await;
                assert_eq!(n.unwrap(), 2);
                assert_eq!(read_exact_within(&mut ta, 2), b"ok");
            });
    }
}
