//! Multishot receives into a ring of provided buffers.
//!
//! A [`BufRing`] is a set of equal buffers registered with the thread's ring
//! (`IORING_REGISTER_PBUF_RING`, Linux 5.19). A [`MultiRecv`] is one multishot `RECV`
//! (`IORING_RECV_MULTISHOT`, Linux 6.0) on a socket: submitted once, it completes every time
//! bytes arrive, each time into a buffer the kernel takes from the ring, until end of stream,
//! an error, a cancellation or an empty ring (`ENOBUFS`) ends it. The bytes come out as
//! [`RecvChunk`]s, which give their buffer back to the ring when dropped. Nothing is held by a
//! socket waiting for bytes except the operation itself.

use std::{
    cell::{Cell, UnsafeCell},
    collections::VecDeque,
    future::Future,
    io,
    rc::{Rc, Weak},
    sync::atomic::{AtomicU16, Ordering},
    task::{Context, Poll, Waker},
};

use io_uring::{opcode, types};

use super::{lifecycle::Lifecycle, UringInner};
use crate::driver::{shared_fd::SharedFd, Inner, CURRENT};

const CQE_F_BUFFER: u32 = 1 << 0;
const CQE_F_MORE: u32 = 1 << 1;
const CQE_BUFFER_SHIFT: u32 = 16;

/// Buffer group ids, unique in the process (each ring could reuse them; one counter is simpler).
static NEXT_GROUP: AtomicU16 = AtomicU16::new(0);

/// Equal buffers lent to the kernel for receives that pick their buffer when bytes arrive.
pub struct BufRing {
    driver: Weak<UnsafeCell<UringInner>>,
    group: u16,
    entries: u16,
    buf_len: u32,
    /// The shared ring of buffer descriptors (page aligned, as the kernel requires).
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    /// The buffers themselves, `entries * buf_len` bytes, touched only as they are used.
    bufs: *mut u8,
    /// Our copy of the ring's tail: buffers handed to the kernel so far (wrapping).
    tail: Cell<u16>,
    /// Buffers out of the ring: received into and not yet given back.
    out: Cell<u32>,
}

impl BufRing {
    /// Register `entries` buffers (a power of two, at most 32768) of `buf_len` bytes each with
    /// the current thread's io_uring driver. Fails on the legacy driver and on kernels without
    /// provided-buffer rings.
    pub fn new(entries: u16, buf_len: u32) -> io::Result<Rc<BufRing>> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 || buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a buffer ring needs a power-of-two count of non-empty buffers",
            ));
        }
        let this = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => Ok(this.clone()),
            #[cfg(feature = "legacy")]
            Inner::Legacy(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "provided-buffer rings need the io_uring driver",
            )),
        })?;
        let ring_bytes = (entries as usize * std::mem::size_of::<types::BufRingEntry>())
            .next_multiple_of(page_size());
        let bufs_bytes = entries as usize * buf_len as usize;
        let ring = map(ring_bytes)? as *mut types::BufRingEntry;
        let bufs = match map(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                unsafe { libc::munmap(ring.cast(), ring_bytes) };
                return Err(e);
            }
        };
        let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        let br = BufRing {
            driver: Rc::downgrade(&this),
            group,
            entries,
            buf_len,
            ring,
            ring_bytes,
            bufs,
            tail: Cell::new(0),
            out: Cell::new(entries as u32),
        };
        // Safety: the ring memory is page aligned and lives until `Drop` unregisters it.
        unsafe {
            (*this.get())
                .uring
                .submitter()
                .register_buf_ring(ring as u64, entries, group)?;
        }
        for bid in 0..entries {
            br.give_back(bid);
        }
        Ok(Rc::new(br))
    }

    /// The size of each buffer.
    pub fn buf_len(&self) -> u32 {
        self.buf_len
    }

    /// How many buffers the kernel can still receive into (some of them may be taken already
    /// by completions not yet processed).
    pub fn available(&self) -> u32 {
        self.entries as u32 - self.out.get()
    }

    fn taken(&self) {
        self.out.set(self.out.get() + 1);
    }

    /// Hand buffer `bid` back to the kernel.
    fn give_back(&self, bid: u16) {
        let tail = self.tail.get();
        // Safety: `bid` is one of ours and out of the kernel's hands; the slot at the tail is
        // not visible to the kernel until the tail moves past it below.
        unsafe {
            let e = &mut *self.ring.add((tail & (self.entries - 1)) as usize);
            e.set_addr(self.bufs.add(bid as usize * self.buf_len as usize) as u64);
            e.set_len(self.buf_len);
            e.set_bid(bid);
            let t = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*t).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.tail.set(tail.wrapping_add(1));
        self.out.set(self.out.get() - 1);
    }

    fn bytes(&self, bid: u16, len: u32) -> &[u8] {
        // Safety: the kernel wrote `end` bytes into buffer `bid` and does not touch it again
        // until it is given back.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.add(bid as usize * self.buf_len as usize),
                len as usize,
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if let Some(this) = self.driver.upgrade() {
            let _ = unsafe { (*this.get()).uring.submitter() }.unregister_buf_ring(self.group);
        }
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
            libc::munmap(
                self.bufs.cast(),
                self.entries as usize * self.buf_len as usize,
            );
        }
    }
}

fn page_size() -> usize {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn map(bytes: usize) -> io::Result<*mut u8> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// Bytes a [`MultiRecv`] received, in a buffer of its ring; the buffer goes back when this is
/// dropped.
pub struct RecvChunk {
    ring: Rc<BufRing>,
    bid: u16,
    len: u32,
}

impl std::ops::Deref for RecvChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.ring.bytes(self.bid, self.len)
    }
}

impl Drop for RecvChunk {
    fn drop(&mut self) {
        self.ring.give_back(self.bid);
    }
}

/// The driver's record of a multishot operation: completions waiting to be taken.
pub(crate) struct MultiState {
    queue: VecDeque<(io::Result<u32>, u32)>,
    waker: Option<Waker>,
    /// The last completion is in the queue.
    finished: bool,
    /// The owner is gone: buffers go straight back and the record with the last completion.
    abandoned: bool,
    ring: Rc<BufRing>,
}

impl MultiState {
    /// Record a completion; true when the operation's record can go.
    pub(crate) fn complete(&mut self, result: io::Result<u32>, flags: u32) -> bool {
        let last = flags & CQE_F_MORE == 0;
        if flags & CQE_F_BUFFER != 0 {
            self.ring.taken();
            if self.abandoned {
                self.ring.give_back((flags >> CQE_BUFFER_SHIFT) as u16);
            }
        }
        if self.abandoned {
            return last;
        }
        self.queue.push_back((result, flags));
        self.finished = last;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        false
    }

    fn drain(&mut self) {
        for (_, flags) in self.queue.drain(..) {
            if flags & CQE_F_BUFFER != 0 {
                self.ring.give_back((flags >> CQE_BUFFER_SHIFT) as u16);
            }
        }
    }
}

/// A multishot receive on a socket, from
/// [`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot).
///
/// It ends with end of stream (`Ok(None)`), or an error: `ENOBUFS` when the ring had no
/// buffer left (the bytes stay in the socket; receive them another way or arm a new one once
/// buffers are back), `ECANCELED` after [`cancel`](Self::cancel). While it is armed, every
/// byte the socket receives goes to it: read the socket no other way. Dropping it cancels it
/// and gives back, unread, the bytes it received and nobody took.
pub struct MultiRecv {
    driver: Rc<UnsafeCell<UringInner>>,
    index: usize,
    ring: Rc<BufRing>,
    // Keeps the descriptor open while the operation may still complete.
    _fd: SharedFd,
    ended: bool,
    cancelled: bool,
}

impl MultiRecv {
    pub(crate) fn submit(fd: &SharedFd, ring: &Rc<BufRing>) -> io::Result<MultiRecv> {
        let this = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => Ok(this.clone()),
            #[cfg(feature = "legacy")]
            Inner::Legacy(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "multishot receives need the io_uring driver",
            )),
        })?;
        let inner = unsafe { &mut *this.get() };
        if inner.uring.submission().is_full() {
            inner.submit()?;
        }
        let index = inner.ops.slab.insert(Lifecycle::Multi(Box::new(MultiState {
            queue: VecDeque::new(),
            waker: None,
            finished: false,
            abandoned: false,
            ring: ring.clone(),
        })));
        let (raw, fixed) = fd.uring_target();
        let sqe = opcode::RecvMulti::new(types::Fd(raw), ring.group)
            .build()
            .flags(fixed)
            .user_data(index as u64);
        if unsafe { inner.uring.submission().push(&sqe) }.is_err() {
            inner.submit()?;
            if unsafe { inner.uring.submission().push(&sqe) }.is_err() {
                inner.ops.slab.remove(index);
                return Err(io::Error::new(io::ErrorKind::Other, "submission queue full"));
            }
        }
        Ok(MultiRecv {
            driver: this,
            index,
            ring: ring.clone(),
            _fd: fd.clone(),
            ended: false,
            cancelled: false,
        })
    }

    /// The next bytes received, end of stream (`Ok(None)`) or the error that ended the
    /// receive; pending until one of them comes.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RecvChunk>>> {
        self.next(cx.waker())
    }

    /// [`poll_recv`](Self::poll_recv) as a future. It holds no operation of its own: dropping
    /// it loses nothing, the bytes wait in the receive's queue.
    pub fn recv(&mut self) -> impl Future<Output = io::Result<Option<RecvChunk>>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Whether the receive has ended (its last result was taken).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Ask the kernel to end the receive. Bytes it received before the cancellation took
    /// effect still come out of [`poll_recv`](Self::poll_recv), and then `ECANCELED` (or
    /// whatever ended it first).
    pub fn cancel(&mut self) {
        if !self.ended && !self.cancelled {
            self.cancelled = true;
            unsafe { UringInner::cancel_op(&self.driver, self.index) };
        }
    }

    fn next(&mut self, waker: &Waker) -> Poll<io::Result<Option<RecvChunk>>> {
        if self.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Other,
                "multishot receive already ended",
            )));
        }
        let inner = unsafe { &mut *self.driver.get() };
        let Some(mut lc) = inner.ops.slab.get(self.index) else {
            unreachable!("a multishot receive's record outlives it")
        };
        let Lifecycle::Multi(m) = &mut *lc else {
            unreachable!("a multishot receive's record is a multishot one")
        };
        let Some((result, flags)) = m.queue.pop_front() else {
            match &m.waker {
                Some(old) if old.will_wake(waker) => {}
                _ => m.waker = Some(waker.clone()),
            }
            return Poll::Pending;
        };
        if flags & CQE_F_MORE == 0 {
            self.ended = true;
            lc.remove();
        }
        let bid = (flags & CQE_F_BUFFER != 0).then_some((flags >> CQE_BUFFER_SHIFT) as u16);
        Poll::Ready(match (result, bid) {
            (Ok(0), _) => Ok(None),
            (Ok(len), Some(bid)) => Ok(Some(RecvChunk {
                ring: self.ring.clone(),
                bid,
                len,
            })),
            (Ok(_), None) => Err(io::Error::new(
                io::ErrorKind::Other,
                "a multishot receive completed without a buffer",
            )),
            (Err(e), _) => Err(e),
        })
    }
}

impl Drop for MultiRecv {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let inner = unsafe { &mut *self.driver.get() };
        let Some(mut lc) = inner.ops.slab.get(self.index) else {
            return;
        };
        let Lifecycle::Multi(m) = &mut *lc else {
            return;
        };
        m.drain();
        if m.finished {
            lc.remove();
            return;
        }
        m.waker = None;
        m.abandoned = true;
        if !self.cancelled {
            unsafe { UringInner::cancel_op(&self.driver, self.index) };
        }
    }
}
