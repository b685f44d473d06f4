use std::io;
#[cfg(all(unix, any(feature = "legacy", feature = "poll-io")))]
use std::os::unix::prelude::AsRawFd;

#[cfg(all(target_os = "linux", feature = "iouring"))]
use io_uring::{opcode, types};
#[cfg(all(windows, any(feature = "legacy", feature = "poll-io")))]
use windows_sys::Win32::{
    Foundation::TRUE,
    Networking::WinSock::WSASend,
    Storage::FileSystem::{SetFilePointer, WriteFile, FILE_CURRENT, INVALID_SET_FILE_POINTER},
};

use super::{super::shared_fd::SharedFd, Op, OpAble};
#[cfg(any(feature = "legacy", feature = "poll-io"))]
use crate::driver::ready::Direction;
use crate::{
    buf::{IoBuf, IoVecBuf},
    syscall_u32, BufResult,
};

pub(crate) struct Write<T> {
    /// Holds a strong ref to the FD, preventing the file from being closed
    /// while the operation is in-flight.
    #[allow(unused)]
    fd: SharedFd,
    offset: u64,

    pub(crate) buf: T,
}

impl<T: IoBuf> Op<Write<T>> {
    pub(crate) fn write_at(fd: &SharedFd, buf: T, offset: u64) -> io::Result<Op<Write<T>>> {
        Op::submit_with(Write {
            fd: fd.clone(),
            offset,
            buf,
        })
    }

    pub(crate) async fn write(self) -> BufResult<usize, T> {
        let complete = self.await;
        (complete.meta.result.map(|v| v as _), complete.data.buf)
    }
}

impl<T: IoBuf> OpAble for Write<T> {
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    fn uring_op(&mut self) -> io_uring::squeue::Entry {
        let (fd, fixed) = self.fd.uring_target();
        opcode::Write::new(types::Fd(fd), self.buf.read_ptr(), self.buf.bytes_init() as _)
            .offset(self.offset)
            .build()
            .flags(fixed)
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    #[inline]
    fn legacy_interest(&self) -> Option<(Direction, usize)> {
        self.fd
            .registered_index()
            .map(|idx| (Direction::Write, idx))
    }

    #[cfg(all(any(feature = "legacy", feature = "poll-io"), unix))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        let fd = self.fd.as_raw_fd();
        let seek_offset = libc::off_t::try_from(self.offset)
            .map_err(|_| io::Error::new(io::ErrorKind::Other, "offset too big"))?;
        #[cfg(not(target_os = "macos"))]
        return syscall_u32!(pwrite64(
            fd,
            self.buf.read_ptr() as _,
            self.buf.bytes_init(),
            seek_offset as _
        ));

        #[cfg(target_os = "macos")]
        return syscall_u32!(pwrite(
            fd,
            self.buf.read_ptr() as _,
            self.buf.bytes_init(),
            seek_offset
        ));
    }

    #[cfg(all(any(feature = "legacy", feature = "poll-io"), windows))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        let fd = self.fd.raw_handle() as _;
        let seek_offset = libc::off_t::try_from(self.offset)
            .map_err(|_| io::Error::new(io::ErrorKind::Other, "offset too big"))?;
        let mut bytes_write = 0;
        let ret = unsafe {
            // see https://learn.microsoft.com/zh-cn/windows/win32/api/fileapi/nf-fileapi-setfilepointer
            if seek_offset != 0 {
                let r = SetFilePointer(fd, seek_offset, std::ptr::null_mut(), FILE_CURRENT);
                if INVALID_SET_FILE_POINTER == r {
                    return Err(io::Error::last_os_error());
                }
            }
            // see https://learn.microsoft.com/zh-cn/windows/win32/api/fileapi/nf-fileapi-writefile
            WriteFile(
                fd,
                self.buf.read_ptr(),
                self.buf.bytes_init() as u32,
                &mut bytes_write,
                std::ptr::null_mut(),
            )
        };
        if TRUE == ret {
            Ok(bytes_write)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// `IORING_SEND_VECTORIZED` (Linux 6.17): `SEND` takes an iovec array (`addr`) and its length
/// (`len`), as `WRITEV` does, and goes straight to the socket's `sendmsg` instead of through
/// the file write path (no `kiocb`, no iterator set-up for a file, no write notification).
/// Kernels without it fail the send with `EINVAL`.
#[cfg(all(target_os = "linux", feature = "iouring"))]
const IORING_SEND_VECTORIZED: u16 = 1 << 5;

#[cfg(all(target_os = "linux", feature = "iouring"))]
pub(crate) fn vectorized_send(
    fd: std::os::fd::RawFd,
    iov: *const libc::iovec,
    len: u32,
    whole: bool,
) -> io_uring::squeue::Entry {
    // MSG_WAITALL: io_uring retries a short send itself and completes once every byte is out
    // (or with the error that stopped it).
    let wait_all = if whole { libc::MSG_WAITALL } else { 0 };
    #[allow(deprecated)]
    let mut sqe = opcode::Send::new(types::Fd(fd), iov.cast(), len)
        .flags((libc::MSG_NOSIGNAL | wait_all) as _)
        .build();
    super::or_ioprio(&mut sqe, IORING_SEND_VECTORIZED);
    sqe
}

pub(crate) struct WriteVec<T> {
    /// Holds a strong ref to the FD, preventing the file from being closed
    /// while the operation is in-flight.
    #[allow(unused)]
    fd: SharedFd,

    pub(crate) buf_vec: T,

    /// io_uring: a socket's gathered write as a vectorized `SEND` (see
    /// [`crate::utils::detect_vectorized_send`]) instead of `WRITEV`.
    send: bool,

    /// With `send`: complete only once every byte is sent (`MSG_WAITALL`).
    whole: bool,
}

impl<T: IoVecBuf> Op<WriteVec<T>> {
    pub(crate) fn writev(fd: &SharedFd, buf_vec: T) -> io::Result<Self> {
        Self::writev_with(fd, buf_vec, false)
    }

    /// A gathered write; on io_uring a vectorized `SEND` when `send` (sockets only, Linux
    /// 6.17 or newer).
    pub(crate) fn writev_with(fd: &SharedFd, buf_vec: T, send: bool) -> io::Result<Self> {
        Op::submit_with(WriteVec {
            fd: fd.clone(),
            buf_vec,
            send,
            whole: false,
        })
    }

    /// A vectorized `SEND` (io_uring, Linux 6.17) that completes only once every byte is out,
    /// or with the error that stopped it: never short.
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    pub(crate) fn send_whole(fd: &SharedFd, buf_vec: T) -> io::Result<Self> {
        Op::submit_with(WriteVec {
            fd: fd.clone(),
            buf_vec,
            send: true,
            whole: true,
        })
    }

    #[allow(unused)]
    pub(crate) fn writev_raw(fd: &SharedFd, buf_vec: T) -> WriteVec<T> {
        WriteVec {
            fd: fd.clone(),
            buf_vec,
            send: false,
            whole: false,
        }
    }

    pub(crate) async fn write(self) -> BufResult<usize, T> {
        let complete = self.await;
        (complete.meta.result.map(|v| v as _), complete.data.buf_vec)
    }
}

impl<T: IoVecBuf> OpAble for WriteVec<T> {
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    fn uring_op(&mut self) -> io_uring::squeue::Entry {
        let ptr = self.buf_vec.read_iovec_ptr() as *const _;
        let len = self.buf_vec.read_iovec_len() as _;
        let (fd, fixed) = self.fd.uring_target();
        if self.send {
            if len == 1 {
                // One buffer: a plain `SEND` of it, which the kernel takes as a single user
                // buffer; an iovec array, even of one entry, is copied in and walked.
                // SAFETY: `read_iovec_ptr` points at `read_iovec_len` (here 1) valid iovecs.
                let one: libc::iovec = unsafe { *ptr };
                let wait_all = if self.whole { libc::MSG_WAITALL } else { 0 };
                let n = one.iov_len.min(u32::MAX as usize) as u32;
                return opcode::Send::new(types::Fd(fd), one.iov_base.cast(), n)
                    .flags((libc::MSG_NOSIGNAL | wait_all) as _)
                    .build()
                    .flags(fixed);
            }
            return vectorized_send(fd, ptr, len, self.whole).flags(fixed);
        }
        opcode::Writev::new(types::Fd(fd), ptr, len)
            .build()
            .flags(fixed)
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    #[inline]
    fn legacy_interest(&self) -> Option<(Direction, usize)> {
        self.fd
            .registered_index()
            .map(|idx| (Direction::Write, idx))
    }

    #[cfg(all(any(feature = "legacy", feature = "poll-io"), unix))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        syscall_u32!(writev(
            self.fd.raw_fd(),
            self.buf_vec.read_iovec_ptr(),
            self.buf_vec.read_iovec_len().min(i32::MAX as usize) as _
        ))
    }

    #[cfg(all(any(feature = "legacy", feature = "poll-io"), windows))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        let mut bytes_sent = 0;
        syscall_u32!(WSASend(
            self.fd.raw_socket() as _,
            self.buf_vec.read_wsabuf_ptr(),
            self.buf_vec.read_wsabuf_len() as _,
            &mut bytes_sent,
            0,
            std::ptr::null_mut(),
            None,
        ))
        .map(|_| bytes_sent)
    }
}
