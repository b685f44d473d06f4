//! The request body as it streams from the client to the upstream: how much of it came with
//! the head, how much is still to come, the relay of the rest (spliced or buffered), and the
//! copy kept of a small body so that a retry can send it again.

use super::super::net_stream::NetStream;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use super::super::conn::Conn;
use super::super::error::ProxyError;
use super::super::worker::Worker;
use super::splice::{splice_exact, Count, Deadlines, SpliceError};
use crate::http::{BodyFraming, ChunkedDecoder, RequestHead};

/// The request body: how much of it is in the read buffer, how much is still to come, and
/// what was kept of the rest for a replay.
pub struct BodyState {
    framing: BodyFraming,
    /// End offset in `rbuf` of the body bytes received with the head.
    pub buffered_end: usize,
    /// The whole body has been read from the client.
    pub complete: bool,
    remaining: u64,
    decoder: ChunkedDecoder,
    max: Option<u64>,
    /// Body bytes read after those in `rbuf` (and sent upstream), kept so that another
    /// attempt can send them again.
    retained: Vec<u8>,
    /// How many body bytes may be kept; 0: none are, and the request is not sent again once
    /// body bytes went out.
    retain_limit: u64,
    /// Body bytes went upstream without being kept: no other attempt can send the request.
    unreplayable: bool,
}

impl BodyState {
    /// The body of the request at the start of `rbuf`. Up to `retain_limit` bytes of it are
    /// kept for a replay while it streams (0 when the request is never retried); a body
    /// declared larger than that is not kept at all.
    pub fn start(
        rbuf: &[u8],
        head: &RequestHead,
        max: Option<u64>,
        retain_limit: u64,
    ) -> Result<BodyState, ProxyError> {
        let after = &rbuf[head.head_len..];
        let mut s = BodyState {
            framing: head.framing,
            buffered_end: head.head_len,
            complete: true,
            remaining: 0,
            decoder: ChunkedDecoder::new(),
            max,
            retained: Vec::new(),
            retain_limit,
            unreplayable: false,
        };
        match head.framing {
            BodyFraming::Empty | BodyFraming::UntilClose => {}
            BodyFraming::Length(n) => {
                let have = (after.len() as u64).min(n);
                s.buffered_end = head.head_len + have as usize;
                s.remaining = n - have;
                s.complete = s.remaining == 0;
                if s.remaining > retain_limit {
                    s.retain_limit = 0;
                }
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

    /// Whether another attempt can send the request whole: every body byte that went out is
    /// in `rbuf` or kept.
    pub fn replayable(&self) -> bool {
        !self.unreplayable
    }

    /// Whether body bytes beyond `rbuf` were kept (a retry sends them after the head).
    pub fn has_retained(&self) -> bool {
        !self.retained.is_empty()
    }

    /// The bytes kept beyond `rbuf`, to send after the head on another attempt.
    pub fn take_retained(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.retained)
    }

    pub fn give_retained(&mut self, retained: Vec<u8>) {
        self.retained = retained;
    }

    /// Part of the request was lost (a write was cancelled with its buffers): it can neither
    /// be sent again nor its connection be read on.
    pub fn forfeit(&mut self) {
        self.complete = false;
        self.unreplayable = true;
        self.retained = Vec::new();
    }

    /// Body bytes that are about to go upstream: keep them while the limit allows.
    fn retain(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.unreplayable {
            return;
        }
        if self.retained.len() as u64 + bytes.len() as u64 > self.retain_limit {
            if self.retain_limit > 0 {
                tracing::debug!(
                    limit = self.retain_limit,
                    "request body larger than retry_body_bytes: it is not kept, so the request \
                     is not sent again"
                );
            }
            self.retained = Vec::new();
            self.retain_limit = 0;
            self.unreplayable = true;
            return;
        }
        self.retained.extend_from_slice(bytes);
    }

    /// A chunked body over the limit is refused as soon as a chunk-size line announces it,
    /// before that chunk's data (or, with the head, anything at all) goes upstream.
    fn check_size(&self) -> Result<(), ProxyError> {
        match self.max {
            Some(max) if self.decoder.announced_len() > max => Err(ProxyError::BodyTooLarge(max)),
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

/// Stream the rest of the request body from the client to the upstream: spliced when it is a
/// large Content-Length body that is not kept for a replay, otherwise buffer by buffer,
/// writing each buffer as it was read (and keeping a copy while the body is small enough to
/// replay). Pipelined bytes after the body are appended to `rbuf` (or, spliced, stay unread
/// in the socket); the request's own bytes at the start of `rbuf` stay for another attempt.
pub(super) async fn stream_request_body(
    c: &mut Conn,
    w: &Worker,
    up: &mut NetStream,
    body: &mut BodyState,
) -> Result<(), ProxyError> {
    if body.complete {
        return Ok(());
    }
    debug_assert_eq!(
        c.rbuf.len(),
        body.buffered_end,
        "an unfinished body fills rbuf"
    );
    // Only bytes that cross unchanged can be spliced: neither side may be TLS.
    let plain = c.stream.plain().is_some() && up.plain().is_some();
    if let (BodyFraming::Length(_), 0, true) = (body.framing, body.retain_limit, plain) {
        if let (Some(mut pipe), Some(client), Some(to)) =
            (w.pipes.lease(body.remaining), c.stream.plain(), up.plain())
        {
            let deadlines = Deadlines {
                timers: &w.idle_timers,
                read: w.cfg.timeouts.body(),
                send: w.cfg.timeouts.send(),
            };
            body.unreplayable = true;
            let rx = &mut c.rec.rx;
            let moved = splice_exact(
                client,
                to,
                &mut pipe,
                body.remaining,
                deadlines,
                rx,
                Count::Read,
            )
            .await;
            return match moved {
                Ok(()) => {
                    body.remaining = 0;
                    body.complete = true;
                    Ok(())
                }
                Err(SpliceError::ReadTimeout) => Err(ProxyError::ClientTimeout),
                Err(SpliceError::ReadEnded) => Err(ProxyError::ClientGone),
                Err(SpliceError::Write(e)) => Err(ProxyError::BodyWrite(e)),
            };
        }
    }
    let mut buf = w.body_bufs.take();
    loop {
        buf.clear();
        let cap = buf.capacity();
        let want = match body.framing {
            BodyFraming::Length(_) => (body.remaining.min(cap as u64)) as usize,
            _ => cap,
        };
        let read = c.stream.read(buf.slice_mut(0..want));
        let (res, back) = match w.timed(w.cfg.timeouts.body(), read).await {
            Some(r) => r,
            None => return Err(ProxyError::ClientTimeout),
        };
        buf = back.into_inner();
        let n = match res {
            Ok(0) | Err(_) => return Err(ProxyError::ClientGone),
            Ok(n) => n,
        };
        c.rec.rx += n as u64;
        let (k, done) = body.take(&buf[..n])?;
        // Kept before it is written: a write that fails leaves it for the next attempt. The
        // body's end is recorded before the write too, so that a retry after a failed last
        // write does not wait for body bytes the client already sent, and a pipelined request
        // behind it is kept.
        body.retain(&buf[..k]);
        if done {
            c.rbuf.extend_from_slice(&buf[k..n]);
            body.complete = true;
        }
        if k > 0 {
            let write = up.write_all(buf.slice(0..k));
            match w.timed(w.cfg.timeouts.send(), write).await {
                Some((Ok(_), back)) => buf = back.into_inner(),
                Some((Err(e), _)) => return Err(ProxyError::BodyWrite(e)),
                None => return Err(ProxyError::BodyWrite(std::io::ErrorKind::TimedOut.into())),
            }
        }
        if done {
            w.give_buf(buf);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, HeadLimits, Parsed};

    fn state(raw: &[u8], retain_limit: u64) -> BodyState {
        let mut fields = Vec::new();
        let Ok(Parsed::Complete(head)) = parse_request(raw, 0, &HeadLimits::default(), &mut fields)
        else {
            panic!("parses");
        };
        BodyState::start(raw, &head, None, retain_limit).expect("a body state")
    }

    #[test]
    fn a_small_streamed_body_is_kept_and_stays_replayable() {
        let mut b = state(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab",
            16,
        );
        assert!(!b.complete && b.replayable());
        assert_eq!(b.take(b"cdefghij").unwrap(), (8, true));
        b.retain(b"cdefghij");
        assert!(b.replayable());
        assert_eq!(b.take_retained(), b"cdefghij");
    }

    #[test]
    fn a_body_over_the_limit_is_not_kept_and_not_replayable_once_sent() {
        // Declared larger than the limit: nothing is kept from the start.
        let b = state(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
            16,
        );
        assert_eq!(b.retain_limit, 0);
        let mut b = b;
        b.retain(b"x");
        assert!(!b.replayable());
        // Chunked: kept until it grows past the limit.
        let mut b = state(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            8,
        );
        b.retain(b"5\r\nhello");
        assert!(b.replayable());
        b.retain(b"\r\n0\r\n\r\n");
        assert!(!b.replayable());
        assert!(b.take_retained().is_empty(), "the partial copy is freed");
    }

    #[test]
    fn a_body_that_came_with_the_head_is_replayable_without_a_copy() {
        let b = state(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
            0,
        );
        assert!(b.complete && b.replayable());
    }
}
