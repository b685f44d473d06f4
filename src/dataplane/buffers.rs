//! Per-worker pool of I/O buffers, so a request never allocates one and an idle connection
//! never holds one.

use std::cell::RefCell;

use crate::http::HeaderField;

/// Vectors a request needs while it is in flight: parsed fields of the request and response,
/// the proxy's own lines and the iovecs of a vectored write. Pooled per worker so idle
/// connections hold none and busy ones never allocate them.
#[derive(Default)]
pub struct Scratch {
    pub fields: Vec<HeaderField>,
    pub resp_fields: Vec<HeaderField>,
    pub extra: Vec<u8>,
    pub iov: Vec<libc::iovec>,
}

/// Free list of [`Scratch`] sets.
#[derive(Default)]
pub struct ScratchPool {
    free: RefCell<Vec<Scratch>>,
}

impl ScratchPool {
    pub fn take(&self) -> Scratch {
        self.free.borrow_mut().pop().unwrap_or_else(|| Scratch {
            fields: Vec::with_capacity(32),
            resp_fields: Vec::with_capacity(32),
            extra: Vec::with_capacity(256),
            iov: Vec::with_capacity(32),
        })
    }

    /// Keep at most 256 sets; a set that grew past sane sizes (a huge head) is dropped.
    pub fn give(&self, s: Scratch) {
        let mut free = self.free.borrow_mut();
        if free.len() < 256 && s.extra.capacity() <= 16 * 1024 && s.fields.capacity() <= 512 {
            free.push(s);
        }
    }
}

pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
}

impl BufPool {
    /// Buffers of `size` bytes; at most `keep` are kept for reuse.
    pub fn new(size: usize, keep: usize) -> BufPool {
        BufPool {
            free: RefCell::new(Vec::new()),
            size,
            keep,
        }
    }

    /// An empty buffer with `size()` bytes of capacity.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Whether `buf` came from this pool.
    pub fn owns(&self, capacity: usize) -> bool {
        capacity == self.size
    }

    /// Return a buffer. Buffers of another size are simply dropped.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            buf.clear();
            free.push(buf);
        }
    }
}
