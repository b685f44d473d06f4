//! Registered (fixed) files: a table of descriptors the ring holds by slot. An operation on a
//! socket installed in the table names its slot (`IOSQE_FIXED_FILE`) instead of its
//! descriptor, so the kernel neither looks the descriptor up in the process's table nor takes
//! and drops a reference to its file for every operation.
//!
//! A socket is installed with a synchronous `IORING_REGISTER_FILES_UPDATE`, at a moment its
//! owner chooses (once a connection has shown it lives long enough to pay for one syscall).
//! Its slot is emptied with an `IORING_OP_CLOSE` on the slot, submitted right before the
//! descriptor's own close. That close waits in the submission queue until the next
//! `io_uring_enter`, while an installation takes effect at once, so a slot becomes free again
//! only once the submission queue has been drained: until then it is parked in `draining`.

use std::{cell::UnsafeCell, io, os::unix::io::RawFd, rc::Rc};

use io_uring::{opcode, types};

use super::{UringInner, DETACHED_USERDATA};
use crate::driver::{Inner, CURRENT};

/// No slot: the descriptor is not installed.
pub(crate) const NO_SLOT: u32 = u32::MAX;

#[derive(Default)]
pub(crate) struct FixedFiles {
    /// Slots in the registered table (0: no table).
    size: u32,
    /// Slots below this were handed out at least once; those at or above it never were.
    next: u32,
    /// Slots emptied by a close the kernel has already consumed.
    free: Vec<u32>,
    /// Slots whose emptying close may still sit in the submission queue.
    draining: Vec<u32>,
}

fn with_uring<R>(f: impl FnOnce(&Rc<UnsafeCell<UringInner>>) -> R) -> Option<R> {
    if !CURRENT.is_set() {
        return None;
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => Some(f(this)),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

/// Register a sparse table of `slots` files with this thread's ring (Linux 5.19).
pub(crate) fn register_table(slots: u32) -> io::Result<()> {
    with_uring(|this| {
        let inner = unsafe { &mut *this.get() };
        if inner.fixed.size != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this ring already has a table of registered files",
            ));
        }
        inner.uring.submitter().register_files_sparse(slots)?;
        inner.fixed.size = slots;
        Ok(())
    })
    .unwrap_or_else(|| {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "registered files need the io_uring driver",
        ))
    })
}

/// Install `fd` in a free slot of this thread's table: the slot, or `None` when there is no
/// table, it is full, or the kernel refused.
pub(crate) fn install(fd: RawFd) -> Option<u32> {
    with_uring(|this| {
        let inner = unsafe { &mut *this.get() };
        let f = &mut inner.fixed;
        if f.free.is_empty() && !f.draining.is_empty() && inner.uring.submission().is_empty() {
            // Every close queued so far has been consumed by the kernel.
            f.free.append(&mut f.draining);
        }
        let slot = match f.free.pop() {
            Some(s) => s,
            None if f.next < f.size => {
                f.next += 1;
                f.next - 1
            }
            None => return None,
        };
        match inner.uring.submitter().register_files_update(slot, &[fd]) {
            Ok(1) => Some(slot),
            _ => {
                inner.fixed.free.push(slot);
                None
            }
        }
    })
    .flatten()
}

/// Empty `slot` (the descriptor it holds stays open: its owner closes that next). The slot is
/// reused only after the close has reached the kernel.
pub(crate) fn release(slot: u32) {
    with_uring(|this| {
        let inner = unsafe { &mut *this.get() };
        let sqe = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(DETACHED_USERDATA);
        let queued = unsafe { inner.uring.submission().push(&sqe) }.is_ok()
            || (inner.submit().is_ok() && unsafe { inner.uring.submission().push(&sqe) }.is_ok());
        if queued {
            inner.fixed.draining.push(slot);
        } else if inner
            .uring
            .submitter()
            .register_files_update(slot, &[-1])
            .is_ok()
        {
            inner.fixed.free.push(slot);
        }
        // Otherwise (a full queue that would not drain, and a refused update) the slot stays
        // taken and holds the socket open until the ring is torn down.
    });
}
