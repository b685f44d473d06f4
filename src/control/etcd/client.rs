//! Reaching etcd: connection options from a profile's `[etcd]` section (auth, TLS, keep-alive),
//! a connect to one member at a time that tries the endpoints in turn, each within the dial
//! deadline (etcd-client's own connect is lazy), and a consistent, paged full read of the prefix.
//!
//! A client talks to one member, not to a channel balanced over all of them: a balanced channel
//! keeps handing requests and new watches to a member that went away (each fails at once with a
//! connect error, again and again), so a reconnect or a registration made while one member is
//! down fails often and at random. With one member per client, a failure moves the caller on to
//! the next endpoint, and every request asks for a member with a leader (etcd's
//! `WithRequireLeader`), so a member cut off from its cluster fails a watch or read instead of
//! leaving it hanging.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use thiserror::Error;

use super::tls::EtcdTls;
use crate::config::EtcdConfig;
use crate::route::KvSet;

/// Keys per page of a full read; pages are read at one revision, so the set is consistent.
const PAGE_KEYS: i64 = 1000;

/// Deadline of each step (TCP connect, handshake reads) of the handshake that explains a
/// failed TLS connect.
const DIAGNOSIS_DEADLINE: Duration = Duration::from_secs(1);

/// Largest gRPC message accepted (a page of large documents, a watch batch of a big txn).
pub(super) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Why etcd could not be used. Always names the endpoints: the operator's next step is to check
/// that etcd runs there (or fix the profile), not to change ringway.
#[derive(Debug, Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints} within {timeout_ms} ms ({what})")]
    Timeout {
        endpoints: String,
        timeout_ms: u64,
        what: &'static str,
    },
    #[error("etcd at {endpoints}: {what}: {source}")]
    Client {
        endpoints: String,
        what: &'static str,
        source: etcd_client::Error,
    },
    /// Every endpoint of a cluster failed: what each said, in the order they were tried.
    #[error("no etcd endpoint answered: {}", join_errors(.0))]
    NoEndpoint(Vec<EtcdError>),
    #[error("etcd TLS file {file}: {reason}")]
    TlsFile {
        file: std::path::PathBuf,
        reason: String,
    },
    #[error("etcd TLS: {0}")]
    TlsSetup(String),
    #[error("etcd at {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("cannot start the etcd control runtime: {0}")]
    Runtime(std::io::Error),
}

fn join_errors(errors: &[EtcdError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

impl EtcdError {
    fn client(cfg: &EtcdConfig, what: &'static str, source: etcd_client::Error) -> EtcdError {
        EtcdError::Client {
            endpoints: cfg.endpoints.join(","),
            what,
            source,
        }
    }

    fn timeout(cfg: &EtcdConfig, what: &'static str) -> EtcdError {
        EtcdError::Timeout {
            endpoints: cfg.endpoints.join(","),
            timeout_ms: cfg.dial_timeout_ms,
            what,
        }
    }
}

/// The watched and read key prefix: the configured prefix with exactly one trailing `/`, so
/// `/vulcand` never matches `/vulcandx/...`.
pub fn key_prefix(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// The end of the key range holding every key that starts with `prefix`.
pub(super) fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn connect_options(cfg: &EtcdConfig, tls: Option<&EtcdTls>) -> ConnectOptions {
    let dial = Duration::from_millis(cfg.dial_timeout_ms);
    // etcd refuses client pings more often than every 5 s (--grpc-keepalive-min-time).
    let mut opts = ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(dial)
        .with_keep_alive(Duration::from_secs(10), dial.max(Duration::from_secs(1)))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = tls {
        opts = opts.with_tls(tls.options());
    }
    opts
}

/// A client on one etcd member: `endpoint` is its index in the configured list, so a caller
/// that loses it moves on with [`Member::next`].
pub struct Member {
    pub client: Client,
    pub endpoint: usize,
}

impl Member {
    /// Where to start the next connect: the endpoint after this one.
    pub fn next(&self) -> usize {
        self.endpoint + 1
    }
}

/// Where a process starts in the endpoint list, so a fleet of nodes spreads over the members
/// instead of all landing on the first.
pub fn first_endpoint(cfg: &EtcdConfig) -> usize {
    std::process::id() as usize % cfg.endpoints.len().max(1)
}

/// Connect and prove etcd answers (a one-key read) within the dial deadline, trying the
/// endpoints in turn from a per-process starting point.
pub async fn connect(cfg: &EtcdConfig) -> Result<Client, EtcdError> {
    Ok(connect_from(cfg, first_endpoint(cfg)).await?.client)
}

/// Try the endpoints in turn from index `start` (wrapping), each within the dial deadline; the
/// first member that answers a one-key read wins. When none does, the error names what each
/// member said (a single endpoint's error stands alone). The TLS
/// files are read on every connect, so a reconnect picks up renewed certificates; when TLS is
/// on and no member can be used, a handshake of ringway's own says whether TLS is why.
pub async fn connect_from(cfg: &EtcdConfig, start: usize) -> Result<Member, EtcdError> {
    let tls = EtcdTls::load(cfg)?;
    let n = cfg.endpoints.len().max(1);
    let mut failed = Vec::with_capacity(n);
    for i in 0..n {
        let endpoint = (start + i) % n;
        match connect_one(cfg, endpoint, tls.as_ref()).await {
            Ok(client) => return Ok(Member { client, endpoint }),
            Err(e) => {
                if n > 1 {
                    tracing::debug!("{e}; trying the next endpoint");
                }
                failed.push(e);
            }
        }
    }
    let err = match failed.len() {
        0 => EtcdError::timeout(cfg, "connect"),
        1 => failed.remove(0),
        _ => EtcdError::NoEndpoint(failed),
    };
    let Some(tls) = tls else {
        return Err(err);
    };
    let endpoints = cfg.endpoints.clone();
    // A cluster that does not answer at all is not a TLS problem: the diagnosis gets a short
    // deadline of its own, so an outage delays the snapshot fallback and retries only a little.
    let dial = Duration::from_millis(cfg.dial_timeout_ms).min(DIAGNOSIS_DEADLINE);
    match tokio::task::spawn_blocking(move || tls.diagnose(&endpoints, dial)).await {
        Ok(Some(tls_err)) => {
            tracing::debug!("etcd-client: {err}");
            Err(tls_err)
        }
        _ => Err(err),
    }
}

async fn connect_one(
    cfg: &EtcdConfig,
    endpoint: usize,
    tls: Option<&EtcdTls>,
) -> Result<Client, EtcdError> {
    let dial = Duration::from_millis(cfg.dial_timeout_ms);
    let url = cfg.endpoints.get(endpoint).map_or("", String::as_str);
    let one = EtcdConfig {
        endpoints: vec![url.to_string()],
        ..cfg.clone()
    };
    let opts = connect_options(cfg, tls);
    let mut client = tokio::time::timeout(dial, Client::connect([url], Some(opts)))
        .await
        .map_err(|_| EtcdError::timeout(&one, "connect"))?
        .map_err(|e| EtcdError::client(&one, "connect", e))?;
    let probe = GetOptions::new().with_limit(1).with_keys_only();
    tokio::time::timeout(dial, client.get(key_prefix(&cfg.prefix), Some(probe)))
        .await
        .map_err(|_| EtcdError::timeout(&one, "probe read"))?
        .map_err(|e| EtcdError::client(&one, "probe read", e))?;
    Ok(client)
}

/// Every key under the prefix at one revision (the revision of the first page), read in pages.
/// Keys or values that are not UTF-8 are skipped with a warning.
pub async fn read_all(client: &Client, cfg: &EtcdConfig) -> Result<KvSet, EtcdError> {
    let dial = Duration::from_millis(cfg.dial_timeout_ms);
    let prefix = key_prefix(&cfg.prefix);
    let end = range_end(&prefix);
    let mut kv_client = client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut set = KvSet::default();
    let mut from: Vec<u8> = prefix.into_bytes();
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE_KEYS);
        if set.revision > 0 {
            opts = opts.with_revision(set.revision);
        }
        let resp = tokio::time::timeout(dial, kv_client.get(from.clone(), Some(opts)))
            .await
            .map_err(|_| EtcdError::timeout(cfg, "full read"))?
            .map_err(|e| EtcdError::client(cfg, "full read", e))?;
        if set.revision == 0 {
            set.revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            match (kv.key_str(), kv.value_str()) {
                (Ok(k), Ok(v)) => {
                    set.entries.insert(k.to_string(), v.to_string());
                }
                _ => tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "etcd key or value is not UTF-8; skipped"
                ),
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(set),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_ends_in_exactly_one_slash() {
        assert_eq!(key_prefix("/vulcand"), "/vulcand/");
        assert_eq!(key_prefix("/vulcand//"), "/vulcand/");
    }

    #[test]
    fn the_range_end_covers_exactly_the_prefix() {
        assert_eq!(range_end("/vulcand/"), b"/vulcand0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        let mut k = b"/vulcand/".to_vec();
        k.push(0xff);
        assert!(k < range_end("/vulcand/"));
    }
}
