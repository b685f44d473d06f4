//! Byte tunnel after a protocol switch (WebSocket and friends): both directions relayed until
//! each side has closed, or nothing moved for the idle timeout.

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

pub async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = pump(&mut cr, &mut uw, idle);
    let down = pump(&mut ur, &mut cw, idle);
    let _ = monoio::join!(up, down);
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
        let (res, back) = match monoio::time::timeout(idle, w.write_all(buf)).await {
            Ok(r) => r,
            Err(_) => break,
        };
        buf = back;
        if res.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
