//! The admin endpoint: the status page (`/`, `/status.json`), `/metrics` (Prometheus),
//! `/routes` (the compiled table as JSON), `/healthz` and `/readyz`, served on a thread of its
//! own with blocking std I/O, away from the workers. It only reads: counters the workers
//! publish and the current route table.

pub mod metrics;
mod server;
pub mod status;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

pub use server::AdminServer;

use crate::control::TableHandle;
use crate::dataplane::stats::NodeStats;

/// What the route source reports about its connection, for `ringway_etcd_connected` and
/// `ringway_etcd_last_sync_seconds`. Absent (no samples) for the file source.
pub trait ControlStatus: Send + Sync {
    fn etcd_connected(&self) -> bool;
    /// Unix time in seconds of the last successful sync with etcd; 0 = never.
    fn last_sync_unix(&self) -> u64;
}

/// A [`ControlStatus`] made of two accessors of a [`TableHandle`], so a source that keeps its
/// status there is wired with one line, e.g.
/// `SourceStatus::new(routes.clone(), TableHandle::etcd_connected, TableHandle::last_sync)`.
pub struct SourceStatus {
    handle: TableHandle,
    connected: fn(&TableHandle) -> bool,
    last_sync_unix: fn(&TableHandle) -> u64,
}

impl SourceStatus {
    pub fn new(
        handle: TableHandle,
        connected: fn(&TableHandle) -> bool,
        last_sync_unix: fn(&TableHandle) -> u64,
    ) -> SourceStatus {
        SourceStatus {
            handle,
            connected,
            last_sync_unix,
        }
    }
}

impl ControlStatus for SourceStatus {
    fn etcd_connected(&self) -> bool {
        (self.connected)(&self.handle)
    }

    fn last_sync_unix(&self) -> u64 {
        (self.last_sync_unix)(&self.handle)
    }
}

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

/// Everything the admin endpoint reads. Shared between `node::run` and the admin thread.
pub struct AdminState {
    routes: TableHandle,
    control: Option<Arc<dyn ControlStatus>>,
    stats: OnceLock<Arc<NodeStats>>,
    /// The TLS listeners (name, terminator), for the certificate expiry gauge.
    tls: OnceLock<Vec<(String, Arc<crate::tls::Terminator>)>>,
    phase: AtomicU8,
    started: std::time::Instant,
    /// Once-a-second samples of the counters, for the status page's rates.
    pub history: status::History,
}

impl AdminState {
    pub fn new(routes: TableHandle, control: Option<Arc<dyn ControlStatus>>) -> Arc<AdminState> {
        Arc::new(AdminState {
            routes,
            control,
            stats: OnceLock::new(),
            tls: OnceLock::new(),
            phase: AtomicU8::new(STARTING),
            started: std::time::Instant::now(),
            history: status::History::default(),
        })
    }

    /// The node's TLS listeners, by name.
    pub fn tls_listeners(&self, listeners: Vec<(String, Arc<crate::tls::Terminator>)>) {
        let _ = self.tls.set(listeners);
    }

    /// Every worker bound its listeners and serves.
    pub fn serving(&self, stats: Arc<NodeStats>) {
        let _ = self.stats.set(stats);
        self.phase.store(SERVING, Ordering::Release);
    }

    /// Shutdown began: no longer ready, so load balancers stop sending.
    pub fn draining(&self) {
        self.phase.store(DRAINING, Ordering::Release);
    }

    /// `Ok` when the node can take traffic, otherwise why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        match self.phase.load(Ordering::Acquire) {
            DRAINING => Err("shutting down"),
            _ if !self.routes.is_loaded() => Err("no route table loaded yet"),
            STARTING => Err("listeners not bound yet"),
            _ => Ok(()),
        }
    }
}

/// The status page: one self-contained file (no asset from elsewhere) that polls
/// `/status.json` once a second.
const STATUS_PAGE: &str = include_str!("admin/status.html");

/// An answer of the admin endpoint.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into_bytes(),
        }
    }
}

/// Answer `GET path` (the query is ignored).
pub fn respond(state: &AdminState, path: &str) -> Reply {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/healthz" => Reply::text(200, "ok"),
        "/readyz" => match state.readiness() {
            Ok(()) => Reply::text(200, "ready"),
            Err(why) => Reply::text(503, why),
        },
        "/metrics" => {
            let mut out = String::with_capacity(16 * 1024);
            let certificates: Vec<_> = state
                .tls
                .get()
                .into_iter()
                .flatten()
                .flat_map(|(name, t)| {
                    let current = t.current();
                    current
                        .certificates
                        .iter()
                        .map(|c| (name.clone(), c.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            metrics::render(
                &mut out,
                &metrics::Sources {
                    stats: state.stats.get().map(|s| &**s),
                    table: &state.routes.load(),
                    loaded: state.routes.is_loaded(),
                    control: state.control.as_deref(),
                    certificates: &certificates,
                },
            );
            Reply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: out.into_bytes(),
            }
        }
        "/" => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: STATUS_PAGE.as_bytes().to_vec(),
        },
        "/status.json" => {
            let mut body = serde_json::to_vec(&status::render(state)).unwrap_or_default();
            body.push(b'\n');
            Reply {
                status: 200,
                content_type: "application/json",
                body,
            }
        }
        "/routes" => {
            let json = state.routes.load().to_json(&state.routes.report());
            let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            body.push(b'\n');
            Reply {
                status: 200,
                content_type: "application/json",
                body,
            }
        }
        _ => Reply::text(
            404,
            "not found; try / (status page), /status.json, /metrics, /routes, /healthz or /readyz",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_a_table_is_loaded_and_workers_serve() {
        let routes = TableHandle::new();
        let state = AdminState::new(routes.clone(), None);
        let r = respond(&state, "/readyz");
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"no route table loaded yet\n");
        routes.publish(
            crate::route::RouteTable::empty(),
            crate::route::Report::default(),
        );
        let r = respond(&state, "/readyz");
        assert_eq!(
            (r.status, &r.body[..]),
            (503, &b"listeners not bound yet\n"[..])
        );
        state.serving(Arc::new(NodeStats::new(1)));
        assert_eq!(respond(&state, "/readyz").status, 200);
        state.draining();
        assert_eq!(respond(&state, "/readyz").status, 503);
        assert_eq!(respond(&state, "/healthz").status, 200);
    }

    #[test]
    fn unknown_paths_are_404_and_queries_ignored() {
        let state = AdminState::new(TableHandle::new(), None);
        assert_eq!(respond(&state, "/nope").status, 404);
        assert_eq!(respond(&state, "/healthz?verbose=1").status, 200);
        let r = respond(&state, "/routes");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["frontends"].as_array().unwrap().is_empty());
    }

    #[test]
    fn source_status_reads_through_the_handle() {
        fn up(_: &TableHandle) -> bool {
            true
        }
        fn synced(_: &TableHandle) -> u64 {
            42
        }
        let s = SourceStatus::new(TableHandle::new(), up, synced);
        assert!(s.etcd_connected());
        assert_eq!(s.last_sync_unix(), 42);
    }
}
