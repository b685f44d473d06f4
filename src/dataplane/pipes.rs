//! Per-worker pool of the pipes large bodies are spliced through (socket -> pipe -> socket),
//! so a transfer neither creates nor closes one. Only a pipe known to be empty goes back to
//! the pool: bytes left in a pipe after a failed transfer must never reach the next one.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Capacity asked of each pipe: a 1 MiB body moves in a few splices instead of sixteen. The
/// kernel may refuse (a per-user limit), and the default 64 KiB pipe works too.
pub const PIPE_BYTES: usize = 256 * 1024;

/// Idle pipes a worker keeps (two descriptors each, no buffer pages while empty).
const KEEP: usize = 16;

/// Pipes a worker may have open at once; past it bodies take the buffer path, so a crowd of
/// concurrent uploads cannot spend the process's descriptors.
const MAX_OPEN: usize = 256;

/// Both ends of one pipe, non-blocking: a splice never waits on the pipe, only on sockets,
/// and only through the runtime's readiness polls.
pub struct BodyPipe {
    reader: OwnedFd,
    writer: OwnedFd,
}

impl BodyPipe {
    fn new() -> std::io::Result<BodyPipe> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and nothing else owns them.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a pipe descriptor this value owns; failure leaves the default size.
        unsafe {
            libc::fcntl(
                writer.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        Ok(BodyPipe { reader, writer })
    }

    pub fn reader(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    pub fn writer(&self) -> RawFd {
        self.writer.as_raw_fd()
    }
}

pub struct PipePool {
    free: RefCell<Vec<BodyPipe>>,
    /// Pipes alive: idle in `free` or lent out.
    open: Cell<usize>,
    /// Smallest remaining body length worth a splice; 0 = never.
    min_bytes: u64,
}

impl PipePool {
    pub fn new(min_bytes: u64) -> PipePool {
        PipePool {
            free: RefCell::new(Vec::new()),
            open: Cell::new(0),
            min_bytes,
        }
    }

    /// A pipe for a body with `remaining` bytes still to move, when splicing pays off for it.
    /// `None` means the buffer path: a small body, splicing turned off, too many pipes open,
    /// or no pipe could be created (out of descriptors).
    pub fn lease(&self, remaining: u64) -> Option<PipeLease<'_>> {
        if self.min_bytes == 0 || remaining < self.min_bytes {
            return None;
        }
        let pipe = match self.free.borrow_mut().pop() {
            Some(p) => p,
            None if self.open.get() < MAX_OPEN => {
                let pipe = BodyPipe::new()
                    .map_err(|e| tracing::debug!("no pipe for a body splice: {e}"))
                    .ok()?;
                self.open.set(self.open.get() + 1);
                pipe
            }
            None => return None,
        };
        Some(PipeLease {
            pool: self,
            pipe: Some(pipe),
            empty: false,
        })
    }
}

/// A pipe lent to one transfer. Dropped without [`PipeLease::drained`] it is closed, not
/// pooled: after an error or a cancelled splice it may still hold bytes.
pub struct PipeLease<'a> {
    pool: &'a PipePool,
    pipe: Option<BodyPipe>,
    empty: bool,
}

impl PipeLease<'_> {
    pub fn pipe(&self) -> &BodyPipe {
        // Only `drop` takes the pipe out.
        self.pipe
            .as_ref()
            .expect("a lease holds its pipe until dropped")
    }

    /// Everything spliced into the pipe was spliced out again: it may be reused.
    pub fn drained(&mut self) {
        self.empty = true;
    }
}

impl Drop for PipeLease<'_> {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else {
            return;
        };
        let mut free = self.pool.free.borrow_mut();
        if self.empty && free.len() < KEEP {
            free.push(pipe);
        } else {
            self.pool.open.set(self.pool.open.get() - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_and_splicing_off_get_no_pipe() {
        assert!(PipePool::new(64 * 1024).lease(64 * 1024 - 1).is_none());
        assert!(PipePool::new(0).lease(u64::MAX).is_none());
        assert!(PipePool::new(64 * 1024).lease(64 * 1024).is_some());
    }

    #[test]
    fn pipes_are_non_blocking_and_closed_on_exec() {
        let pool = PipePool::new(1);
        let lease = pool.lease(1).expect("a pipe");
        for fd in [lease.pipe().reader(), lease.pipe().writer()] {
            // SAFETY: fcntl queries on descriptors the lease owns.
            let (fl, fd_fl) = unsafe {
                (
                    libc::fcntl(fd, libc::F_GETFL),
                    libc::fcntl(fd, libc::F_GETFD),
                )
            };
            assert_ne!(fl & libc::O_NONBLOCK, 0);
            assert_ne!(fd_fl & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn only_a_drained_pipe_is_reused() {
        let pool = PipePool::new(1);
        let mut lease = pool.lease(1).expect("a pipe");
        let first = lease.pipe().reader();
        lease.drained();
        drop(lease);
        assert_eq!((pool.open.get(), pool.free.borrow().len()), (1, 1));

        // Not drained (an error, a deadline): closed, never pooled.
        let lease = pool.lease(1).expect("the pooled pipe");
        assert_eq!(lease.pipe().reader(), first);
        drop(lease);
        assert_eq!((pool.open.get(), pool.free.borrow().len()), (0, 0));
    }
}
