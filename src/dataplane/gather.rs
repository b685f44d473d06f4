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
}
