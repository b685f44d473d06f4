//! The rest of a large Content-Length body moved socket -> pipe -> socket with splice(2), so
//! its bytes are never copied into or out of user space. Exactly the declared length moves:
//! what follows it (a pipelined request, the next response) stays unread in the socket.
//!
//! The splices are non-blocking system calls made by the worker itself; when one would block,
//! the worker waits for the socket with the runtime's readiness poll (under a deadline). On
//! io_uring this avoids the ring's splice operation, which always runs on a kernel worker
//! thread and cost more CPU per response than the copies it saves.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::super::idle_timers::IdleTimers;
use super::super::pipes::{PipeLease, PIPE_BYTES};

/// Which side of the relay a byte counter tracks.
#[derive(Clone, Copy)]
pub(super) enum Count {
    /// Bytes taken from the source (a request body read from the client).
    Read,
    /// Bytes delivered to the destination (a response body written to the client).
    Written,
}

/// How a splice relay ended early.
#[derive(Debug)]
pub(super) enum SpliceError {
    /// The source sent nothing for the read deadline.
    ReadTimeout,
    /// The source closed or failed before the whole body arrived.
    ReadEnded,
    /// The destination took nothing for the send deadline (`TimedOut`) or failed.
    Write(io::Error),
}

/// Deadlines of one relay: each wait for a socket must end within its own, on the worker's
/// coarse timers.
#[derive(Clone, Copy)]
pub(super) struct Deadlines<'a> {
    pub timers: &'a IdleTimers,
    pub read: Duration,
    pub send: Duration,
}

/// Move exactly `len` bytes from `from` to `to` through the leased pipe, adding to `counter`
/// the bytes `count` names as they move. On success the pipe is empty again and marked so.
pub(super) async fn splice_exact(
    from: &TcpStream,
    to: &TcpStream,
    lease: &mut PipeLease<'_>,
    len: u64,
    deadlines: Deadlines<'_>,
    counter: &mut u64,
    count: Count,
) -> Result<(), SpliceError> {
    let (pipe_in, pipe_out) = (lease.pipe().writer(), lease.pipe().reader());
    let _from_mode = NonBlocking::set(from.as_raw_fd()).map_err(|_| SpliceError::ReadEnded)?;
    let _to_mode = NonBlocking::set(to.as_raw_fd()).map_err(SpliceError::Write)?;
    let mut left = len;
    while left > 0 {
        let want = left.min(PIPE_BYTES as u64) as usize;
        let got = loop {
            match splice(from.as_raw_fd(), pipe_in, want) {
                Ok(0) => return Err(SpliceError::ReadEnded),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match deadlines
                        .timers
                        .timed(deadlines.read, from.readable(false))
                        .await
                    {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return Err(SpliceError::ReadEnded),
                        None => return Err(SpliceError::ReadTimeout),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(SpliceError::ReadEnded),
            }
        };
        left -= got as u64;
        if let Count::Read = count {
            *counter += got as u64;
        }
        let mut in_pipe = got;
        while in_pipe > 0 {
            match splice(pipe_out, to.as_raw_fd(), in_pipe) {
                Ok(0) => return Err(SpliceError::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    in_pipe -= n;
                    if let Count::Written = count {
                        *counter += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match deadlines
                        .timers
                        .timed(deadlines.send, to.writable(false))
                        .await
                    {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(SpliceError::Write(e)),
                        None => return Err(SpliceError::Write(io::ErrorKind::TimedOut.into())),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SpliceError::Write(e)),
            }
        }
    }
    lease.drained();
    Ok(())
}

/// One non-blocking splice of up to `len` bytes between a socket and a pipe.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: two open descriptors and no offsets (neither sockets nor pipes have one).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A socket switched to non-blocking for the length of a relay, and back to blocking when
/// dropped. io_uring's sockets are blocking (its read and write operations must see them so),
/// and a splice into a full send buffer would otherwise stall the whole worker; epoll's are
/// always non-blocking and stay untouched. One `ioctl(FIONBIO)` each way, no flag read.
struct NonBlocking {
    /// The descriptor to switch back, `None` on epoll.
    fd: Option<RawFd>,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        if monoio::utils::is_legacy() {
            return Ok(NonBlocking { fd: None });
        }
        set_fionbio(fd, true)?;
        Ok(NonBlocking { fd: Some(fd) })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(fd) = self.fd {
            let _ = set_fionbio(fd, false);
        }
    }
}

fn set_fionbio(fd: RawFd, on: bool) -> io::Result<()> {
    let mut on = libc::c_int::from(on);
    // SAFETY: FIONBIO reads one int; the stream that owns `fd` outlives the relay's guard.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
