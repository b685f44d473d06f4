//! Vectored writes of slices of owned buffers: a forwarded head is written as ranges of the
//! bytes it was received in plus the proxy's own lines, in one `writev`.

use std::io;

use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// Owns the buffers its iovecs point into for as long as the kernel may read them.
pub struct Gather {
    /// Received bytes (a request or response read buffer).
    pub data: Vec<u8>,
    /// Lines the proxy adds.
    pub extra: Vec<u8>,
    iov: Vec<libc::iovec>,
    first: usize,
    total: usize,
}

// SAFETY: the iovecs point into `data`, `extra` or 'static bytes; both Vecs are owned by this
// value and are not modified between `push_*` and the end of the write, so the pointers stay
// valid while the runtime owns it.
unsafe impl IoVecBuf for Gather {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.first..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len() - self.first
    }
}

impl Gather {
    pub fn new(data: Vec<u8>, extra: Vec<u8>, iov: Vec<libc::iovec>) -> Gather {
        let mut g = Gather {
            data,
            extra,
            iov,
            first: 0,
            total: 0,
        };
        g.iov.clear();
        g
    }

    /// Bytes still to be written.
    pub fn remaining(&self) -> usize {
        self.total
    }

    /// Take the buffers back: (data, extra, iovec storage).
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>, Vec<libc::iovec>) {
        (self.data, self.extra, self.iov)
    }

    fn push_raw(&mut self, ptr: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.iov.last_mut() {
            // SAFETY: pointer arithmetic within or one past the same allocation is only compared.
            if last.iov_base as usize + last.iov_len == ptr as usize {
                last.iov_len += len;
                self.total += len;
                return;
            }
        }
        self.iov.push(libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        });
        self.total += len;
    }

    /// Add `data[start..end]`; adjacent ranges merge into one iovec.
    pub fn push_data(&mut self, start: usize, end: usize) {
        debug_assert!(start <= end && end <= self.data.len());
        let ptr = self.data[start..end].as_ptr();
        self.push_raw(ptr, end - start);
    }

    /// Add `extra[start..end]`.
    pub fn push_extra(&mut self, start: usize, end: usize) {
        let ptr = self.extra[start..end].as_ptr();
        self.push_raw(ptr, end - start);
    }

    pub fn push_static(&mut self, bytes: &'static [u8]) {
        self.push_raw(bytes.as_ptr(), bytes.len());
    }

    fn consume(&mut self, mut n: usize) {
        self.total -= n;
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: advancing within the same iovec's range.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                v.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// Write every pushed byte. Partial writes are resumed without reallocating.
pub async fn write_gather<S: AsyncWriteRent>(
    stream: &mut S,
    mut g: Gather,
) -> (io::Result<()>, Gather) {
    while g.total > 0 {
        let (res, back) = stream.writev(g).await;
        g = back;
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), g),
            Ok(n) => g.consume(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), g),
        }
    }
    (Ok(()), g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_ranges_merge_and_consume_advances() {
        let mut g = Gather::new(b"abcdefgh".to_vec(), b"XY".to_vec(), Vec::new());
        g.push_data(0, 3);
        g.push_data(3, 5);
        g.push_extra(0, 2);
        g.push_static(b"\r\n");
        assert_eq!(g.read_iovec_len(), 3);
        assert_eq!(g.total, 9);
        g.consume(6);
        assert_eq!(g.read_iovec_len(), 2);
        let first = g.iov[g.first];
        assert_eq!(first.iov_len, 1);
        // SAFETY: the iovec points into `extra`, which is alive.
        assert_eq!(unsafe { *(first.iov_base as *const u8) }, b'Y');
    }

    /// Several megabytes in four iovecs.
    fn big_gather() -> (Gather, Vec<u8>) {
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        let extra = b"X-Extra: 1\r\n".to_vec();
        let mut expected = data[..1 << 20].to_vec();
        expected.extend_from_slice(&extra);
        expected.extend_from_slice(&data[1 << 20..]);
        expected.extend_from_slice(b"\r\n");
        let mut g = Gather::new(data, extra, Vec::new());
        g.push_data(0, 1 << 20);
        g.push_extra(0, 12);
        g.push_data(1 << 20, 3 << 20);
        g.push_static(b"\r\n");
        (g, expected)
    }

    /// Megabytes in one iovec: on a stream with vectorized sends a plain `SEND` of the buffer.
    fn one_buffer_gather() -> (Gather, Vec<u8>) {
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 13 % 251) as u8).collect();
        let expected = data.clone();
        let mut g = Gather::new(data, Vec::new(), Vec::new());
        g.push_data(0, 3 << 20);
        assert_eq!(g.read_iovec_len(), 1);
        (g, expected)
    }

    /// What a loopback peer receives when `g` is written to it with `write_gather`.
    fn received(g: Gather, vectorized: bool) -> Vec<u8> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut theirs, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut theirs, &mut got).unwrap();
            got
        });
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .expect("an io_uring runtime")
            .block_on(async move {
                let mut ours = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
                ours.set_send_vectorized(vectorized);
                let (res, g) = write_gather(&mut ours, g).await;
                res.unwrap();
                assert_eq!(g.remaining(), 0);
            });
        reader.join().unwrap()
    }

    /// Four pieces and one buffer, each megabytes long: the socket takes them in partial
    /// writes, resumed mid-iovec, as a WRITEV and as a (vectorized or plain) SEND.
    #[test]
    fn a_gathered_write_arrives_whole_and_in_order_as_writev_and_as_a_vectorized_send() {
        let mut modes = vec![false];
        // Linux 6.17 or newer; older kernels only have the WRITEV.
        if monoio::utils::detect_vectorized_send() {
            modes.push(true);
        }
        for vectorized in modes {
            for (g, expected) in [big_gather(), one_buffer_gather()] {
                let pieces = g.read_iovec_len();
                let got = received(g, vectorized);
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "vectorized send: {vectorized}, {pieces} iovecs"
                );
                assert!(
                    got == expected,
                    "bytes out of order (vectorized send: {vectorized}, {pieces} iovecs)"
                );
            }
        }
    }

    /// A whole-request send that owns its buffers completes once, with every byte of several
    /// megabytes (more than the socket takes at once), even while nobody awaits it; a peer that
    /// closes ends it with an error instead.
    #[test]
    fn an_owned_whole_send_completes_once_with_every_byte_or_with_the_error() {
        if !monoio::utils::detect_vectorized_send() {
            return; // Linux 6.17 or newer
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut theirs, _) = listener.accept().unwrap();
            // A slow start: the send must wait for room more than once.
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut theirs, &mut got).unwrap();
            got
        });
        let (g, expected) = big_gather();
        let total = g.remaining();
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("an io_uring runtime")
            .block_on(async move {
                let mut ours = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
                let refused =
                    ours.send_whole_owned(Gather::new(Vec::new(), Vec::new(), Vec::new()));
                assert!(refused.is_err(), "needs vectorized sends on");
                ours.set_send_vectorized(true);
                // A small send buffer: the socket takes the megabytes a piece at a time.
                let small: libc::c_int = 64 << 10;
                // SAFETY: a valid socket and option value of the right size.
                let set = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&ours),
                        libc::SOL_SOCKET,
                        libc::SO_SNDBUF,
                        (&small as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(set, 0);
                let send = ours.send_whole_owned(g).unwrap();
                // Not awaited for a while: it goes on in the kernel.
                monoio::time::sleep(std::time::Duration::from_millis(200)).await;
                let (res, back) = send.await;
                assert_eq!(res.unwrap(), total, "one completion for every byte");
                assert_eq!(
                    back.remaining(),
                    total,
                    "the buffers come back as they went"
                );
            });
        let got = reader.join().unwrap();
        assert!(got == expected, "{} bytes, in order", got.len());

        // The peer goes away: the send ends with an error, not a short count.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .expect("an io_uring runtime")
            .block_on(async move {
                let mut ours = monoio::net::TcpStream::connect_addr(addr).await.unwrap();
                ours.set_send_vectorized(true);
                closer.join().unwrap();
                let mut failed = false;
                for _ in 0..20 {
                    let (g, _) = big_gather();
                    let (res, _) = ours.send_whole_owned(g).unwrap().await;
                    if res.is_err() {
                        failed = true;
                        break;
                    }
                }
                assert!(failed, "sends to a closed peer fail");
            });
    }
}
