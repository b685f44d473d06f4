//! The upstream's response: its head read and checked, interim responses passed on, the head
//! relayed as slices plus the proxy's Connection line, the body streamed back (spliced when it
//! is large and length-framed); or the switch to a tunnel after a 101.

use super::super::net_stream::NetStream;
use super::super::upstream::Watch;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::PendingRead;

use super::super::conn::{Conn, Next};
use super::super::error::ProxyError;
use super::super::gather::{write_gather, Gather};
use super::super::worker::Worker;
use super::splice::{splice_exact, Count, Deadlines, SpliceError};
use super::{Outcome, Reached, RetryGate, Target};
use crate::http::request::Method;
use crate::http::upgrade;
use crate::http::{
    parse_response, BodyFraming, ChunkedDecoder, HeaderField, HttpError, Parsed, RequestHead,
    ResponseHead, Version,
};
use crate::route::Backend;

/// How long a read of a server's answer may wait: the backend's own setting, or the profile's.
pub(super) fn upstream_read_timeout(w: &Worker, be: &Backend) -> std::time::Duration {
    be.settings
        .read_timeout
        .unwrap_or(w.cfg.timeouts.upstream_read())
}

/// Read one response head from the upstream into `ubuf`, passing interim (1xx) responses on.
/// A pooled connection's armed receive is the first read, and its buffer becomes `ubuf`
/// (empty until then). A failure means the request went out: the upstream may have acted on
/// it.
#[allow(clippy::too_many_arguments)]
async fn read_response_head(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    be: &Backend,
    up: &mut NetStream,
    armed: Option<FirstRead>,
    ubuf: &mut Vec<u8>,
    reused: bool,
) -> Result<ResponseHead, Outcome> {
    let limits = w.cfg.upstream_head_limits;
    let read_timeout = upstream_read_timeout(w, be);
    let failed = |err| {
        Err(Outcome::Failed {
            err,
            reached: Reached::Server,
        })
    };
    let mut scanned = 0;
    let mut got_any = false;
    if let Some(first) = armed {
        let (res, back) = match first {
            FirstRead::Armed(armed) => match w.timed(read_timeout, armed).await {
                Some(done) => done,
                None => return failed(ProxyError::UpstreamTimeout),
            },
            FirstRead::Done(res, back) => (res, back),
        };
        *ubuf = back;
        got_any = read_succeeded(res, got_any, reused)?;
    }
    // The answer cannot be there yet when its first read is issued, right after the request:
    // that read polls first instead of trying the socket (where the kernel has the flag).
    // Later reads (the rest of a head, bodies) usually find data waiting and try at once.
    up.set_recv_poll_first(w.recv_poll_first && ubuf.is_empty());
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
                        let write = c.stream.write_all(interim);
                        let sent = w.timed(w.cfg.timeouts.send(), write).await;
                        if !matches!(sent, Some((Ok(_), _))) {
                            return Err(Outcome::Aborted);
                        }
                        c.rec.tx += rh.head_len as u64;
                    }
                    ubuf.drain(..rh.head_len);
                    scanned = 0;
                    continue;
                }
                Err(e) => return failed(ProxyError::BadResponse(e)),
            }
        }
        if ubuf.len() == ubuf.capacity() {
            let want = (ubuf.capacity() * 2).min(limits.max_head_bytes + 1);
            if want <= ubuf.len() {
                let err =
                    ProxyError::BadResponse(HttpError::HeadTooLarge("response head too large"));
                return failed(err);
            }
            ubuf.reserve_exact(want - ubuf.len());
        }
        let buf = std::mem::take(ubuf);
        let (len, cap) = (buf.len(), buf.capacity());
        let Some((res, back)) = w
            .timed(read_timeout, up.read(buf.slice_mut(len..cap)))
            .await
        else {
            return failed(ProxyError::UpstreamTimeout);
        };
        *ubuf = back.into_inner();
        up.set_recv_poll_first(false);
        got_any = read_succeeded(res, got_any, reused)?;
    }
}

/// Whether a read of the answer got bytes (`Ok(true)`), or how the exchange failed.
fn read_succeeded(
    res: std::io::Result<usize>,
    got_any: bool,
    reused: bool,
) -> Result<bool, Outcome> {
    let err = match res {
        Ok(0) | Err(_) if !got_any && reused => ProxyError::Stale,
        Ok(0) => ProxyError::UpstreamClosed,
        Err(e) => ProxyError::UpstreamIo(e),
        Ok(_) => return Ok(true),
    };
    Err(Outcome::Failed {
        err,
        reached: Reached::Server,
    })
}

/// Where the request stands once its body was sent.
pub(super) struct Done {
    /// Bytes of `rbuf` the request occupies (pipelined bytes follow).
    pub consume_end: usize,
    pub reused: bool,
    /// Another attempt could send the request whole.
    pub replayable: bool,
    /// The client connection closes after this response (its request was not read whole).
    pub force_close: bool,
    /// When the request went out, for the balancer's estimate of the server (when timed).
    pub sent_at: Option<std::time::Instant>,
    /// A pooled connection's watch: an armed receive is the answer's first read; a poll is
    /// handed back to the pool with the connection.
    pub watch: Option<Watch>,
    /// The answer's first read, already completed (awaited before the request's send was
    /// collected): its result and buffer.
    pub answered: Option<(std::io::Result<usize>, Vec<u8>)>,
}

/// The answer's first read when it was set up before the request went out.
enum FirstRead {
    /// A pooled connection's armed receive.
    Armed(PendingRead<Vec<u8>>),
    /// One that completed already.
    Done(std::io::Result<usize>, Vec<u8>),
}

pub(super) async fn relay_response(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    target: Target<'_>,
    mut up: NetStream,
    mut d: Done,
    gate: &RetryGate<'_>,
) -> Outcome {
    let Target { be, server, .. } = target;
    // An armed receive is the answer's first read and brings its own buffer; a poll goes
    // back to the pool with the connection.
    let (armed, mut ubuf) = match (d.answered.take(), d.watch.take()) {
        (Some((res, buf)), _) => (Some(FirstRead::Done(res, buf)), Vec::new()),
        (None, Some(Watch::Recv(armed))) => (Some(FirstRead::Armed(armed)), Vec::new()),
        (None, poll) => {
            d.watch = poll;
            (None, w.bufs.take())
        }
    };
    let answer = read_response_head(c, w, head, be, &mut up, armed, &mut ubuf, d.reused);
    let rh = match answer.await {
        Ok(rh) => rh,
        Err(o) => {
            w.bufs.give(ubuf);
            return o;
        }
    };
    c.rec.upstream_answered();
    // A 5xx says nothing about the server's speed (a server failing fast must not look
    // fast to the balancer); ejection deals with it.
    if let Some(sent) = d.sent_at {
        let now = std::time::Instant::now();
        if rh.status < 500 {
            w.upstreams.observe(gate.flight, now - sent, now);
        } else {
            w.upstreams.answered_failing(gate.flight, now);
        }
    }
    if rh.status != 101 && gate.retries_status(w, rh.status, d.replayable) {
        discard_response(w, target, up, ubuf, &rh, &mut d);
        return Outcome::Retry { status: rh.status };
    }

    if rh.status == 101 {
        // A switch only to a protocol the request offered: anything else would open a tunnel
        // past the listener's upgrade rules. The upstream connection is dropped with `up`.
        let why = if d.force_close {
            // The request was not sent whole: its rest would go into the tunnel.
            Some("101 before the request body was taken")
        } else if c.upgrade_offer.is_empty() {
            Some("101 without an upgrade request")
        } else if !upgrade::switched_to_offered(&ubuf, &c.resp_fields, &c.upgrade_offer) {
            Some("101 to a protocol the request did not offer")
        } else {
            None
        };
        if let Some(why) = why {
            w.bufs.give(ubuf);
            let err = ProxyError::BadResponse(HttpError::Malformed(why));
            return Outcome::Failed {
                err,
                reached: Reached::Server,
            };
        }
        return start_tunnel(c, w, up, ubuf, d.consume_end).await;
    }

    let client_keep =
        head.keep_alive && !d.force_close && !w.closing() && rh.framing != BodyFraming::UntilClose;
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
                    reached: Reached::Server,
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
    let status_end = rh.status_line.end as usize + 2;
    // The received head is not read again: the forwarded one usually fits in its place, next
    // to the body bytes, and goes out as one buffer.
    match close_up_head(
        &mut g.data,
        status_end,
        &c.resp_fields,
        &g.extra,
        rh.head_len,
    ) {
        Some(start) => g.push_data(start, rh.head_len + first_k),
        None => {
            g.push_data(0, status_end);
            for f in &c.resp_fields {
                if !f.drop {
                    g.push_data(f.line.start as usize, f.line.end as usize);
                }
            }
            let extra_len = g.extra.len();
            g.push_extra(0, extra_len);
            g.push_static(b"\r\n");
            g.push_data(rh.head_len, rh.head_len + first_k);
        }
    }
    let head_bytes = g.remaining() as u64;
    let sent = w
        .timed(w.cfg.timeouts.send(), write_gather(&mut c.stream, g))
        .await;
    let mut ubuf = match sent {
        Some((Ok(()), g)) => {
            c.rec.status = rh.status;
            c.rec.tx += head_bytes;
            let (ubuf, extra, iov) = g.into_parts();
            c.extra = extra;
            c.iov = iov;
            ubuf
        }
        _ => return Outcome::Aborted,
    };
    let read_timeout = upstream_read_timeout(w, be);
    // Only bytes that cross unchanged can be spliced: neither side may be TLS.
    let plain = c.stream.plain().is_some() && up.plain().is_some();
    if !done && plain && matches!(rh.framing, BodyFraming::Length(_)) {
        if let (Some(mut pipe), Some(client), Some(from)) =
            (w.pipes.lease(remaining), c.stream.plain(), up.plain())
        {
            let deadlines = Deadlines {
                timers: &w.idle_timers,
                read: read_timeout,
                send: w.cfg.timeouts.send(),
            };
            let tx = &mut c.rec.tx;
            let moved = splice_exact(
                from,
                client,
                &mut pipe,
                remaining,
                deadlines,
                tx,
                Count::Written,
            );
            match moved.await {
                Ok(()) => done = true,
                Err(e) => {
                    w.give_buf(ubuf);
                    match e {
                        SpliceError::ReadTimeout => {
                            w.stats.upstream_failed(&ProxyError::UpstreamTimeout)
                        }
                        SpliceError::ReadEnded => {
                            w.upstreams.failure(be, server, w.idle_timers.now())
                        }
                        SpliceError::Write(_) => {}
                    }
                    return Outcome::Aborted;
                }
            }
        }
    }
    if !done {
        // The rest of the body moves through a large buffer: fewer reads and writes per byte.
        w.bufs
            .give(std::mem::replace(&mut ubuf, w.body_bufs.take()));
    }
    while !done {
        ubuf.clear();
        let cap = ubuf.capacity();
        let want = match rh.framing {
            BodyFraming::Length(_) => remaining.min(cap as u64) as usize,
            _ => cap,
        };
        let (res, back) = match w
            .timed(read_timeout, up.read(ubuf.slice_mut(0..want)))
            .await
        {
            Some(r) => r,
            None => {
                w.stats.upstream_failed(&ProxyError::UpstreamTimeout);
                return Outcome::Aborted;
            }
        };
        ubuf = back.into_inner();
        let n = match res {
            Ok(0) if rh.framing == BodyFraming::UntilClose => break,
            Ok(0) | Err(_) => {
                w.upstreams.failure(be, server, w.idle_timers.now());
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
        match w.timed(w.cfg.timeouts.send(), write).await {
            Some((Ok(_), back)) => ubuf = back.into_inner(),
            _ => return Outcome::Aborted,
        }
        c.rec.tx += k as u64;
    }
    // An upstream that answered before the whole request body was sent still expects the rest
    // of it: that connection cannot carry another request.
    if rh.keep_alive && !surplus && !d.force_close && rh.framing != BodyFraming::UntilClose {
        repool(w, target, up, &mut d, ubuf);
    } else {
        w.give_buf(ubuf);
    }
    c.consume(d.consume_end);
    Outcome::Done(if client_keep {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// Moves the forwarded response head (the status line `head[..status_end]`, the kept
/// `fields`, the proxy's `lines`, the blank line) within `head` so that it ends where the
/// received head ended, at `head_len`, right before the body bytes that came with it: the
/// kernel sends one buffer cheaper than an iovec array. Returns where the head now starts,
/// or `None` (nothing moved) when the proxy's lines do not fit in the dropped lines after the
/// last kept one: moving a piece could then overwrite one still to be moved.
///
/// Pieces move towards the end, last first, adjacent kept lines together; the blank line
/// stays where it was.
fn close_up_head(
    head: &mut [u8],
    status_end: usize,
    fields: &[HeaderField],
    lines: &[u8],
    head_len: usize,
) -> Option<usize> {
    let kept_end = fields
        .iter()
        .rev()
        .find(|f| !f.drop)
        .map_or(status_end, |f| f.line.end as usize);
    // Every line between the last kept one and the blank line is dropped.
    if lines.len() > head_len - 2 - kept_end {
        return None;
    }
    let mut dest = head_len - 2 - lines.len();
    head[dest..dest + lines.len()].copy_from_slice(lines);
    // The kept lines, then the status line, in runs of adjacent lines.
    let (mut run_start, mut run_end) = (kept_end, kept_end);
    let kept = fields.iter().rev().filter(|f| !f.drop).map(|f| f.line);
    for (start, end) in kept
        .map(|l| (l.start as usize, l.end as usize))
        .chain(std::iter::once((0, status_end)))
    {
        if end != run_start {
            dest -= run_end - run_start;
            head.copy_within(run_start..run_end, dest);
            run_end = end;
        }
        run_start = start;
    }
    dest -= run_end - run_start;
    head.copy_within(run_start..run_end, dest);
    Some(dest)
}

/// Drop a response the failover predicate retries. Its connection goes back to the pool when
/// the whole (small) body is already read and nothing follows it; otherwise it is closed,
/// since reading a body nobody wants costs more than a new connection.
fn discard_response(
    w: &Worker,
    target: Target<'_>,
    up: NetStream,
    ubuf: Vec<u8>,
    rh: &ResponseHead,
    d: &mut Done,
) {
    let body = &ubuf[rh.head_len..];
    let whole = match rh.framing {
        BodyFraming::Empty => body.is_empty(),
        BodyFraming::Length(n) => body.len() as u64 == n,
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            matches!(decoder.advance(body), Ok(p) if p.done && p.consumed == body.len())
        }
        BodyFraming::UntilClose => false,
    };
    if whole && rh.keep_alive && !d.force_close {
        repool(w, target, up, d, ubuf);
    } else {
        w.bufs.give(ubuf);
    }
}

/// Return a connection to the pool after a clean exchange, lending it the exchange's I/O
/// buffer for its next answer (see [`crate::dataplane::upstream::Upstreams::put`]).
fn repool(w: &Worker, target: Target<'_>, up: NetStream, d: &mut Done, buf: Vec<u8>) {
    let now = w.idle_timers.now();
    let cap = target.be.settings.max_idle_per_host;
    let addr = target.server.addr;
    let spare = if w.bufs.owns(buf.capacity()) {
        w.upstreams
            .put(addr, up, d.watch.take(), Some(buf), cap, now)
    } else {
        w.upstreams.put(addr, up, d.watch.take(), None, cap, now);
        Some(buf)
    };
    if let Some(buf) = spare {
        w.give_buf(buf);
    }
}

/// Switch to a byte tunnel after the upstream's 101: pass the 101 head and anything after it to
/// the client, and any bytes the client sent after its request to the upstream.
async fn start_tunnel(
    c: &mut Conn,
    w: &Worker,
    mut up: NetStream,
    ubuf: Vec<u8>,
    consume_end: usize,
) -> Outcome {
    let sent = ubuf.len() as u64;
    let written = w
        .timed(w.cfg.timeouts.send(), c.stream.write_all(ubuf))
        .await;
    if !matches!(written, Some((Ok(_), _))) {
        return Outcome::Aborted;
    }
    c.rec.status = 101;
    c.rec.tx += sent;
    let early: Vec<u8> = c.rbuf[consume_end.min(c.rbuf.len())..].to_vec();
    if !early.is_empty() {
        let written = w.timed(w.cfg.timeouts.send(), up.write_all(early)).await;
        if !matches!(written, Some((Ok(_), _))) {
            return Outcome::Aborted;
        }
    }
    c.rbuf.clear();
    Outcome::Done(Next::Tunnel(up))
}

#[cfg(test)]
mod tests {
    use super::close_up_head;
    use crate::http::test_rng::Rng;
    use crate::http::{parse_response, HeadLimits, Parsed};

    #[test]
    fn a_forwarded_response_head_moved_next_to_its_body_is_the_head_with_its_lines_dropped() {
        // Heads of random fields, some of them hop-by-hop or named in `Connection` (dropped by
        // the parser), and proxy lines of random length: moved in place, the head is exactly
        // the kept lines plus the proxy's, and the body bytes after it are untouched.
        let names = [
            "Server",
            "Date",
            "Keep-Alive",
            "Connection",
            "X-A",
            "Content-Type",
            "TE",
        ];
        let mut rng = Rng(0x0c10_5e0f_0bea_d001);
        let mut fields = Vec::new();
        let (mut moved, mut refused) = (0, 0);
        for _ in 0..5000 {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            let n = rng.below(8);
            let length_at = rng.below(n + 1);
            for i in 0..n {
                if i == length_at {
                    raw.extend_from_slice(b"Content-Length: 4\r\n");
                }
                let name = names[rng.below(names.len())];
                let value = if name == "Connection" {
                    ["keep-alive", "close", "X-A", "Server"][rng.below(4)].to_string()
                } else {
                    "v".repeat(1 + rng.below(30))
                };
                raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            if length_at == n {
                raw.extend_from_slice(b"Content-Length: 4\r\n");
            }
            raw.extend_from_slice(b"\r\n");
            let head_len = raw.len();
            raw.extend_from_slice(b"bodyMORE");
            let Ok(Parsed::Complete(rh)) =
                parse_response(&raw, 0, false, &HeadLimits::default(), &mut fields)
            else {
                panic!("unparsed: {}", String::from_utf8_lossy(&raw));
            };
            let lines = b"Connection: close\r\n"[..rng.below(20)].to_vec();
            let status_end = rh.status_line.end as usize + 2;
            let mut expected = raw[..status_end].to_vec();
            for f in fields.iter().filter(|f| !f.drop) {
                expected.extend_from_slice(f.line.of(&raw));
            }
            expected.extend_from_slice(&lines);
            expected.extend_from_slice(b"\r\n");
            let mut buf = raw.clone();
            match close_up_head(&mut buf, status_end, &fields, &lines, head_len) {
                Some(start) => {
                    moved += 1;
                    assert_eq!(&buf[start..head_len], &expected[..]);
                    assert_eq!(&buf[head_len..], b"bodyMORE");
                }
                None => {
                    refused += 1;
                    assert_eq!(buf, raw, "nothing moved");
                    let dropped_after_last_kept = head_len
                        - 2
                        - fields
                            .iter()
                            .rev()
                            .find(|f| !f.drop)
                            .map_or(status_end, |f| f.line.end as usize);
                    assert!(lines.len() > dropped_after_last_kept);
                }
            }
        }
        assert!(
            moved > 1000 && refused > 200,
            "moved {moved}, refused {refused}"
        );
    }
}
