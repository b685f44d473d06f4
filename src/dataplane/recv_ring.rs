//! Multishot receives into the worker's buffer ring (io_uring, Linux 6.0 or newer), shared by
//! keep-alive client connections and pooled upstream connections: one submission per
//! connection instead of one per request. Bytes are copied out of the ring at once (a head and
//! what came with it: at most a buffer per completion), so a buffer is out of the ring only
//! between a completion and the task that takes it.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::net::{BufRing, MultiRecv, RecvChunk, TcpStream};

/// The worker's ring: 128 buffers of 4 KiB (512 KiB, touched as used). A connection that
/// finds it empty reads into its own buffer instead.
pub const RING_BUFFERS: u16 = 128;
pub const RING_BUFFER_BYTES: u32 = 4096;

/// Buffers left to connections already armed: a connection arms a multishot receive only
/// while more than these are free.
const RESERVE: u32 = 16;

/// Arm a multishot receive on `tcp` when the ring has room.
pub fn arm(ring: &Rc<BufRing>, tcp: &TcpStream) -> Option<MultiRecv> {
    if ring.available() < RESERVE {
        return None;
    }
    tcp.recv_multishot(ring).ok()
}

/// The next bytes (or the end) of a multishot receive. Holds no operation of its own:
/// dropping it loses nothing, the bytes wait in the receive's queue.
pub struct NextChunk<'a>(pub &'a mut MultiRecv);

impl Future for NextChunk<'_> {
    type Output = std::io::Result<Option<RecvChunk>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_recv(cx)
    }
}

/// Whether a receive ended because the ring had no buffer left (the bytes wait in the socket).
pub fn ring_ran_dry(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// End a multishot receive and wait until it has: the bytes it received before the
/// cancellation took effect are appended to `buf`, in order, so the socket can be read
/// directly afterwards. Returns how many bytes were appended, and whether the peer's end of
/// stream came through it.
pub async fn finish(mut m: MultiRecv, buf: &mut Vec<u8>) -> (usize, bool) {
    m.cancel();
    let mut appended = 0;
    loop {
        match NextChunk(&mut m).await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                appended += chunk.len();
            }
            Ok(None) => return (appended, true),
            Err(_) => return (appended, false),
        }
    }
}
