//! Detect if current platform support io_uring.

#[cfg(all(target_os = "linux", feature = "iouring"))]
macro_rules! err_to_false {
    ($e: expr) => {
        match $e {
            Ok(x) => x,
            Err(_) => {
                return false;
            }
        }
    };
}
#[cfg(all(target_os = "linux", feature = "iouring"))]
fn detect_uring_inner() -> bool {
    let val = std::env::var("MONOIO_FORCE_LEGACY_DRIVER");
    match val {
        Ok(v) if matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes") => {
            return false;
        }
        _ => {}
    }

    use io_uring::opcode::*;
    auto_const_array::auto_const_array! {
        const USED_OP: [u8; _] = [
            Accept::CODE,
            AsyncCancel::CODE,
            Close::CODE,
            Connect::CODE,
            Fsync::CODE,
            OpenAt::CODE,
            PollAdd::CODE,
            ProvideBuffers::CODE,
            Read::CODE,
            Readv::CODE,
            Recv::CODE,
            Send::CODE,
            SendMsg::CODE,
            RecvMsg::CODE,
            #[cfg(feature = "splice")]
            Splice::CODE,
            Timeout::CODE,
            Write::CODE,
            Writev::CODE,
        ];
    }

    let uring = err_to_false!(io_uring::IoUring::new(2));
    let mut probe = io_uring::Probe::new();
    err_to_false!(uring.submitter().register_probe(&mut probe));
    USED_OP.iter().all(|op| probe.is_supported(*op))
}

/// Whether the kernel takes a vectorized `SEND` (`IORING_SEND_VECTORIZED`, Linux 6.17), for
/// [`TcpStream::set_send_vectorized`](crate::net::TcpStream::set_send_vectorized): one byte
/// gathered into a socket pair through a ring of its own. Checked once per process.
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub fn detect_vectorized_send() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        use std::os::fd::AsRawFd;
        let mut uring = err_to_false!(io_uring::IoUring::new(2));
        let (a, b) = err_to_false!(std::os::unix::net::UnixStream::pair());
        let byte = [1u8];
        let iov = [libc::iovec {
            iov_base: byte.as_ptr() as *mut _,
            iov_len: 1,
        }];
        let sqe = crate::driver::op::write::vectorized_send(a.as_raw_fd(), iov.as_ptr(), 1, false);
        // SAFETY: the entry points at `iov` and `byte`, which outlive the wait below.
        err_to_false!(unsafe { uring.submission().push(&sqe) });
        err_to_false!(uring.submit_and_wait(1));
        let sent = uring.completion().next().map(|c| c.result());
        let mut got = [0u8];
        sent == Some(1) && std::io::Read::read(&mut &b, &mut got).ok() == Some(1) && got == byte
    })
}

/// Whether the kernel has provided-buffer rings (Linux 5.19) and multishot receives (Linux
/// 6.0), for [`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot): one byte
/// received from a socket pair through a ring of its own, into a one-buffer ring, with the
/// receive still armed afterwards. Checked once per process.
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub fn detect_multishot_recv() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        use std::os::fd::AsRawFd;
        let mut uring = err_to_false!(io_uring::IoUring::new(2));
        let (a, b) = err_to_false!(std::os::unix::net::UnixStream::pair());
        // The ring (page aligned) and its buffer are left to the process: the kernel may hold
        // them until the probe's ring is torn down, which happens in the background.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return false;
        }
        let entry = page.cast::<io_uring::types::BufRingEntry>();
        const GROUP: u16 = u16::MAX;
        // Safety: `page` is ours, page aligned and big enough for one entry and a buffer.
        unsafe {
            err_to_false!(uring
                .submitter()
                .register_buf_ring(page as u64, 1, GROUP));
            let e = &mut *entry;
            e.set_addr(page.cast::<u8>().add(2048) as u64);
            e.set_len(64);
            e.set_bid(0);
            let tail = io_uring::types::BufRingEntry::tail(entry) as *const std::sync::atomic::AtomicU16;
            (*tail).store(1, std::sync::atomic::Ordering::Release);
        }
        let sqe = io_uring::opcode::RecvMulti::new(io_uring::types::Fd(b.as_raw_fd()), GROUP).build();
        err_to_false!(unsafe { uring.submission().push(&sqe) });
        err_to_false!(std::io::Write::write(&mut &a, &[7u8]));
        err_to_false!(uring.submit_and_wait(1));
        let Some(c) = uring.completion().next() else {
            return false;
        };
        // One byte, in buffer 0 (`IORING_CQE_F_BUFFER`), and more to come (`IORING_CQE_F_MORE`).
        let got = unsafe { *page.cast::<u8>().add(2048) };
        c.result() == 1 && c.flags() & 0b11 == 0b11 && c.flags() >> 16 == 0 && got == 7
    })
}

/// Detect if current platform supports our needed uring ops.
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub fn detect_uring() -> bool {
    static mut URING_SUPPORTED: bool = false;
    static INIT: std::sync::Once = std::sync::Once::new();

    unsafe {
        INIT.call_once(|| {
            URING_SUPPORTED = detect_uring_inner();
        });
        URING_SUPPORTED
    }
}

/// Detect if current platform supports our needed uring ops.
#[cfg(not(all(target_os = "linux", feature = "iouring")))]
pub fn detect_uring() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", feature = "iouring"))]
    #[test]
    fn test_detect() {
        assert!(
            super::detect_uring(),
            "io_uring or ops not supported on current platform"
        )
    }
}
