use std::io;
#[cfg(unix)]
use std::os::unix::io::RawFd;

#[cfg(all(target_os = "linux", feature = "iouring"))]
use io_uring::{opcode, types};
#[cfg(windows)]
use {
    crate::syscall, std::os::windows::io::RawSocket,
    windows_sys::Win32::Networking::WinSock::closesocket,
};

use super::{Op, OpAble};

pub(crate) struct Close {
    #[cfg(unix)]
    fd: RawFd,
    #[cfg(windows)]
    fd: RawSocket,
}

impl Op<Close> {
    #[allow(unused)]
    #[cfg(unix)]
    pub(crate) fn close(fd: RawFd) -> io::Result<Op<Close>> {
        Op::try_submit_with(Close { fd })
    }

    #[cfg(windows)]
    pub(crate) fn close(fd: RawSocket) -> io::Result<Op<Close>> {
        Op::try_submit_with(Close { fd })
    }

    /// Close `fd` through this thread's io_uring without tracking the operation: a close holds
    /// nothing that must outlive it, so there is no slab entry to keep and no cancellation to
    /// submit when the caller does not wait (an `Op` dropped in flight submits one). `false`
    /// when no io_uring driver runs on this thread; the caller then closes `fd` itself.
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    pub(crate) fn close_detached(fd: RawFd) -> bool {
        use crate::driver::{Inner, CURRENT};
        if !CURRENT.is_set() {
            return false;
        }
        CURRENT.with(|inner| match inner {
            Inner::Uring(this) => crate::driver::uring::UringInner::submit_detached(
                this,
                opcode::Close::new(types::Fd(fd)).build(),
            )
            .is_ok(),
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }
}

impl OpAble for Close {
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    fn uring_op(&mut self) -> io_uring::squeue::Entry {
        opcode::Close::new(types::Fd(self.fd)).build()
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    #[inline]
    fn legacy_interest(&self) -> Option<(crate::driver::ready::Direction, usize)> {
        None
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        #[cfg(unix)]
        return crate::syscall_u32!(close(self.fd));

        #[cfg(windows)]
        return syscall!(closesocket(self.fd as _), PartialEq::ne, 0);
    }
}
