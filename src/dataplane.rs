//! Data plane: worker threads pinned one per core, each a monoio runtime owning its listeners,
//! client connections, upstream keep-alive pool, buffers and counters. Workers only *read*
//! route snapshots from the control plane; nothing on the request path takes a lock.

mod access_log;
mod balance;
mod breakers;
mod buffers;
mod conn;
mod error;
mod exchange;
mod gather;
mod idle_timers;
mod listener;
mod net_stream;
mod pipes;
mod reclaim;
mod record;
mod respond;
mod rewrite;
mod shutdown;
pub mod stats;
mod tls_accept;
mod tunnel;
mod upstream;
mod view;
mod worker;

pub use worker::{
    start, DataPlaneConfig, Driver, Inherited, ListeningSocket, WorkerSet, ADMIN_SOCKET,
};
