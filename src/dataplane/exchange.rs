//! One proxied exchange: choose a server, write the forwarded head from slices of the received
//! bytes, stream the request body, relay the response head and stream its body back. Retries
//! on another server only while that is safe.

mod body;
mod response;
mod splice;
mod upstream_head;

use body::stream_request_body;
pub use body::BodyState;
use response::{relay_response, upstream_read_timeout, Done};
use upstream_head::build_upstream_head;
pub use upstream_head::request_id;

use std::borrow::Cow;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::net_stream::NetStream;
use crate::tls::stream::{HandshakeError, TlsStream};

use super::conn::{Conn, Next};
use super::error::ProxyError;
use super::gather::write_gather;
use super::respond::CONTINUE_100;
use super::stats::RetryReason;
use super::upstream::{InFlight, Upstreams, Watch};
use super::worker::Worker;
use crate::config::MAX_RETRIES;
use crate::edge::Rewrite;
use crate::http::request::Method;
use crate::http::{RequestHead, Version};
use crate::route::failover::Attempt;
use crate::route::{Backend, Failover, Frontend, Server};

/// Servers already tried for this request, as indices into the backend's servers.
#[derive(Default)]
struct Tried {
    servers: [u16; 1 + MAX_RETRIES as usize],
    len: usize,
}

impl Tried {
    fn push(&mut self, server: u16) {
        if self.len < self.servers.len() {
            self.servers[self.len] = server;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[u16] {
        &self.servers[..self.len]
    }
}

pub(super) enum Outcome {
    Done(Next),
    /// Failed before anything of a response reached the client.
    Failed {
        err: ProxyError,
        reached: Reached,
    },
    /// The upstream answered with a status the failover predicate retries; the response was
    /// dropped unseen.
    Retry {
        status: u16,
    },
    /// Failed after the response started: the client connection can only be closed.
    Aborted,
}

/// How far the request of a failed attempt got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reached {
    /// Nothing of it reached a server that could act on it: the connection could not be
    /// made, or a pooled connection turned out closed while the head was written.
    Nothing,
    /// It went out, or part of it: the server may have acted on it.
    Server,
}

/// Whether an attempt's outcome earns another attempt: the frontend's failover predicate,
/// then the limits (`max_retries`, a server not yet tried, a body in hand), then the
/// node-wide retry budget.
pub(super) struct RetryGate<'a> {
    /// The attempt's place in the server's load (times the response for the balancer).
    pub(super) flight: &'a InFlight<'a>,
    failover: &'a Failover,
    method: &'a [u8],
    idempotent: bool,
    /// Attempts so far, this one included.
    attempts: u32,
    /// `max_retries` allows another attempt and a server is left that was not tried.
    room: bool,
}

impl RetryGate<'_> {
    fn attempt(&self, code: u16) -> Attempt<'_> {
        Attempt {
            attempts: self.attempts,
            code,
            method: self.method,
        }
    }

    /// A response with `status` arrived (before anything of it went to the client).
    pub(super) fn retries_status(&self, w: &Worker, status: u16, replayable: bool) -> bool {
        status >= 200
            && self.failover.wants_retry(&self.attempt(status))
            && self.admit(w, replayable)
    }

    /// The attempt failed without a response: `code` is ringway's own 502 or 504.
    fn retries_failure(&self, w: &Worker, code: u16, reached: Reached, replayable: bool) -> bool {
        let wants = if self.failover.is_explicit() {
            self.failover.wants_retry(&self.attempt(code))
        } else {
            // vulcand's default, never for a request the upstream may have acted on unless
            // it is idempotent; and, as nginx, any request that could not be sent at all.
            reached == Reached::Nothing
                || (self.idempotent && self.failover.wants_retry(&self.attempt(code)))
        };
        wants && self.admit(w, replayable)
    }

    fn admit(&self, w: &Worker, replayable: bool) -> bool {
        if !self.room {
            return false;
        }
        if !replayable {
            tracing::debug!(
                "not retried: part of the request body went out without a copy (larger than \
                 retry_body_bytes, or spliced)"
            );
            return false;
        }
        if !w.retry_budget.try_retry(w.idle_timers.now()) {
            w.stats.retry_budget_exhausted();
            tracing::debug!("not retried: the node's retry budget is spent");
            return false;
        }
        true
    }
}

fn retry_reason(err: &ProxyError) -> RetryReason {
    match err {
        ProxyError::Connect(_) | ProxyError::ConnectTimeout => RetryReason::Connect,
        ProxyError::UpstreamTimeout => RetryReason::Timeout,
        _ => RetryReason::Reset,
    }
}

pub async fn proxy(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    fe: &Frontend,
    be: &Backend,
    body: &mut BodyState,
    rewrite: Option<Rewrite<'_>>,
) -> Next {
    let mut tried = Tried::default();
    let max_attempts = 1 + w.cfg.upstream.max_retries.min(MAX_RETRIES);
    let method = head.method.name().map_or_else(
        || Cow::Owned(head.method_span.of(&c.rbuf).to_vec()),
        Cow::Borrowed,
    );
    let idempotent = head.method.is_idempotent();
    w.retry_budget.count_request();
    let mut attempts = 0;
    let mut fresh_only = false;
    let mut last_err = None;
    loop {
        let now = w.idle_timers.now();
        let Some(pick) = w.upstreams.pick(be, tried.as_slice(), now) else {
            // Every server was tried: the client hears why the last attempt failed.
            let err = last_err.unwrap_or(ProxyError::NoServer);
            return finish_failed(c, w, head, body, err).await;
        };
        let (index, server) = (pick.index, pick.server);
        // A stale pooled connection retried on a new one is the same attempt.
        if !fresh_only {
            attempts += 1;
        }
        let flight = w.upstreams.begin(be, server, now);
        let began = now;
        let gate = RetryGate {
            flight: &flight,
            failover: &fe.settings.failover,
            method: &method,
            idempotent,
            attempts,
            // `tried` and the current server are distinct servers of the backend.
            room: attempts < max_attempts && be.servers.len() > tried.len + 1,
        };
        let target = Target {
            fe,
            be,
            server,
            rewrite,
        };
        let outcome = attempt(c, w, head, target, body, fresh_only, &gate).await;
        let now = w.idle_timers.now();
        match outcome {
            Outcome::Done(next) => {
                // What the client got from this server says whether it is healthy (an early
                // answer to an upload says nothing either way).
                if c.early_answer {
                    w.upstreams.neutral(&pick);
                } else if c.rec.status >= 500 {
                    w.upstreams.failure(be, server, now);
                } else if c.rec.status != 0 && !c.early_answer {
                    w.upstreams.success(&pick, now);
                } else {
                    w.upstreams.neutral(&pick);
                }
                return next;
            }
            Outcome::Aborted => {
                w.upstreams.neutral(&pick);
                return Next::Close;
            }
            Outcome::Retry { status } => {
                if c.early_answer {
                    w.upstreams.neutral(&pick);
                } else if status >= 500 {
                    w.upstreams.failure(be, server, now);
                } else {
                    w.upstreams.success(&pick, now);
                }
                tracing::debug!(server = %server.addr, status, attempts, "response retried on another server");
                w.stats.upstream_retry(RetryReason::Status);
                tried.push(index);
                fresh_only = false;
            }
            Outcome::Failed { err, reached } => {
                w.stats.upstream_failed(&err);
                if err.marks_server() {
                    let floor = be.settings.dial_timeout.unwrap_or(w.cfg.timeouts.connect());
                    let refused = matches!(&err, ProxyError::Connect(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused);
                    w.upstreams
                        .penalise(&flight, now - began, floor, refused, now);
                    w.upstreams.failure(be, server, now);
                    // A server that left a connection attempt or a request unanswered is
                    // likely silent on its other connections too (a partitioned host, a
                    // firewall that dropped idle flows): each of its pooled ones would cost the
                    // next request the same deadline, and a request not safe to repeat its 504.
                    // New connections fail fast or work, and a failed one is retried elsewhere.
                    if matches!(
                        err,
                        ProxyError::UpstreamTimeout | ProxyError::ConnectTimeout
                    ) {
                        w.upstreams.forget(server.addr);
                    }
                } else {
                    w.upstreams.neutral(&pick);
                }
                // A pooled connection the server had closed says nothing about the server:
                // the same server again on a new connection, when the request cannot have
                // been acted on or acting twice is harmless.
                if matches!(err, ProxyError::Stale)
                    && body.replayable()
                    && (reached == Reached::Nothing || idempotent)
                {
                    tracing::debug!(server = %server.addr, "{err}; trying a new connection");
                    w.stats.upstream_retry(RetryReason::Stale);
                    fresh_only = true;
                    last_err = Some(err);
                    continue;
                }
                let retry = err
                    .network_status()
                    .is_some_and(|code| gate.retries_failure(w, code, reached, body.replayable()));
                tracing::debug!(server = %server.addr, retry, attempts, "{err}");
                if !retry {
                    return finish_failed(c, w, head, body, err).await;
                }
                w.stats.upstream_retry(retry_reason(&err));
                tried.push(index);
                fresh_only = false;
                last_err = Some(err);
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
    let keep = body.complete && head.keep_alive && !w.closing() && !c.rbuf.is_empty();
    let head_only = head.method == Method::Head;
    let written = c.answer_error(w, &err, keep, head_only).await;
    if keep && written {
        c.consume(body.buffered_end);
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Where one attempt goes, and how its target is rewritten.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    fe: &'a Frontend,
    be: &'a Backend,
    server: &'a Server,
    rewrite: Option<Rewrite<'a>>,
}

/// A new connection to `server` within `limit`, and its TLS handshake within `handshake`
/// (the backend's `Timeouts.TLSHandshake`, else `limit`). Both are millisecond timers:
/// dial timeouts are often set well below the worker's 50 ms tick. Boxed by its caller: the
/// timer is 128-byte aligned, and inline it would make every exchange's state an over-aligned
/// allocation, which takes the allocator's slow path on every request. With `probes` (the
/// backend's `KeepAlive.Period`), TCP keep-alive probes go out after that long without traffic
/// and then every `probes`, as vulcand's dialer sends them: a server whose host vanished under
/// a long request or a tunnel is found by the kernel instead of waiting out the deadline.
async fn dial_server(
    w: &Worker,
    server: &Server,
    addr: std::net::SocketAddr,
    limit: std::time::Duration,
    handshake: std::time::Duration,
    probes: Option<std::time::Duration>,
) -> Result<NetStream, ProxyError> {
    match monoio::time::timeout(limit, TcpStream::connect_addr(addr)).await {
        Ok(Ok(mut s)) => {
            let _ = s.set_nodelay(true);
            if let Some(period) = probes {
                keep_alive_probes(&s, period);
            }
            s.set_send_vectorized(w.send_vectorized);
            match &server.tls {
                None => Ok(NetStream::Plain(s)),
                // The handshake has a deadline of its own.
                Some(name) => tls_connect(w, s, name, handshake).await,
            }
        }
        Ok(Err(e)) => Err(ProxyError::Connect(e)),
        Err(_) => Err(ProxyError::ConnectTimeout),
    }
}

/// Turn on TCP keep-alive probes: the first after `period` without traffic, then one every
/// `period` (the kernel's probe count, 9 by default, before it gives up on the connection).
fn keep_alive_probes(s: &TcpStream, period: std::time::Duration) {
    // Whole seconds, at least one: the kernel's unit.
    let period = Some(period.max(std::time::Duration::from_secs(1)));
    if let Err(e) = s.set_tcp_keepalive(period, period, None) {
        tracing::debug!("TCP keep-alive on an upstream connection: {e}");
    }
}

/// The client side of a TLS handshake with an `https://` server, within `limit`.
async fn tls_connect(
    w: &Worker,
    tcp: TcpStream,
    name: &rustls::pki_types::ServerName<'static>,
    limit: std::time::Duration,
) -> Result<NetStream, ProxyError> {
    let handshake = TlsStream::connect(tcp, w.cfg.upstream_tls.clone(), name.clone());
    match monoio::time::timeout(limit, handshake).await {
        Ok(Ok(s)) => Ok(NetStream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            let why = match e {
                HandshakeError::Tls(e) => e.to_string(),
                HandshakeError::Io(e) => e.to_string(),
                HandshakeError::Closed => "the server closed the connection".to_string(),
            };
            let reason = format!("TLS handshake with {}: {why}", name.to_str());
            tracing::warn!("{reason}");
            Err(ProxyError::Connect(std::io::Error::other(reason)))
        }
        Err(_) => Err(ProxyError::ConnectTimeout),
    }
}

async fn attempt(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    target: Target<'_>,
    body: &mut BodyState,
    fresh_only: bool,
    gate: &RetryGate<'_>,
) -> Outcome {
    let Target { be, server, .. } = target;
    let addr = server.addr;
    c.rec.upstream_attempt(addr);
    c.early_answer = false;
    let pooled = if fresh_only {
        None
    } else {
        w.upstreams.take(
            addr,
            server.tls.is_some(),
            be.settings.keepalive_period,
            w.idle_timers.now(),
        )
    };
    let reused = pooled.is_some();
    let (mut up, watch) = match pooled {
        Some((s, watch)) => (s, watch),
        None => {
            let dial = be.settings.dial_timeout.unwrap_or(w.cfg.timeouts.connect());
            // Out of line: see `dial_server`.
            let handshake = be.settings.tls_handshake_timeout.unwrap_or(dial);
            let probes = be.settings.keepalive_period;
            let err = Box::pin(dial_server(w, server, addr, dial, handshake, probes)).await;
            match err {
                Ok(s) => (s, None),
                Err(err) => {
                    return Outcome::Failed {
                        err,
                        reached: Reached::Nothing,
                    }
                }
            }
        }
    };
    w.stats.upstream_request(reused);
    Upstreams::count_connection(gate.flight, reused);

    // Head plus the body bytes that came with it, in one writev.
    let g = build_upstream_head(c, w, head, target, body);
    // A whole request on a pooled plain connection whose receive is armed already goes out as
    // a send that completes only whole (or failed); it is collected once the answer's first
    // read completed, so the exchange wakes once for both.
    let (armed, watch) = match watch {
        Some(Watch::Recv(read))
            if w.send_vectorized
                && body.complete
                && !body.has_retained()
                && up.plain().is_some() =>
        {
            (Some(read), None)
        }
        watch => (None, watch),
    };
    // Some(None): the answer's first read timed out.
    let mut answered = None;
    let mut submitted_at = None;
    let sent = match (armed, up.plain()) {
        (Some(read), Some(tcp)) => {
            let total = g.remaining();
            let send = match tcp.send_whole_owned(g) {
                Ok(send) => send,
                Err(e) => {
                    // The buffers went with the refused send.
                    c.rbuf = Vec::with_capacity(w.cfg.idle_buffer_bytes);
                    body.forfeit();
                    return Outcome::Failed {
                        err: ProxyError::UpstreamIo(e),
                        reached: Reached::Server,
                    };
                }
            };
            submitted_at = Some(Upstreams::timed(gate.flight).then(std::time::Instant::now));
            let read_timeout = upstream_read_timeout(w, be);
            answered = Some(w.timed(read_timeout, read).await);
            let sent = w.timed(w.cfg.timeouts.send(), send).await;
            sent.map(|(res, g)| match res {
                Ok(n) if n == total => (Ok(()), g),
                Ok(_) => (Err(std::io::ErrorKind::WriteZero.into()), g),
                Err(e) => (Err(e), g),
            })
        }
        _ => {
            w.timed(w.cfg.timeouts.send(), write_gather(&mut up, g))
                .await
        }
    };
    let res = match sent {
        Some((res, g)) => {
            let (rbuf, extra, iov) = g.into_parts();
            c.rbuf = rbuf;
            c.extra = extra;
            c.iov = iov;
            res
        }
        None => {
            // The buffers went with the cancelled write; the request cannot be replayed.
            c.rbuf = Vec::with_capacity(w.cfg.idle_buffer_bytes);
            body.forfeit();
            return Outcome::Failed {
                err: ProxyError::UpstreamTimeout,
                reached: Reached::Server,
            };
        }
    };
    // Timed for the balancer from the moment the request is out (submitted, when the send was
    // collected after the answer).
    let sent_at =
        submitted_at.unwrap_or_else(|| Upstreams::timed(gate.flight).then(std::time::Instant::now));
    if let Err(e) = res {
        return if reused {
            Outcome::Failed {
                err: ProxyError::Stale,
                reached: Reached::Nothing,
            }
        } else {
            Outcome::Failed {
                err: ProxyError::UpstreamIo(e),
                reached: Reached::Server,
            }
        };
    }
    if let Some(None) = answered {
        return Outcome::Failed {
            err: ProxyError::UpstreamTimeout,
            reached: Reached::Server,
        };
    }
    // A retry sends the body bytes an earlier attempt kept.
    let retained = body.take_retained();
    if !retained.is_empty() {
        match w.timed(w.cfg.timeouts.send(), up.write_all(retained)).await {
            Some((Ok(_), back)) => body.give_retained(back),
            Some((Err(e), back)) => {
                body.give_retained(back);
                return Outcome::Failed {
                    err: ProxyError::UpstreamIo(e),
                    reached: Reached::Server,
                };
            }
            None => {
                body.forfeit();
                return Outcome::Failed {
                    err: ProxyError::UpstreamTimeout,
                    reached: Reached::Server,
                };
            }
        }
    }

    if !body.complete {
        if head.expect_continue && head.version == Version::Http11 && !c.continue_sent {
            let sent = w
                .timed(w.cfg.timeouts.send(), c.stream.write_all(CONTINUE_100))
                .await;
            if !matches!(sent, Some((Ok(_), _))) {
                return Outcome::Aborted;
            }
            c.continue_sent = true;
            c.rec.tx += CONTINUE_100.len() as u64;
        }
        match stream_request_body(c, w, &mut up, body).await {
            Ok(()) => {}
            // The upstream stopped taking the body: it may have answered early (413, 401...).
            // Relay that answer if there is one (or retry it, as any response); the client's
            // unread body means the client connection closes afterwards (with a lingering
            // close so the answer arrives).
            Err(ProxyError::BodyWrite(e)) => {
                c.early_answer = true;
                let done = Done {
                    consume_end: 0,
                    reused,
                    replayable: body.replayable(),
                    force_close: true,
                    sent_at,
                    watch,
                    answered: None,
                };
                return match relay_response(c, w, head, target, up, done, gate).await {
                    Outcome::Failed { .. } => Outcome::Failed {
                        err: ProxyError::BodyWrite(e),
                        reached: Reached::Server,
                    },
                    Outcome::Retry { status } => Outcome::Retry { status },
                    answered => {
                        c.linger = true;
                        answered
                    }
                };
            }
            Err(err) => {
                return Outcome::Failed {
                    err,
                    reached: Reached::Server,
                }
            }
        }
    }

    let done = Done {
        consume_end: body.buffered_end,
        reused,
        replayable: body.replayable(),
        force_close: false,
        sent_at,
        watch,
        answered: answered.flatten(),
    };
    relay_response(c, w, head, target, up, done, gate).await
}
