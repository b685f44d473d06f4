//! The request body as it streams from the client to the upstream: how much of it came with
//! the head, how much is still to come, and the relay of the rest (spliced or buffered).

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::super::conn::Conn;
use super::super::error::ProxyError;
use super::super::worker::Worker;
use super::splice::{splice_exact, Count, Deadlines, SpliceError};
use crate::http::{BodyFraming, ChunkedDecoder, RequestHead};

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
/// large Content-Length body, otherwise buffer by buffer, writing each buffer as it was read.
/// Pipelined bytes after the body stay in `rbuf` (or, spliced, unread in the socket).
pub(super) async fn stream_request_body(
    c: &mut Conn,
    w: &Worker,
    up: &mut TcpStream,
    body: &mut BodyState,
) -> Result<(), ProxyError> {
    c.rbuf.clear();
    if let BodyFraming::Length(_) = body.framing {
        if let Some(mut pipe) = w.pipes.lease(body.remaining) {
            let deadlines = Deadlines {
                read: w.cfg.timeouts.body(),
                send: w.cfg.timeouts.send(),
            };
            let rx = &mut c.rec.rx;
            let moved = splice_exact(
                &c.stream,
                up,
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
                    body.buffered_end = 0;
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
                Ok((Err(e), _)) => return Err(ProxyError::BodyWrite(e)),
                Err(_) => return Err(ProxyError::BodyWrite(std::io::ErrorKind::TimedOut.into())),
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
