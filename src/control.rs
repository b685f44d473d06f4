//! Control plane: route sources (a file, or etcd) compiled into immutable [`RouteTable`]s and
//! published to the workers through an atomic pointer swap.

pub mod etcd;
pub mod file;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::resilience::Registry;
use crate::route::{Report, RouteTable};

/// A thread's cache of the current route table ([`TableHandle::cache`]).
pub type TableCache = arc_swap::Cache<Arc<ArcSwap<RouteTable>>, Arc<RouteTable>>;

/// The published route table plus what the control plane knows about it. Cheap to clone; the
/// data plane only ever loads from it.
#[derive(Clone)]
pub struct TableHandle {
    inner: Arc<Shared>,
}

struct Shared {
    /// The node's resilience state, pointed at by every table published.
    resilience: Option<Arc<Registry>>,
    /// Shared with each worker's [`TableCache`].
    table: Arc<ArcSwap<RouteTable>>,
    report: ArcSwap<Report>,
    loaded: AtomicBool,
    etcd_connected: AtomicBool,
    last_sync: AtomicU64,
}

impl Default for TableHandle {
    fn default() -> Self {
        TableHandle::new()
    }
}

impl TableHandle {
    /// A handle holding an empty table, marked not loaded.
    pub fn new() -> TableHandle {
        TableHandle::build(None)
    }

    /// Like [`TableHandle::new`], for a node whose tables keep `resilience` state across
    /// refreshes.
    pub fn with_resilience(resilience: Arc<Registry>) -> TableHandle {
        TableHandle::build(Some(resilience))
    }

    fn build(resilience: Option<Arc<Registry>>) -> TableHandle {
        TableHandle {
            inner: Arc::new(Shared {
                resilience,
                table: Arc::new(ArcSwap::from_pointee(RouteTable::empty())),
                report: ArcSwap::from_pointee(Report::default()),
                loaded: AtomicBool::new(false),
                etcd_connected: AtomicBool::new(false),
                last_sync: AtomicU64::new(0),
            }),
        }
    }

    /// Swap in a new table. In-flight requests finish on the table they started with; its
    /// servers and breakers keep the state the node already had for them.
    pub fn publish(&self, mut table: RouteTable, report: Report) {
        if let Some(r) = &self.inner.resilience {
            r.attach(&mut table);
        }
        self.inner.table.store(Arc::new(table));
        self.inner.report.store(Arc::new(report));
        self.inner.loaded.store(true, Ordering::Release);
    }

    /// The node's resilience state, when it keeps one.
    pub fn resilience(&self) -> Option<&Arc<Registry>> {
        self.inner.resilience.as_ref()
    }

    /// The current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.inner.table.load_full()
    }

    /// A cache of the current table for one thread: its `load` costs one atomic load while no
    /// new table was published.
    pub fn cache(&self) -> TableCache {
        arc_swap::Cache::new(self.inner.table.clone())
    }

    /// Conflicts and skipped values of the current table.
    pub fn report(&self) -> Arc<Report> {
        self.inner.report.load_full()
    }

    /// Whether any table has been published yet. A node is ready to serve once this is true:
    /// a table from its source, or the last-known-good snapshot while etcd is unreachable.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// Whether the etcd source currently holds a working watch (false for the file source).
    pub fn etcd_connected(&self) -> bool {
        self.inner.etcd_connected.load(Ordering::Acquire)
    }

    pub fn set_etcd_connected(&self, connected: bool) {
        self.inner
            .etcd_connected
            .store(connected, Ordering::Release);
    }

    /// When the table last matched the source (unix seconds; 0 = never). For etcd that is the
    /// last full read or applied watch batch; a snapshot loaded at start-up does not count.
    pub fn last_sync(&self) -> u64 {
        self.inner.last_sync.load(Ordering::Acquire)
    }

    /// Record that the published table matches the source as of now.
    pub fn mark_synced(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.inner.last_sync.store(now, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_route_state_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TableHandle>();
        assert_send_sync::<RouteTable>();
    }

    #[test]
    fn a_new_handle_is_not_ready_nor_synced_until_told() {
        let h = TableHandle::new();
        assert!(!h.is_loaded() && !h.etcd_connected() && h.last_sync() == 0);
        h.set_etcd_connected(true);
        h.mark_synced();
        assert!(h.etcd_connected() && h.last_sync() > 0);
        let mut cache = h.cache();
        let before = cache.load().clone();
        h.publish(RouteTable::empty(), Report::default());
        assert!(h.is_loaded());
        assert!(
            !Arc::ptr_eq(cache.load(), &before),
            "workers see the new table"
        );
    }
}
