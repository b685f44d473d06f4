//! The file route source: a JSON object of full etcd keys to vulcand documents (the same format
//! as the last-known-good snapshot), re-read when the file changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use super::TableHandle;
use crate::route::{compile, CompileOptions, KvSet};

/// Why a routes file could not be read at all (a bad *value* inside it is only skipped).
#[derive(Debug, Error)]
pub enum RoutesFileError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a JSON object of key to document: {message}")]
    Parse { file: PathBuf, message: String },
}

/// Parse routes-file text into a key/value set. Object values are serialised back to JSON text,
/// string values are taken as the JSON text itself (as etcd holds it).
pub fn parse_routes(text: &str, file: &Path) -> Result<KvSet, RoutesFileError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RoutesFileError::Parse {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
    let serde_json::Value::Object(map) = value else {
        return Err(RoutesFileError::Parse {
            file: file.to_path_buf(),
            message: "top level is not an object".to_string(),
        });
    };
    let mut kv = KvSet::default();
    for (key, value) in map {
        let text = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        kv.entries.insert(key, text);
    }
    Ok(kv)
}

/// Read and parse a routes file.
pub fn read_routes(file: &Path) -> Result<KvSet, RoutesFileError> {
    let text = std::fs::read_to_string(file).map_err(|source| RoutesFileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse_routes(&text, file)
}

/// Write a key/value set in the routes-file format, atomically (temporary file + rename).
pub fn write_routes(file: &Path, kv: &KvSet) -> std::io::Result<()> {
    let mut map = serde_json::Map::new();
    for (k, v) in &kv.entries {
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
        map.insert(k.clone(), value);
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(map))
        .map_err(std::io::Error::other)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// Load the file, compile and publish it; log what was skipped or in conflict.
/// Returns false (and keeps the current table) when the file itself cannot be read.
pub fn load_and_publish(file: &Path, opts: &CompileOptions, handle: &TableHandle) -> bool {
    match read_routes(file) {
        Ok(kv) => {
            let compiled = compile(&kv, opts);
            for s in &compiled.report.skipped {
                tracing::warn!(key = %s.key, reason = %s.reason, "route value skipped");
            }
            for c in &compiled.report.conflicts {
                tracing::warn!(winner = %c.winner, loser = %c.loser, reason = %c.reason, "route conflict");
            }
            for u in &compiled.report.unsupported {
                tracing::warn!(key = %u.key, reason = %u.reason, "route setting not supported");
            }
            tracing::info!(
                file = %file.display(),
                frontends = compiled.table.frontends().len(),
                backends = compiled.table.backends().len(),
                "route table loaded"
            );
            handle.publish(compiled.table, compiled.report);
            true
        }
        Err(e) => {
            tracing::error!("{e}; keeping the current route table");
            false
        }
    }
}

/// Fingerprint used to notice changes without reading the file every poll.
/// The inode is part of it: a file replaced by rename (as editors and deploy tools do) is
/// noticed even when its size and coarse modification time did not change.
fn stamp(file: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Watch the file on a thread of its own and republish whenever it changes, until `stop`.
pub fn spawn_watcher(
    file: PathBuf,
    opts: CompileOptions,
    handle: TableHandle,
    poll: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringway-routes".into())
        .spawn(move || {
            let mut last = stamp(&file);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(poll);
                let now = stamp(&file);
                if now != last && now.is_some() {
                    last = now;
                    load_and_publish(&file, &opts, &handle);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_and_string_values_become_json_text() {
        let kv = parse_routes(
            r#"{"/vulcand/backends/b1/backend": {"Type":"http"},
                "/vulcand/backends/b1/servers/s1": "{\"URL\":\"http://127.0.0.1:5000\"}"}"#,
            Path::new("r.json"),
        )
        .unwrap();
        assert_eq!(
            kv.entries["/vulcand/backends/b1/backend"],
            r#"{"Type":"http"}"#
        );
        assert_eq!(
            kv.entries["/vulcand/backends/b1/servers/s1"],
            r#"{"URL":"http://127.0.0.1:5000"}"#
        );
    }

    #[test]
    fn a_non_object_file_is_refused_with_its_name() {
        let err = parse_routes("[1,2]", Path::new("routes.json")).unwrap_err();
        assert!(err.to_string().starts_with("routes.json:"), "{err}");
    }
}
