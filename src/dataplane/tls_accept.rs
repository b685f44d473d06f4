//! The TLS handshake of a new client connection on a TLS listener: bounded in time from the
//! client's first byte, bounded in number per worker, counted in the metrics.
//!
//! A worker runs at most `max_handshakes` at once. Past that, the *oldest* unfinished
//! handshake is closed to make room, not the newcomer: a client that completes its handshake
//! in a round trip is served even while thousands of connections stall theirs, and the memory
//! their TLS state takes stays bounded. A connection holds no TLS state before its first byte.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use monoio::net::TcpStream;

use super::stats::HandshakeEnd;
use super::worker::Worker;
use crate::tls::stream::{HandshakeError, TlsStream};
use crate::tls::Terminator;

/// The handshakes a worker runs, oldest first.
#[derive(Default)]
pub struct Handshakes {
    running: Cell<usize>,
    queue: RefCell<VecDeque<Weak<Eviction>>>,
}

/// Set when a newer handshake needs the slot of this one.
#[derive(Default)]
struct Eviction {
    evicted: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Future for &Eviction {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.evicted.get() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Handshakes {
    /// Take a slot, closing the oldest running handshake when all `max` are taken.
    fn enter(&self, max: usize) -> (Slot<'_>, Rc<Eviction>, bool) {
        let mut evicted = false;
        if self.running.get() >= max {
            let mut queue = self.queue.borrow_mut();
            while let Some(old) = queue.pop_front() {
                if let Some(old) = old.upgrade() {
                    old.evicted.set(true);
                    if let Some(w) = old.waker.take() {
                        w.wake();
                    }
                    evicted = true;
                    break;
                }
            }
        }
        let mine = Rc::new(Eviction::default());
        let mut queue = self.queue.borrow_mut();
        // Entries of handshakes that ended are dropped as they reach the front.
        while queue.front().is_some_and(|w| w.strong_count() == 0) {
            queue.pop_front();
        }
        if queue.len() > 2 * max {
            queue.retain(|w| w.strong_count() > 0);
        }
        queue.push_back(Rc::downgrade(&mine));
        self.running.set(self.running.get() + 1);
        (Slot(self), mine, evicted)
    }
}

/// A running handshake's slot; released when the handshake ends however it ends.
struct Slot<'a>(&'a Handshakes);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get() - 1);
    }
}

/// The established connection, or `None` (the socket is closed) when the client sent nothing
/// in time, the worker runs too many handshakes, or the handshake failed.
pub async fn accept(w: &Worker, tcp: TcpStream, t: &Arc<Terminator>) -> Option<TlsStream> {
    let state = t.current();
    // No TLS state exists until the client's first byte: a silent connection costs a socket.
    let deadline = w.idle_timers.now() + state.handshake;
    monoio::select! {
        r = tcp.readable(false) => r.ok()?,
        _ = w.idle_timers.until(deadline) => {
            w.stats.handshake(HandshakeEnd::Timeout, None);
            return None;
        }
        _ = w.shutdown.wait() => return None,
    }
    let (_slot, eviction, evicted_other) = w.handshakes.enter(state.max_handshakes);
    if evicted_other {
        w.stats.handshake(HandshakeEnd::Evicted, None);
    }
    let started = std::time::Instant::now();
    let deadline = w.idle_timers.refresh() + state.handshake;
    let result = monoio::select! {
        r = TlsStream::accept(tcp, &state) => r,
        _ = w.idle_timers.until(deadline) => {
            w.stats.handshake(HandshakeEnd::Timeout, None);
            return None;
        }
        // Closed to make room for a newer handshake (counted by the one that needed it).
        _ = &*eviction => return None,
        _ = w.shutdown.wait() => return None,
    };
    match result {
        Ok(s) => {
            let c = s.connection();
            let tls13 = c.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            let resumed = c.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            w.stats
                .handshake(HandshakeEnd::Ok { tls13, resumed }, Some(started.elapsed()));
            Some(s)
        }
        Err(e) => {
            let end = match e {
                HandshakeError::Closed | HandshakeError::Io(_) => HandshakeEnd::Closed,
                HandshakeError::Tls(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    HandshakeEnd::Failed
                }
            };
            w.stats.handshake(end, None);
            None
        }
    }
}
