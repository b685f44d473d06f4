//! What the data plane remembers about the request in flight on a connection, for the
//! counters and the access log: frontend, upstream, status, bytes and timing. Filled in where
//! each fact becomes known and accounted once, when the request is done.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::access_log::Entry;
use super::conn::Conn;
use super::stats::FrontendSeries;
use super::worker::Worker;
use crate::http::{FieldKind, RequestHead};

/// Accounting of one spell of activity on a connection (a cold connection starts a new spell
/// with every byte accounted). Byte counts are totals of the spell; a request's share is the
/// difference between its start and end, corrected for pipelined bytes read ahead.
#[derive(Default)]
pub struct RequestRecord {
    /// Status of the response sent to the client; 0 while none was sent.
    pub status: u16,
    pub frontend: Option<Rc<FrontendSeries>>,
    pub upstream: Option<SocketAddr>,
    /// Bytes read from and written to the client on this connection.
    pub rx: u64,
    pub tx: u64,
    rx_accounted: u64,
    tx_accounted: u64,
    rx_mark: u64,
    tx_mark: u64,
    /// Bytes of the next request already in the read buffer when this one ended.
    read_ahead: usize,
    started: Option<Instant>,
    /// Access log only (`None` when it is off).
    log: Option<LogScratch>,
}

/// What the access log needs from the request head, copied before the buffer is reused.
struct LogScratch {
    time: SystemTime,
    /// method, then target, then the client's or ringway's request id.
    text: Vec<u8>,
    method_end: usize,
    target_end: usize,
    has_id: bool,
    upstream_started: Option<Instant>,
    upstream_duration: Option<Duration>,
}

impl RequestRecord {
    /// When the request in flight began (its head's first byte), on the worker's clock.
    pub fn started(&self) -> Instant {
        self.started.unwrap_or_else(Instant::now)
    }

    /// A request was forwarded to `addr`.
    pub fn upstream_attempt(&mut self, addr: SocketAddr) {
        self.upstream = Some(addr);
        if let Some(l) = &mut self.log {
            l.upstream_started = Some(Instant::now());
        }
    }

    /// The upstream's response head arrived.
    pub fn upstream_answered(&mut self) {
        if let Some(l) = &mut self.log {
            l.upstream_duration = l.upstream_started.map(|t| t.elapsed());
        }
    }

    /// The request id ringway generated for the upstream (the last bytes of `extra`).
    pub fn generated_request_id(&mut self, id: &[u8]) {
        if let Some(l) = &mut self.log {
            if !l.has_id {
                l.text.truncate(l.target_end);
                l.text.extend_from_slice(id);
                l.has_id = true;
            }
        }
    }
}

impl Conn {
    /// A request head was read (`head` is `None` when it could not be parsed).
    pub(super) fn begin_request(&mut self, w: &Worker, head: Option<&RequestHead>) {
        let r = &mut self.rec;
        r.status = 0;
        r.frontend = None;
        r.upstream = None;
        // Read when the head's first byte arrived (`Conn::read_head`).
        r.started = Some(w.idle_timers.now());
        if !w.access_log.enabled() {
            return;
        }
        let mut text = match r.log.take() {
            Some(l) => l.text,
            None => w.access_log.take_scratch(),
        };
        text.clear();
        let (mut method_end, mut target_end, mut has_id) = (0, 0, false);
        if let Some(h) = head {
            text.extend_from_slice(h.method_span.of(&self.rbuf));
            method_end = text.len();
            text.extend_from_slice(h.target.of(&self.rbuf));
            target_end = text.len();
            if let Some(f) = self
                .fields
                .iter()
                .find(|f| f.kind == FieldKind::XRequestId && !f.drop)
            {
                text.extend_from_slice(f.value.of(&self.rbuf));
                has_id = true;
            }
        }
        r.log = Some(LogScratch {
            time: SystemTime::now(),
            text,
            method_end,
            target_end,
            has_id,
            upstream_started: None,
            upstream_duration: None,
        });
    }

    /// The request is done: count it and write its access-log line. `closing` when the
    /// connection closes after it (unread bytes in the buffer then belong to no request).
    pub(super) fn end_request(&mut self, w: &Worker, parsed: bool, closing: bool) {
        w.reclaim.request_served();
        let r = &mut self.rec;
        let read_ahead = if closing { 0 } else { self.rbuf.len() };
        let bytes_in = (r.rx - r.rx_mark + r.read_ahead as u64).saturating_sub(read_ahead as u64);
        let bytes_out = r.tx - r.tx_mark;
        r.rx_mark = r.rx;
        r.tx_mark = r.tx;
        r.read_ahead = read_ahead;
        account_bytes(w, r);
        let Some(started) = r.started.take() else {
            return;
        };
        // A parsed request the client left before any response: nginx's 499.
        let status = match (r.status, parsed) {
            (0, true) => 499,
            (0, false) => return,
            (s, _) => s,
        };
        let elapsed = w.idle_timers.refresh().saturating_duration_since(started);
        let series = r.frontend.take().unwrap_or_else(|| w.stats.no_route());
        w.stats.request(&series, status, elapsed);
        if let Some(l) = &r.log {
            let has_head = l.target_end > 0;
            w.access_log.write(&Entry {
                time: l.time,
                client: self.peer,
                method: has_head.then(|| &l.text[..l.method_end]),
                path: has_head.then(|| &l.text[l.method_end..l.target_end]),
                frontend: (&*series.id != super::stats::NO_ROUTE_FRONTEND).then_some(&*series.id),
                upstream: r.upstream,
                status,
                bytes_in,
                bytes_out,
                duration: elapsed,
                upstream_duration: l.upstream_duration,
                request_id: l.has_id.then(|| &l.text[l.target_end..]),
            });
        }
    }

    /// The connection closes or goes cold: count bytes no request was charged with and give
    /// the access-log scratch back, so a cold connection holds none.
    pub(super) fn end_spell(&mut self, w: &Worker) {
        account_bytes(w, &mut self.rec);
        if let Some(l) = self.rec.log.take() {
            w.access_log.give_scratch(l.text);
        }
    }
}

fn account_bytes(w: &Worker, r: &mut RequestRecord) {
    w.stats.bytes(r.rx - r.rx_accounted, r.tx - r.tx_accounted);
    r.rx_accounted = r.rx;
    r.tx_accounted = r.tx;
}
