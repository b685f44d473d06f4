//! One proxied exchange: choose a server, write the forwarded head from slices of the received
//! bytes, stream the request body, relay the response head and stream its body back. Retries
//! on another server only while that is safe.

use std::io::Write as _;
use std::net::SocketAddr;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::conn::{Conn, Next};
use super::error::ProxyError;
use super::gather::{write_gather, Gather};
use super::respond::CONTINUE_100;
use super::worker::Worker;
use crate::http::request::Method;
use crate::http::{
    parse_response, BodyFraming, ChunkedDecoder, FieldKind, HttpError, Parsed, RequestHead,
    ResponseHead, Version,
};
use crate::route::{Backend, Frontend, Server};

/// The request body: how much of it is in the read buffer and how much is still to come.
pub struct BodyState {
    framing: BodyFraming,
    /// End offset in `rbuf` of the body bytes received with the head.
    pub buffered_end: usize,
    /// The whole body is in `rbuf` (so the request can be replayed on another server).
    pub complete: bool,
    remaining: u64,
    decoder: ChunkedDecoder,
    max: Option<u64>,
}

impl BodyState {
    pub fn start(
        rbuf: &[u8],
        head: &RequestHead,
        max: Option<u64>,
    ) -> Result<BodyState, ProxyError> {
        let after = &rbuf[head.head_len..];
        let mut s = BodyState {
            framing: head.framing,
            buffered_end: head.head_len,
            complete: true,
            remaining: 0,
            decoder: ChunkedDecoder::new(),
            max,
        };
        match head.framing {
            BodyFraming::Empty | BodyFraming::UntilClose => {}
            BodyFraming::Length(n) => {
                let have = (after.len() as u64).min(n);
                s.buffered_end = head.head_len + have as usize;
                s.remaining = n - have;
                s.complete = s.remaining == 0;
            }
            BodyFraming::Chunked => {
                let p = s.decoder.advance(after)?;
                s.buffered_end = head.head_len + p.consumed;
                s.complete = p.done;
                s.check_size()?;
            }
        }
        Ok(s)
    }

    fn check_size(&self) -> Result<(), ProxyError> {
        match self.max {
            Some(max) if self.decoder.data_len() > max => Err(ProxyError::BodyTooLarge(max)),
            _ => Ok(()),
        }
    }

    /// How many of `n` freshly read bytes belong to the body, and whether it is now complete.
    fn take(&mut self, bytes: &[u8]) -> Result<(usize, bool), ProxyError> {
        match self.framing {
            BodyFraming::Length(_) => {
                let k = (bytes.len() as u64).min(self.remaining);
                self.remaining -= k;
                Ok((k as usize, self.remaining == 0))
            }
            BodyFraming::Chunked => {
                let p = self.decoder.advance(bytes)?;
                self.check_size()?;
                Ok((p.consumed, p.done))
            }
            BodyFraming::Empty | BodyFraming::UntilClose => Ok((0, true)),
        }
    }
}

/// Servers already tried for this request (no allocation for the common case).
#[derive(Default)]
struct Tried {
    addrs: [Option<SocketAddr>; 8],
    len: usize,
}

impl Tried {
    fn push(&mut self, a: SocketAddr) {
        if self.len < self.addrs.len() {
            self.addrs[self.len] = Some(a);
            self.len += 1;
        }
    }

    fn fill(&self, out: &mut [SocketAddr; 8]) -> usize {
        for (i, a) in self.addrs[..self.len].iter().enumerate() {
            out[i] = a.expect("first len slots are set");
        }
        self.len
    }
}

enum Outcome {
    Done(Next),
    /// Failed before anything of a response reached the client.
    Failed {
        err: ProxyError,
        retry: bool,
    },
    /// Failed after the response started: the client connection can only be closed.
    Aborted,
}

pub async fn proxy(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    fe: &Frontend,
    be: &Backend,
    body: &mut BodyState,
) -> Next {
    let mut tried = Tried::default();
    let mut attempts_left = 1 + w.cfg.upstream.max_retries;
    let mut fresh_only = false;
    let mut last_err = None;
    loop {
        let mut buf = [SocketAddr::from(([0, 0, 0, 0], 0)); 8];
        let n = tried.fill(&mut buf);
        let Some(server) = w.upstreams.pick(be, &buf[..n]) else {
            // Every server was tried: the client hears why the last attempt failed.
            let err = last_err.unwrap_or(ProxyError::NoServer);
            return finish_failed(c, w, head, body, err).await;
        };
        if last_err.is_some() {
            w.stats.upstream_retry();
        }
        attempts_left -= 1;
        match attempt(c, w, head, fe, be, server, body, fresh_only).await {
            Outcome::Done(next) => {
                w.upstreams.mark_ok(server.addr);
                return next;
            }
            Outcome::Aborted => return Next::Close,
            Outcome::Failed { err, retry } => {
                w.stats.upstream_failed(&err);
                let stale = matches!(err, ProxyError::Stale);
                if err.marks_server() {
                    w.upstreams.mark_failed(server.addr);
                }
                tracing::debug!(server = %server.addr, retry, "{err}");
                if retry && attempts_left > 0 {
                    // A stale pooled connection says nothing about the server: try it again
                    // on a new connection.
                    fresh_only = stale;
                    if !stale {
                        tried.push(server.addr);
                    }
                    last_err = Some(err);
                    continue;
                }
                return finish_failed(c, w, head, body, err).await;
            }
        }
    }
}

async fn finish_failed(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    body: &BodyState,
    err: ProxyError,
) -> Next {
    let keep = body.complete && head.keep_alive && !w.shutdown.fired() && !c.rbuf.is_empty();
    let head_only = head.method == Method::Head;
    let written = c.answer_error(w, &err, keep, head_only).await;
    if keep && written {
        c.consume(body.buffered_end);
        Next::KeepAlive
    } else {
        Next::Close
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    fe: &Frontend,
    be: &Backend,
    server: &Server,
    body: &mut BodyState,
    fresh_only: bool,
) -> Outcome {
    let addr = server.addr;
    c.rec.upstream_attempt(addr);
    let replayable = body.complete;
    let idempotent = head.method.is_idempotent();
    let pooled = if fresh_only {
        None
    } else {
        w.upstreams.take(addr, be.settings.keepalive_period)
    };
    let reused = pooled.is_some();
    let mut up = match pooled {
        Some(s) => s,
        None => {
            let dial = be.settings.dial_timeout.unwrap_or(w.cfg.timeouts.connect());
            match monoio::time::timeout(dial, TcpStream::connect_addr(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Ok(Err(e)) => {
                    return Outcome::Failed {
                        err: ProxyError::Connect(e),
                        retry: true,
                    }
                }
                Err(_) => {
                    return Outcome::Failed {
                        err: ProxyError::ConnectTimeout,
                        retry: true,
                    }
                }
            }
        }
    };
    w.stats.upstream_request(reused);

    // Head plus the body bytes that came with it, in one writev.
    let g = build_upstream_head(c, w, head, fe, server, body);
    let sent = monoio::time::timeout(w.cfg.timeouts.send(), write_gather(&mut up, g)).await;
    let res = match sent {
        Ok((res, g)) => {
            let (rbuf, extra, iov) = g.into_parts();
            c.rbuf = rbuf;
            c.extra = extra;
            c.iov = iov;
            res
        }
        Err(_) => {
            // The buffers went with the cancelled write; the request cannot be replayed.
            c.rbuf = Vec::with_capacity(w.cfg.idle_buffer_bytes);
            body.complete = false;
            return Outcome::Failed {
                err: ProxyError::UpstreamTimeout,
                retry: false,
            };
        }
    };
    if let Err(e) = res {
        return if reused {
            Outcome::Failed {
                err: ProxyError::Stale,
                retry: replayable,
            }
        } else {
            Outcome::Failed {
                err: ProxyError::UpstreamIo(e),
                retry: replayable && idempotent,
            }
        };
    }

    if !body.complete {
        if head.expect_continue && head.version == Version::Http11 {
            let (r, _) = c.stream.write_all(CONTINUE_100).await;
            if r.is_err() {
                return Outcome::Aborted;
            }
            c.rec.tx += CONTINUE_100.len() as u64;
        }
        if let Err(err) = stream_request_body(c, w, &mut up, body).await {
            return Outcome::Failed { err, retry: false };
        }
    }

    let done = Done {
        consume_end: body.buffered_end,
        reused,
        replayable: replayable && body.complete,
        idempotent,
    };
    relay_response(c, w, head, be, server, up, done).await
}

/// The forwarded head: the request line and kept fields as slices of `rbuf`, then the proxy's
/// own lines, then the body bytes already received.
fn build_upstream_head(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    fe: &Frontend,
    server: &Server,
    body: &BodyState,
) -> Gather {
    let mut extra = std::mem::take(&mut c.extra);
    extra.clear();
    let rbuf = &c.rbuf;
    let pass_host = fe.settings.pass_host_header;
    let mut has_proto = false;
    let mut has_fwd_host = false;
    let mut has_request_id = false;
    let mut xff_started = false;

    // An absolute-form target's authority overrides the Host field (RFC 9112 §3.2.2).
    let absolute_form = head.path_and_query != head.target;
    let host_replaced = !pass_host || absolute_form;
    if !pass_host {
        extra.extend_from_slice(b"Host: ");
        match &fe.settings.hostname {
            Some(h) => extra.extend_from_slice(h.as_bytes()),
            None => extra.extend_from_slice(server.authority.as_bytes()),
        }
        extra.extend_from_slice(b"\r\n");
    } else if absolute_form {
        extra.extend_from_slice(b"Host: ");
        extra.extend_from_slice(head.host.of(rbuf));
        extra.extend_from_slice(b"\r\n");
    }
    for f in c.fields.iter().filter(|f| !f.drop) {
        match f.kind {
            FieldKind::XForwardedFor => {
                extra.extend_from_slice(if xff_started {
                    b", "
                } else {
                    b"X-Forwarded-For: "
                });
                extra.extend_from_slice(f.value.of(rbuf));
                xff_started = true;
            }
            FieldKind::XForwardedProto => has_proto = true,
            FieldKind::XForwardedHost => has_fwd_host = true,
            FieldKind::XRequestId => has_request_id = true,
            _ => {}
        }
    }
    extra.extend_from_slice(if xff_started {
        b", "
    } else {
        b"X-Forwarded-For: "
    });
    extra.extend_from_slice(c.peer_ip.as_bytes());
    extra.extend_from_slice(b"\r\n");
    if !has_proto {
        extra.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    }
    if !has_fwd_host && !head.host.is_empty() {
        extra.extend_from_slice(b"X-Forwarded-Host: ");
        extra.extend_from_slice(head.host.of(rbuf));
        extra.extend_from_slice(b"\r\n");
    }
    if !has_request_id {
        extra.extend_from_slice(b"X-Request-Id: ");
        let id_start = extra.len();
        w.write_request_id(&mut extra);
        c.rec.generated_request_id(&extra[id_start..]);
        extra.extend_from_slice(b"\r\n");
    }
    if head.upgrade {
        for f in &c.fields {
            if f.kind == FieldKind::Upgrade {
                extra.extend_from_slice(f.line.of(rbuf));
            }
        }
        extra.extend_from_slice(b"Connection: upgrade\r\n");
    }

    let mut g = Gather::new(
        std::mem::take(&mut c.rbuf),
        extra,
        std::mem::take(&mut c.iov),
    );
    let line_end = head.target.end as usize + b" HTTP/1.1\r\n".len();
    if head.version == Version::Http11 && head.path_and_query == head.target {
        g.push_data(0, line_end);
    } else {
        g.push_data(
            head.method_span.start as usize,
            head.method_span.end as usize,
        );
        g.push_static(b" ");
        g.push_data(
            head.path_and_query.start as usize,
            head.path_and_query.end as usize,
        );
        g.push_static(match head.version {
            Version::Http10 => b" HTTP/1.0\r\n",
            Version::Http11 => b" HTTP/1.1\r\n",
        });
    }
    for f in &c.fields {
        // A mesh hop keeps the previous hop's X-Forwarded-Proto/Host and X-Request-Id (unless
        // `Connection` named them) and rebuilds X-Forwarded-For with the peer appended.
        let skip = f.drop
            || matches!(f.kind, FieldKind::Expect | FieldKind::XForwardedFor)
            || (f.kind == FieldKind::Host && host_replaced);
        if !skip {
            g.push_data(f.line.start as usize, f.line.end as usize);
        }
    }
    let extra_len = g.extra.len();
    g.push_extra(0, extra_len);
    g.push_static(b"\r\n");
    g.push_data(head.head_len, body.buffered_end);
    g
}

/// Stream the rest of the request body from the client to the upstream, buffer by buffer,
/// writing each buffer as it was read. Pipelined bytes after the body stay in `rbuf`.
async fn stream_request_body(
    c: &mut Conn,
    w: &Worker,
    up: &mut TcpStream,
    body: &mut BodyState,
) -> Result<(), ProxyError> {
    c.rbuf.clear();
    let mut buf = w.body_bufs.take();
    loop {
        buf.clear();
        let cap = buf.capacity();
        let want = match body.framing {
            BodyFraming::Length(_) => (body.remaining.min(cap as u64)) as usize,
            _ => cap,
        };
        let read = c.stream.read(buf.slice_mut(0..want));
        let (res, back) = match monoio::time::timeout(w.cfg.timeouts.body(), read).await {
            Ok(r) => r,
            Err(_) => return Err(ProxyError::ClientTimeout),
        };
        buf = back.into_inner();
        let n = match res {
            Ok(0) | Err(_) => return Err(ProxyError::ClientGone),
            Ok(n) => n,
        };
        c.rec.rx += n as u64;
        let (k, done) = body.take(&buf[..n])?;
        if k > 0 {
            let write = up.write_all(buf.slice(0..k));
            match monoio::time::timeout(w.cfg.timeouts.send(), write).await {
                Ok((Ok(_), back)) => buf = back.into_inner(),
                Ok((Err(e), _)) => return Err(ProxyError::UpstreamIo(e)),
                Err(_) => return Err(ProxyError::UpstreamTimeout),
            }
        }
        if done {
            c.rbuf.extend_from_slice(&buf[k..n]);
            body.complete = true;
            body.buffered_end = 0;
            w.give_buf(buf);
            return Ok(());
        }
    }
}

/// Read one response head from the upstream into `ubuf`, passing interim (1xx) responses on.
#[allow(clippy::too_many_arguments)]
async fn read_response_head(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    be: &Backend,
    up: &mut TcpStream,
    ubuf: &mut Vec<u8>,
    reused: bool,
    replayable: bool,
    idempotent: bool,
) -> Result<ResponseHead, Outcome> {
    let limits = w.cfg.upstream_head_limits;
    let read_timeout = be
        .settings
        .read_timeout
        .unwrap_or(w.cfg.timeouts.upstream_read());
    let mut scanned = 0;
    let mut got_any = false;
    loop {
        if !ubuf.is_empty() {
            match parse_response(
                ubuf,
                scanned,
                head.method == Method::Head,
                &limits,
                &mut c.resp_fields,
            ) {
                Ok(Parsed::Partial { scanned: s }) => scanned = s,
                Ok(Parsed::Complete(rh)) => {
                    if rh.status >= 200 || rh.status == 101 {
                        return Ok(rh);
                    }
                    // Interim response: HTTP/1.1 clients get it (except a second 100 when
                    // ringway already sent its own), then the final one follows.
                    if head.version == Version::Http11
                        && !(rh.status == 100 && head.expect_continue)
                    {
                        let interim: Vec<u8> = ubuf[..rh.head_len].to_vec();
                        let (r, _) = c.stream.write_all(interim).await;
                        if r.is_err() {
                            return Err(Outcome::Aborted);
                        }
                        c.rec.tx += rh.head_len as u64;
                    }
                    ubuf.drain(..rh.head_len);
                    scanned = 0;
                    continue;
                }
                Err(e) => {
                    return Err(Outcome::Failed {
                        err: ProxyError::BadResponse(e),
                        retry: false,
                    })
                }
            }
        }
        if ubuf.len() == ubuf.capacity() {
            let want = (ubuf.capacity() * 2).min(limits.max_head_bytes + 1);
            if want <= ubuf.len() {
                let err =
                    ProxyError::BadResponse(HttpError::HeadTooLarge("response head too large"));
                return Err(Outcome::Failed { err, retry: false });
            }
            ubuf.reserve_exact(want - ubuf.len());
        }
        let buf = std::mem::take(ubuf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, back) =
            match monoio::time::timeout(read_timeout, up.read(buf.slice_mut(len..cap))).await {
                Ok(r) => r,
                Err(_) => {
                    let retry = replayable && idempotent && !got_any;
                    return Err(Outcome::Failed {
                        err: ProxyError::UpstreamTimeout,
                        retry,
                    });
                }
            };
        *ubuf = back.into_inner();
        match res {
            // The request went out whole on a pooled connection and nothing came back: the
            // server may have processed it, so only an idempotent request is tried again.
            Ok(0) | Err(_) if !got_any && reused => {
                let retry = replayable && idempotent;
                return Err(Outcome::Failed {
                    err: ProxyError::Stale,
                    retry,
                });
            }
            Ok(0) => {
                let retry = replayable && idempotent && !got_any;
                return Err(Outcome::Failed {
                    err: ProxyError::UpstreamClosed,
                    retry,
                });
            }
            Err(e) => {
                let retry = replayable && idempotent && !got_any;
                return Err(Outcome::Failed {
                    err: ProxyError::UpstreamIo(e),
                    retry,
                });
            }
            Ok(_) => got_any = true,
        }
    }
}

/// Where the request stands once its body was sent.
struct Done {
    /// Bytes of `rbuf` the request occupies (pipelined bytes follow).
    consume_end: usize,
    reused: bool,
    replayable: bool,
    idempotent: bool,
}

async fn relay_response(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    be: &Backend,
    server: &Server,
    mut up: TcpStream,
    d: Done,
) -> Outcome {
    let mut ubuf = w.bufs.take();
    let rh = match read_response_head(
        c,
        w,
        head,
        be,
        &mut up,
        &mut ubuf,
        d.reused,
        d.replayable,
        d.idempotent,
    )
    .await
    {
        Ok(rh) => rh,
        Err(o) => {
            w.bufs.give(ubuf);
            return o;
        }
    };
    c.rec.upstream_answered();

    if rh.status == 101 {
        if !head.upgrade {
            w.bufs.give(ubuf);
            let err =
                ProxyError::BadResponse(HttpError::Malformed("101 without an upgrade request"));
            return Outcome::Failed { err, retry: false };
        }
        return start_tunnel(c, up, ubuf, d.consume_end).await;
    }

    let client_keep =
        head.keep_alive && !w.shutdown.fired() && rh.framing != BodyFraming::UntilClose;
    let mut decoder = ChunkedDecoder::new();
    let avail = ubuf.len() - rh.head_len;
    let (first_k, mut remaining, mut done) = match rh.framing {
        BodyFraming::Empty => (0, 0, true),
        BodyFraming::Length(n) => {
            let k = (avail as u64).min(n);
            (k as usize, n - k, k == n)
        }
        BodyFraming::Chunked => match decoder.advance(&ubuf[rh.head_len..]) {
            Ok(p) => (p.consumed, 0, p.done),
            Err(e) => {
                w.bufs.give(ubuf);
                return Outcome::Failed {
                    err: ProxyError::BadResponse(e),
                    retry: false,
                };
            }
        },
        BodyFraming::UntilClose => (avail, 0, false),
    };
    let mut surplus = done && rh.head_len + first_k < ubuf.len();

    // Client head: status line and kept fields as slices, plus the proxy's Connection line.
    let mut extra = std::mem::take(&mut c.extra);
    extra.clear();
    if !client_keep {
        extra.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == Version::Http10 {
        extra.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    let mut g = Gather::new(ubuf, extra, std::mem::take(&mut c.iov));
    g.push_data(0, rh.status_line.end as usize + 2);
    for f in &c.resp_fields {
        if !f.drop {
            g.push_data(f.line.start as usize, f.line.end as usize);
        }
    }
    let extra_len = g.extra.len();
    g.push_extra(0, extra_len);
    g.push_static(b"\r\n");
    g.push_data(rh.head_len, rh.head_len + first_k);
    let head_bytes = g.remaining() as u64;
    let sent = monoio::time::timeout(w.cfg.timeouts.send(), write_gather(&mut c.stream, g)).await;
    let mut ubuf = match sent {
        Ok((Ok(()), g)) => {
            c.rec.status = rh.status;
            c.rec.tx += head_bytes;
            let (ubuf, extra, iov) = g.into_parts();
            c.extra = extra;
            c.iov = iov;
            ubuf
        }
        _ => return Outcome::Aborted,
    };
    if !done {
        // The rest of the body moves through a large buffer: fewer reads and writes per byte.
        w.bufs
            .give(std::mem::replace(&mut ubuf, w.body_bufs.take()));
    }

    let read_timeout = be
        .settings
        .read_timeout
        .unwrap_or(w.cfg.timeouts.upstream_read());
    while !done {
        ubuf.clear();
        let cap = ubuf.capacity();
        let want = match rh.framing {
            BodyFraming::Length(_) => remaining.min(cap as u64) as usize,
            _ => cap,
        };
        let (res, back) =
            match monoio::time::timeout(read_timeout, up.read(ubuf.slice_mut(0..want))).await {
                Ok(r) => r,
                Err(_) => {
                    w.stats.upstream_failed(&ProxyError::UpstreamTimeout);
                    return Outcome::Aborted;
                }
            };
        ubuf = back.into_inner();
        let n = match res {
            Ok(0) if rh.framing == BodyFraming::UntilClose => break,
            Ok(0) | Err(_) => {
                w.upstreams.mark_failed(server.addr);
                return Outcome::Aborted;
            }
            Ok(n) => n,
        };
        let k = match rh.framing {
            BodyFraming::Length(_) => {
                let k = (n as u64).min(remaining);
                remaining -= k;
                done = remaining == 0;
                k as usize
            }
            BodyFraming::Chunked => match decoder.advance(&ubuf[..n]) {
                Ok(p) => {
                    done = p.done;
                    p.consumed
                }
                Err(_) => return Outcome::Aborted,
            },
            _ => n,
        };
        surplus = done && k < n;
        let write = c.stream.write_all(ubuf.slice(0..k));
        match monoio::time::timeout(w.cfg.timeouts.send(), write).await {
            Ok((Ok(_), back)) => ubuf = back.into_inner(),
            _ => return Outcome::Aborted,
        }
        c.rec.tx += k as u64;
    }
    w.give_buf(ubuf);
    if rh.keep_alive && !surplus && rh.framing != BodyFraming::UntilClose {
        w.upstreams
            .put(server.addr, up, be.settings.max_idle_per_host);
    }
    c.consume(d.consume_end);
    Outcome::Done(if client_keep {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// Switch to a byte tunnel after the upstream's 101: pass the 101 head and anything after it to
/// the client, and any bytes the client sent after its request to the upstream.
async fn start_tunnel(
    c: &mut Conn,
    mut up: TcpStream,
    ubuf: Vec<u8>,
    consume_end: usize,
) -> Outcome {
    let sent = ubuf.len() as u64;
    let (r, _) = c.stream.write_all(ubuf).await;
    if r.is_err() {
        return Outcome::Aborted;
    }
    c.rec.status = 101;
    c.rec.tx += sent;
    let early: Vec<u8> = c.rbuf[consume_end.min(c.rbuf.len())..].to_vec();
    if !early.is_empty() {
        let (r, _) = up.write_all(early).await;
        if r.is_err() {
            return Outcome::Aborted;
        }
    }
    c.rbuf.clear();
    Outcome::Done(Next::Tunnel(up))
}

/// Write a request id (32 hex digits) for a request that has none.
pub fn write_request_id(out: &mut Vec<u8>, seed: u64, counter: u64) {
    let _ = write!(out, "{seed:016x}{counter:016x}");
}
