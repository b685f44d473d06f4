//! One proxied exchange: choose a server, write the forwarded head from slices of the received
//! bytes, stream the request body, relay the response head and stream its body back. Retries
//! on another server only while that is safe.

mod body;
mod response;
mod splice;
mod upstream_head;

use body::stream_request_body;
pub use body::BodyState;
use response::{relay_response, Done};
use upstream_head::build_upstream_head;
pub use upstream_head::request_id;

use std::net::SocketAddr;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::conn::{Conn, Next};
use super::error::ProxyError;
use super::gather::write_gather;
use super::respond::CONTINUE_100;
use super::worker::Worker;
use crate::edge::Rewrite;
use crate::http::request::Method;
use crate::http::{RequestHead, Version};
use crate::route::{Backend, Frontend, Server};

/// Servers already tried for this request (no allocation for the common case).
struct Tried {
    addrs: [SocketAddr; 8],
    len: usize,
}

impl Default for Tried {
    fn default() -> Self {
        Tried {
            addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); 8],
            len: 0,
        }
    }
}

impl Tried {
    fn push(&mut self, a: SocketAddr) {
        if self.len < self.addrs.len() {
            self.addrs[self.len] = a;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }
}

pub(super) enum Outcome {
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
    rewrite: Option<Rewrite<'_>>,
) -> Next {
    let mut tried = Tried::default();
    let mut attempts_left = 1 + w.cfg.upstream.max_retries;
    let mut fresh_only = false;
    let mut last_err = None;
    loop {
        let Some(server) = w.upstreams.pick(be, tried.as_slice(), w.idle_timers.now()) else {
            // Every server was tried: the client hears why the last attempt failed.
            let err = last_err.unwrap_or(ProxyError::NoServer);
            return finish_failed(c, w, head, body, err).await;
        };
        if last_err.is_some() {
            w.stats.upstream_retry();
        }
        attempts_left -= 1;
        let target = Target {
            fe,
            be,
            server,
            rewrite,
        };
        match attempt(c, w, head, target, body, fresh_only).await {
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

async fn attempt(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    target: Target<'_>,
    body: &mut BodyState,
    fresh_only: bool,
) -> Outcome {
    let Target { be, server, .. } = target;
    let addr = server.addr;
    c.rec.upstream_attempt(addr);
    let replayable = body.complete;
    let idempotent = head.method.is_idempotent();
    let pooled = if fresh_only {
        None
    } else {
        w.upstreams
            .take(addr, be.settings.keepalive_period, w.idle_timers.now())
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
    let g = build_upstream_head(c, w, head, target, body);
    let sent = w
        .timed(w.cfg.timeouts.send(), write_gather(&mut up, g))
        .await;
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
            let sent =
                monoio::time::timeout(w.cfg.timeouts.send(), c.stream.write_all(CONTINUE_100))
                    .await;
            if !matches!(sent, Ok((Ok(_), _))) {
                return Outcome::Aborted;
            }
            c.rec.tx += CONTINUE_100.len() as u64;
        }
        match stream_request_body(c, w, &mut up, body).await {
            Ok(()) => {}
            // The upstream stopped taking the body: it may have answered early (413, 401...).
            // Relay that answer if there is one; the client's unread body means the client
            // connection closes afterwards (with a lingering close so the answer arrives).
            Err(ProxyError::BodyWrite(e)) => {
                c.linger = true;
                let done = Done {
                    consume_end: 0,
                    reused,
                    replayable: false,
                    idempotent: false,
                    force_close: true,
                };
                return match relay_response(c, w, head, be, server, up, done).await {
                    Outcome::Failed { .. } => Outcome::Failed {
                        err: ProxyError::BodyWrite(e),
                        retry: false,
                    },
                    answered => answered,
                };
            }
            Err(err) => return Outcome::Failed { err, retry: false },
        }
    }

    let done = Done {
        consume_end: body.buffered_end,
        reused,
        replayable: replayable && body.complete,
        force_close: false,
        idempotent,
    };
    relay_response(c, w, head, be, server, up, done).await
}
