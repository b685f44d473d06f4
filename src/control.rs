//! Control plane: route sources (file now, etcd later) compiled into immutable
//! [`RouteTable`]s and published to the workers through an atomic pointer swap.

pub mod file;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::route::{Report, RouteTable};

/// The published route table plus what the control plane knows about it. Cheap to clone; the
/// data plane only ever loads from it.
#[derive(Clone)]
pub struct TableHandle {
    inner: Arc<Shared>,
}

struct Shared {
    table: ArcSwap<RouteTable>,
    report: ArcSwap<Report>,
    loaded: AtomicBool,
}

impl Default for TableHandle {
    fn default() -> Self {
        TableHandle::new()
    }
}

impl TableHandle {
    /// A handle holding an empty table, marked not loaded.
    pub fn new() -> TableHandle {
        TableHandle {
            inner: Arc::new(Shared {
                table: ArcSwap::from_pointee(RouteTable::empty()),
                report: ArcSwap::from_pointee(Report::default()),
                loaded: AtomicBool::new(false),
            }),
        }
    }

    /// Swap in a new table. In-flight requests finish on the table they started with.
    pub fn publish(&self, table: RouteTable, report: Report) {
        self.inner.table.store(Arc::new(table));
        self.inner.report.store(Arc::new(report));
        self.inner.loaded.store(true, Ordering::Release);
    }

    /// The current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.inner.table.load_full()
    }

    /// The swap cell itself, for per-worker caches.
    pub fn cell(&self) -> &ArcSwap<RouteTable> {
        &self.inner.table
    }

    /// Conflicts and skipped values of the current table.
    pub fn report(&self) -> Arc<Report> {
        self.inner.report.load_full()
    }

    /// Whether any table has been published yet.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
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
}
