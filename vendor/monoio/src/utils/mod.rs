//! Common utils

pub(crate) mod box_into_inner;
pub(crate) mod linked_list;
#[allow(dead_code)]
pub(crate) mod slab;
#[allow(dead_code)]
pub(crate) mod thread_id;
pub(crate) mod uring_detect;

mod rand;
pub use rand::thread_rng_n;
pub use uring_detect::detect_uring;
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub use uring_detect::{detect_multishot_recv, detect_vectorized_send};

/// Register a table of `slots` files (all empty) with this thread's io_uring (Linux 5.19), for
/// [`TcpStream::register_fixed`](crate::net::TcpStream::register_fixed). Call it once per
/// thread, inside the runtime. Fails on the legacy driver, on a second call, and where the
/// kernel refuses (`EMFILE` beyond `RLIMIT_NOFILE`, `EINVAL` before 5.19).
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub fn register_fixed_files(slots: u32) -> std::io::Result<()> {
    crate::driver::fixed::register_table(slots)
}

pub use crate::driver::op::is_legacy;

#[cfg(feature = "signal")]
mod ctrlc;
#[cfg(feature = "signal")]
pub use self::ctrlc::{CtrlC, Error as CtrlCError};

#[cfg(feature = "utils")]
mod bind_to_cpu_set;
#[cfg(feature = "utils")]
pub use bind_to_cpu_set::{bind_to_cpu_set, BindError};
