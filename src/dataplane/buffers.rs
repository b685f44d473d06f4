//! Per-worker pool of I/O buffers, so a request never allocates one and an idle connection
//! never holds one.

use std::cell::RefCell;

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
