//! The etcd route source: a `ringway-etcd` thread running a tokio current-thread runtime reads
//! every key under the prefix, compiles and publishes it, then watches the prefix and republishes
//! after each burst of changes. etcd outages never drop routes: the current table keeps serving,
//! the thread reconnects with capped backoff and re-reads everything; at start-up with etcd down
//! it serves the last-known-good snapshot.

mod backoff;
mod client;
mod sync;
mod tls;

pub use client::{connect, connect_from, first_endpoint, key_prefix, read_all, EtcdError, Member};
use tls::EtcdTls;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::EtcdConfig;
use crate::route::{CompileOptions, KvSet};

use super::TableHandle;

/// Where the table the node starts with came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// A full read of etcd at this revision.
    Etcd { revision: i64 },
    /// etcd was unreachable; the last-known-good snapshot is served.
    Snapshot { path: PathBuf, keys: usize },
    /// etcd was unreachable and there was no snapshot: no routes, not ready.
    Empty,
}

/// The running etcd source. [`EtcdSource::stop`] ends the thread.
pub struct EtcdSource {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EtcdSource {
    /// Start the control thread and wait for its first attempt: a full read of etcd within the
    /// dial deadline, else the snapshot (if any). The node may serve as soon as this returns.
    pub fn start(
        cfg: EtcdConfig,
        snapshot: Option<PathBuf>,
        opts: CompileOptions,
        handle: TableHandle,
    ) -> Result<(EtcdSource, Startup), EtcdError> {
        // Endpoints whose schemes do not fit and TLS files that cannot be used stop the node
        // here, naming the file and the reason, instead of serving the snapshot.
        EtcdTls::load(&cfg)?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        let source = sync::RouteSync::new(cfg, snapshot, opts, handle, stop_rx);
        let thread = std::thread::Builder::new()
            .name("ringway-etcd".into())
            .spawn(move || runtime.block_on(source.run(started_tx)))
            .map_err(EtcdError::Runtime)?;
        let startup = started_rx.recv().map_err(|_| {
            EtcdError::Runtime(std::io::Error::other(
                "the etcd control thread ended before its first read",
            ))
        })?;
        Ok((
            EtcdSource {
                stop,
                thread: Some(thread),
            },
            startup,
        ))
    }

    /// Stop watching and wait for the thread to end.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read every key under the prefix once (for `ringway check`), within the dial deadline.
pub fn read_once(cfg: &EtcdConfig) -> Result<KvSet, EtcdError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EtcdError::Runtime)?;
    runtime.block_on(async {
        let client = connect(cfg).await?;
        read_all(&client, cfg).await
    })
}

/// The dial deadline of a profile's `[etcd]` section.
pub fn dial_timeout(cfg: &EtcdConfig) -> Duration {
    Duration::from_millis(cfg.dial_timeout_ms)
}
