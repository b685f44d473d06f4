#![allow(unreachable_pub)]
//! TCP related.

mod listener;
mod split;
mod stream;
mod tfo;

pub use listener::TcpListener;
pub use split::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
#[cfg(all(target_os = "linux", feature = "iouring"))]
pub use stream::PendingWrite;
pub use stream::{PendingRead, ReadReady, TcpConnectOpts, TcpStream};

#[cfg(feature = "poll-io")]
pub mod stream_poll;
