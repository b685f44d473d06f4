//! Byte tunnel after a protocol switch (WebSocket and friends): both directions relayed until
//! each side has closed, or nothing moved for the idle timeout.

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, Splitable,
};

use super::net_stream::NetStream;

pub async fn relay(client: NetStream, upstream: NetStream, idle: Duration) {
    let (client, upstream) = match (client, upstream) {
        (NetStream::Plain(c), NetStream::Plain(u)) => (c, u),
        (client, upstream) => return relay_one_task(client, upstream, idle).await,
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = pump(&mut cr, &mut uw, idle);
    let down = pump(&mut ur, &mut cw, idle);
    let _ = monoio::join!(up, down);
}

/// A tunnel with TLS on either side: one task reads both sides (a TLS connection cannot be
/// split into halves); the read that did not finish is cancelled and awaited, so no byte it
/// received is lost. Ends when either side closes or nothing moved for `idle`.
async fn relay_one_task(mut client: NetStream, mut up: NetStream, idle: Duration) {
    let mut cbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut ubuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let (ccancel, ucancel) = (Canceller::new(), Canceller::new());
        cbuf.clear();
        ubuf.clear();
        let (ccap, ucap) = (cbuf.capacity(), ubuf.capacity());
        let (c, u) = {
            let cread = client.cancelable_read(
                std::mem::take(&mut cbuf).slice_mut(0..ccap),
                ccancel.handle(),
            );
            let uread = up.cancelable_read(
                std::mem::take(&mut ubuf).slice_mut(0..ucap),
                ucancel.handle(),
            );
            let (mut cread, mut uread) = (std::pin::pin!(cread), std::pin::pin!(uread));
            let first = monoio::select! {
                r = &mut cread => Some((Some(r), None)),
                r = &mut uread => Some((None, Some(r))),
                _ = monoio::time::sleep(idle) => None,
            };
            // Cancel what is still pending and collect it: a read that completed meanwhile keeps
            // its bytes.
            let (c, u) = match first {
                Some((Some(c), None)) => {
                    ucancel.cancel();
                    (c, uread.await)
                }
                Some((None, Some(u))) => {
                    ccancel.cancel();
                    (cread.await, u)
                }
                _ => {
                    ccancel.cancel();
                    ucancel.cancel();
                    let c = cread.await;
                    (c, uread.await)
                }
            };
            (c, u)
        };
        let (cres, cback) = c;
        let (ures, uback) = u;
        cbuf = cback.into_inner();
        ubuf = uback.into_inner();
        let got_c = matches!(cres, Ok(n) if n > 0);
        let got_u = matches!(ures, Ok(n) if n > 0);
        if got_c {
            let Some(back) = send_within(&mut up, cbuf, idle).await else {
                return;
            };
            cbuf = back;
        }
        if got_u {
            let Some(back) = send_within(&mut client, ubuf, idle).await else {
                return;
            };
            ubuf = back;
        }
        let cancelled = |r: &std::io::Result<usize>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::ECANCELED));
        // An end (EOF or error) on a side that was not merely cancelled ends the tunnel.
        let c_ended = !got_c && !cancelled(&cres);
        let u_ended = !got_u && !cancelled(&ures);
        if c_ended || u_ended || (!got_c && !got_u) {
            let _ = client.shutdown().await;
            let _ = up.shutdown().await;
            return;
        }
    }
}

/// Write all of `buf` within `idle`: the buffer back, or `None` when the write failed or stalled.
async fn send_within<W: AsyncWriteRent>(
    w: &mut W,
    buf: Vec<u8>,
    idle: Duration,
) -> Option<Vec<u8>> {
    match monoio::time::timeout(idle, w.write_all(buf)).await {
        Ok((Ok(_), back)) => Some(back),
        _ => None,
    }
}

/// Copy from `r` to `w` until EOF, then half-close `w`.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, idle: Duration) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let cap = buf.capacity();
        let (res, back) = match monoio::time::timeout(idle, r.read(buf.slice_mut(0..cap))).await {
            Ok(r) => r,
            Err(_) => break,
        };
        buf = back.into_inner();
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(back) = send_within(w, buf, idle).await else {
            break;
        };
        buf = back;
    }
    let _ = w.shutdown().await;
}
