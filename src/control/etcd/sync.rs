//! The control thread's loop: full read → publish → watch from revision+1, coalescing bursts of
//! events into one compile; on any loss, keep the current table, back off, reconnect (to the
//! next endpoint first: the member just lost is likely the one that went away), re-read.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::client::{self, Member, MAX_MESSAGE_BYTES};
use super::Startup;
use crate::config::EtcdConfig;
use crate::control::{file, TableHandle};
use crate::route::{compile, CompileOptions, KvSet, Report};

/// After an event, further events arriving within this gap join the same compile...
const COALESCE_GAP: Duration = Duration::from_millis(5);
/// ...up to this long after the first one, so a steady stream still publishes regularly.
const COALESCE_CAP: Duration = Duration::from_millis(50);
/// The snapshot is rewritten at most this often during bursts (always after a full read).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// How a watch ended.
enum WatchEnd {
    Stopped,
    /// etcd compacted past the watched revision: re-read everything, now.
    Compacted,
    /// The stream broke or etcd cancelled it: back off, reconnect, re-read.
    Lost(String),
}

pub(super) struct RouteSync {
    cfg: EtcdConfig,
    snapshot: Option<PathBuf>,
    opts: CompileOptions,
    handle: TableHandle,
    stop: watch::Receiver<bool>,
    kv: KvSet,
    /// What the last compile reported, so only new problems are logged during bursts.
    last_report: Report,
    snapshot_dirty: bool,
    snapshot_written: Option<Instant>,
}

impl RouteSync {
    pub(super) fn new(
        cfg: EtcdConfig,
        snapshot: Option<PathBuf>,
        opts: CompileOptions,
        handle: TableHandle,
        stop: watch::Receiver<bool>,
    ) -> RouteSync {
        RouteSync {
            cfg,
            snapshot,
            opts,
            handle,
            stop,
            kv: KvSet::default(),
            last_report: Report::default(),
            snapshot_dirty: false,
            snapshot_written: None,
        }
    }

    pub(super) async fn run(mut self, started: SyncSender<Startup>) {
        let mut started = Some(started);
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let mut member: Option<Member> = None;
        let mut next_endpoint = client::first_endpoint(&self.cfg);
        let mut delay: Option<Duration> = None;
        loop {
            if let Some(d) = delay.take() {
                if self.sleep_or_stop(d).await {
                    break;
                }
            }
            let cfg = self.cfg.clone();
            let reuse = member.take();
            let attempt = async move {
                let m = match reuse {
                    Some(m) => m,
                    None => client::connect_from(&cfg, next_endpoint)
                        .await
                        .map_err(|e| (e, None))?,
                };
                // A member that answered the probe but fails the read: start elsewhere next.
                match client::read_all(&m.client, &cfg).await {
                    Ok(kv) => Ok((m, kv)),
                    Err(e) => Err((e, Some(m.next()))),
                }
            };
            let result = tokio::select! {
                _ = self.stop.changed() => break,
                r = attempt => r,
            };
            let (m, kv) = match result {
                Ok(ok) => ok,
                Err((e, next)) => {
                    if let Some(n) = next {
                        next_endpoint = n;
                    }
                    self.handle.set_etcd_connected(false);
                    if let Some(tx) = started.take() {
                        tracing::error!("{e}");
                        let _ = tx.send(self.load_snapshot());
                    } else {
                        tracing::warn!("{e}; serving the current route table, retrying");
                    }
                    delay = Some(backoff.next_delay());
                    continue;
                }
            };
            let revision = kv.revision;
            self.apply_full_read(kv);
            if let Some(tx) = started.take() {
                let _ = tx.send(Startup::Etcd { revision });
            }
            match self.watch(&m.client, &mut backoff).await {
                WatchEnd::Stopped => break,
                WatchEnd::Compacted => member = Some(m),
                WatchEnd::Lost(why) => {
                    self.handle.set_etcd_connected(false);
                    tracing::warn!(
                        endpoint = %self.cfg.endpoints.get(m.endpoint).map_or("", String::as_str),
                        "etcd watch lost: {why}; serving the current route table, reconnecting"
                    );
                    next_endpoint = m.next();
                    delay = Some(backoff.next_delay());
                }
            }
        }
        self.write_snapshot_if(true);
        self.handle.set_etcd_connected(false);
    }

    /// Sleep for `d`; true if asked to stop meanwhile.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.changed() => true,
            _ = tokio::time::sleep(d) => *self.stop.borrow(),
        }
    }

    /// At start-up with etcd unreachable: serve the last-known-good snapshot, if there is one.
    fn load_snapshot(&mut self) -> Startup {
        let Some(path) = self.snapshot.clone() else {
            tracing::warn!(
                "no routes.snapshot configured: serving no routes (not ready) until etcd answers"
            );
            return Startup::Empty;
        };
        match file::read_routes(&path) {
            Ok(kv) => {
                let keys = kv.entries.len();
                self.kv = kv;
                self.compile_and_publish();
                tracing::warn!(
                    snapshot = %path.display(),
                    keys,
                    "etcd unreachable: serving the last-known-good snapshot until it answers"
                );
                Startup::Snapshot { path, keys }
            }
            Err(e) => {
                tracing::warn!("{e}: serving no routes (not ready) until etcd answers");
                Startup::Empty
            }
        }
    }

    /// Replace the whole set with a full read. Full reads are rare (start-up, reconnects,
    /// compaction), so the table is always recompiled, which also stamps its revision.
    fn apply_full_read(&mut self, kv: KvSet) {
        tracing::info!(
            revision = kv.revision,
            keys = kv.entries.len(),
            changed = kv.entries != self.kv.entries,
            "read every route key from etcd"
        );
        self.kv = kv;
        self.compile_and_publish();
        self.handle.mark_synced();
        self.write_snapshot_if(true);
    }

    fn compile_and_publish(&mut self) {
        let started = Instant::now();
        let compiled = compile(&self.kv, &self.opts);
        let report = &compiled.report;
        for s in report
            .skipped
            .iter()
            .filter(|s| !self.last_report.skipped.contains(s))
        {
            tracing::warn!(key = %s.key, reason = %s.reason, "route value skipped");
        }
        for c in report
            .conflicts
            .iter()
            .filter(|c| !self.last_report.conflicts.contains(c))
        {
            tracing::warn!(winner = %c.winner, loser = %c.loser, reason = %c.reason, "route conflict");
        }
        for u in report
            .unsupported
            .iter()
            .filter(|u| !self.last_report.unsupported.contains(u))
        {
            tracing::warn!(key = %u.key, reason = %u.reason, "route setting not supported");
        }
        tracing::info!(
            revision = self.kv.revision,
            frontends = compiled.table.frontends().len(),
            backends = compiled.table.backends().len(),
            skipped = report.skipped.len(),
            conflicts = report.conflicts.len(),
            compile_us = started.elapsed().as_micros() as u64,
            "route table published"
        );
        self.last_report = compiled.report.clone();
        self.handle.publish(compiled.table, compiled.report);
        self.snapshot_dirty = self.snapshot.is_some();
    }

    /// Write the snapshot when it is behind and `force` or enough time passed since the last.
    fn write_snapshot_if(&mut self, force: bool) {
        let Some(path) = &self.snapshot else { return };
        if !self.snapshot_dirty {
            return;
        }
        let due = self
            .snapshot_written
            .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY);
        if !(force || due) {
            return;
        }
        match file::write_routes(path, &self.kv) {
            Ok(()) => tracing::debug!(snapshot = %path.display(), "snapshot written"),
            Err(e) => tracing::warn!(
                snapshot = %path.display(),
                "cannot write the last-known-good snapshot: {e}"
            ),
        }
        self.snapshot_dirty = false;
        self.snapshot_written = Some(Instant::now());
    }

    /// When the next throttled snapshot write is due, if one is pending.
    fn snapshot_due(&self) -> Option<tokio::time::Instant> {
        if !self.snapshot_dirty {
            return None;
        }
        let at = self
            .snapshot_written
            .map_or_else(Instant::now, |t| t + SNAPSHOT_EVERY);
        Some(at.into())
    }

    async fn open_watch(&self, client: &Client) -> Result<WatchStream, String> {
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let prefix = client::key_prefix(&self.cfg.prefix);
        let opts = WatchOptions::new()
            .with_range(client::range_end(&prefix))
            .with_start_revision(self.kv.revision + 1);
        let dial = Duration::from_millis(self.cfg.dial_timeout_ms);
        match tokio::time::timeout(dial, watch_client.watch(prefix, Some(opts))).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("cannot open the watch: {e}")),
            Err(_) => Err(format!("the watch did not open within {dial:?}")),
        }
    }

    async fn watch(&mut self, client: &Client, backoff: &mut Backoff) -> WatchEnd {
        let mut stream = match self.open_watch(client).await {
            Ok(s) => s,
            Err(e) => return WatchEnd::Lost(e),
        };
        loop {
            let due = self.snapshot_due();
            let msg = tokio::select! {
                _ = self.stop.changed() => return WatchEnd::Stopped,
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    self.write_snapshot_if(false);
                    continue;
                }
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return WatchEnd::Lost("the watch stream ended".into()),
                Err(e) => return WatchEnd::Lost(e.to_string()),
            };
            if let Some(end) = self.end_of(&resp) {
                return end;
            }
            if resp.created() {
                backoff.reset();
                self.handle.set_etcd_connected(true);
                tracing::info!(from_revision = self.kv.revision + 1, "watching etcd");
            }
            let mut changed = self.apply_events(&resp);
            if resp.events().is_empty() {
                continue;
            }
            let (more, end) = self.coalesce(&mut stream).await;
            changed |= more;
            if changed {
                self.compile_and_publish();
                self.write_snapshot_if(false);
            }
            self.handle.mark_synced();
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Drain further events that arrive close behind the first, within the cap, so a burst of
    /// writes costs one compile. Returns whether anything changed and how the watch ended, if
    /// it did meanwhile (what was applied is still published).
    async fn coalesce(&mut self, stream: &mut WatchStream) -> (bool, Option<WatchEnd>) {
        let cap = Instant::now() + COALESCE_CAP;
        let mut changed = false;
        loop {
            let left = cap.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (changed, None);
            }
            match tokio::time::timeout(COALESCE_GAP.min(left), stream.message()).await {
                Err(_) => return (changed, None),
                Ok(Ok(Some(resp))) => {
                    if let Some(end) = self.end_of(&resp) {
                        return (changed, Some(end));
                    }
                    changed |= self.apply_events(&resp);
                }
                Ok(Ok(None)) => {
                    return (
                        changed,
                        Some(WatchEnd::Lost("the watch stream ended".into())),
                    )
                }
                Ok(Err(e)) => return (changed, Some(WatchEnd::Lost(e.to_string()))),
            }
        }
    }

    /// A compacted or cancelled watch ends here.
    fn end_of(&self, resp: &WatchResponse) -> Option<WatchEnd> {
        if resp.compact_revision() > 0 {
            tracing::warn!(
                compact_revision = resp.compact_revision(),
                watched_from = self.kv.revision + 1,
                "etcd watch compacted: re-reading every route key"
            );
            return Some(WatchEnd::Compacted);
        }
        if resp.canceled() {
            return Some(WatchEnd::Lost(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            )));
        }
        None
    }

    /// Apply one response's events to the key/value set; true if any entry changed.
    fn apply_events(&mut self, resp: &WatchResponse) -> bool {
        let mut changed = false;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            self.kv.revision = self.kv.revision.max(kv.mod_revision());
            let Ok(key) = kv.key_str() else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "etcd key is not UTF-8; skipped");
                continue;
            };
            match event.event_type() {
                EventType::Put => match kv.value_str() {
                    Ok(v) => {
                        if self.kv.entries.get(key).map(String::as_str) != Some(v) {
                            self.kv.entries.insert(key.to_string(), v.to_string());
                            changed = true;
                        }
                    }
                    Err(_) => {
                        tracing::warn!(key, "etcd value is not UTF-8; treated as deleted");
                        changed |= self.kv.entries.remove(key).is_some();
                    }
                },
                EventType::Delete => changed |= self.kv.entries.remove(key).is_some(),
            }
        }
        if let Some(h) = resp.header() {
            self.kv.revision = self.kv.revision.max(h.revision());
        }
        changed
    }
}
