//! Deploy profiles: the typed, strict TOML a node is started with. Unknown keys are errors and
//! every default is documented on its field (see `deploy/profiles/reference.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Why a profile was refused. Always names the file, and the key when there is one.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// A whole profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    pub routes: RoutesConfig,
    #[serde(default)]
    pub etcd: EtcdConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

/// `workers = 2` or `workers = "auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// One worker per CPU this process may run on.
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) if (1..=1024).contains(&n) => Ok(Workers::Count(n as usize)),
            Raw::Count(n) => Err(serde::de::Error::custom(format!(
                "workers must be between 1 and 1024, got {n}"
            ))),
            Raw::Word(w) if w == "auto" => Ok(Workers::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "workers must be a number or \"auto\", got {w:?}"
            ))),
        }
    }
}

/// The io driver a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// `[node]`: workers and their event loops.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Number of worker threads. Default `"auto"`: one per allowed CPU.
    pub workers: Workers,
    /// Pin each worker to its own CPU. Default `true`.
    pub pin_workers: bool,
    /// Event loop. Default `"auto"` (io_uring, epoll where io_uring is unavailable).
    pub io_driver: IoDriver,
    /// io_uring submission queue entries per worker. Default 1024.
    pub ring_entries: u32,
    /// io_uring `COOP_TASKRUN` + `SINGLE_ISSUER` (+ `DEFER_TASKRUN`): fewer interrupts and
    /// cheaper completions; needs Linux 6.1. Default `true` (falls back when refused).
    pub ring_fast_flags: bool,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT. Default 30.
    pub shutdown_grace_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            workers: Workers::Auto,
            pin_workers: true,
            io_driver: IoDriver::Auto,
            ring_entries: 1024,
            ring_fast_flags: true,
            shutdown_grace_secs: 30,
        }
    }
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Services of this host call the mesh: every route is reachable.
    Mesh,
    /// The public edge: only allow-listed routes.
    Edge,
}

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Address to bind, e.g. `127.0.0.1:9003`. Every worker binds it with SO_REUSEPORT.
    pub addr: SocketAddr,
    /// `mesh` (default) or `edge`.
    #[serde(default = "default_role")]
    pub role: ListenerRole,
    /// Listen backlog. Default 1024.
    #[serde(default = "default_backlog")]
    pub backlog: i32,
}

fn default_role() -> ListenerRole {
    ListenerRole::Mesh
}

fn default_backlog() -> i32 {
    1024
}

/// Where routes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteSourceKind {
    File,
    Etcd,
}

/// `[routes]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// `file` or `etcd`.
    pub source: RouteSourceKind,
    /// Routes file (for `source = "file"`), relative to the profile's directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Last-known-good snapshot written after every successful apply, read when etcd is down.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// How often the routes file is checked for changes, in milliseconds. Default 500.
    #[serde(default = "default_poll_ms")]
    pub file_poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    500
}

/// `[etcd]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the cluster; requests are balanced over them. Default
    /// `["http://127.0.0.1:2379"]`. `https://` needs the `etcd-tls` build feature.
    pub endpoints: Vec<String>,
    /// Key prefix. Default `/vulcand`.
    pub prefix: String,
    /// User for etcd authentication. Default none (no auth). Needs `password`.
    pub username: Option<String>,
    /// Password of `username`. Default none.
    pub password: Option<String>,
    /// CA bundle (PEM) that signs the etcd servers' certificates. Default none. Needs the
    /// `etcd-tls` build feature; setting any TLS key turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS. Default none. Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`. Default none.
    pub key_file: Option<PathBuf>,
    /// Deadline for reaching etcd: the start-up probe, each reconnect, each full read, in
    /// milliseconds. Default 2000.
    pub dial_timeout_ms: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "/vulcand".to_string(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            dial_timeout_ms: 2000,
        }
    }
}

impl EtcdConfig {
    /// Whether any TLS key is set.
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// `[limits]`: what a client may send. Defaults follow nginx and HAProxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head in bytes; beyond it 431. Default 32768.
    pub max_head_bytes: usize,
    /// Longest request target in bytes; beyond it 414 (never more than `max_head_bytes`).
    /// Default 16384.
    pub max_target_bytes: usize,
    /// Most header fields; beyond it 431. Default 100.
    pub max_headers: usize,
    /// Largest request body in bytes; beyond it 413. Default 0 = unlimited.
    pub max_body_bytes: u64,
    /// Size of the pooled buffers a connection borrows while a request or response is in
    /// flight, in bytes. Default 16384.
    pub buffer_bytes: usize,
    /// Buffer a body larger than one `buffer_bytes` read streams through, in bytes: fewer
    /// reads and writes per byte for large transfers. Default 65536.
    pub body_buffer_bytes: usize,
    /// Buffer an idle keep-alive client connection keeps for its next request head, in bytes;
    /// it grows up to `max_head_bytes` for larger heads. Default 1024.
    pub idle_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_head_bytes: 32 * 1024,
            max_target_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 0,
            buffer_bytes: 16 * 1024,
            body_buffer_bytes: 64 * 1024,
            idle_buffer_bytes: 1024,
        }
    }
}

/// `[timeouts]`, all in milliseconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Time to receive a whole request head once its first byte arrived (408). Default 10000.
    pub header_ms: u64,
    /// How long an idle keep-alive client connection is kept. Default 60000.
    pub keepalive_ms: u64,
    /// For this long after a response, an idle keep-alive connection keeps a read (and its
    /// small buffer) pending for the next request; after it, it waits for readability alone
    /// and holds no buffer. Default 1000.
    pub idle_hot_ms: u64,
    /// Longest pause between two reads of a request body (408). Default 30000.
    pub body_ms: u64,
    /// Upstream connect deadline (504, as nginx). Default 3000.
    pub connect_ms: u64,
    /// Longest wait for the upstream's response head, or between two body reads (504).
    /// Default 30000.
    pub upstream_read_ms: u64,
    /// Longest wait for a write to either peer to make progress. Default 30000.
    pub send_ms: u64,
    /// A protocol-switched tunnel (WebSocket) closes after this long without traffic in a
    /// direction. Default 3600000 (one hour).
    pub tunnel_idle_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header_ms: 10_000,
            keepalive_ms: 60_000,
            idle_hot_ms: 1_000,
            body_ms: 30_000,
            connect_ms: 3_000,
            upstream_read_ms: 30_000,
            send_ms: 30_000,
            tunnel_idle_ms: 3_600_000,
        }
    }
}

/// `[upstream]`: the per-worker keep-alive pools and passive health.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Idle connections kept per server, per worker. Default 64.
    pub max_idle_per_server: usize,
    /// How long an idle upstream connection is kept, ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// Failures within `fail_timeout_ms` that mark a server down (nginx `max_fails`). Default 1.
    pub max_fails: u32,
    /// Window for counting failures, and how long a server stays down (nginx
    /// `fail_timeout`), ms. Default 10000.
    pub fail_timeout_ms: u64,
    /// Attempts on other servers after a failure, when a retry is safe. Default 2.
    pub max_retries: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_idle_per_server: 64,
            idle_timeout_ms: 30_000,
            max_fails: 1,
            fail_timeout_ms: 10_000,
            max_retries: 2,
        }
    }
}

/// `[throttle]`: how `ratelimit` and `connlimit` middlewares refuse, and how many keys
/// they remember.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Status of a throttled request: 429 (default, as vulcand) or 503 (as nginx's
    /// `limit_req_status` default).
    pub reject_status: u16,
    /// A key (client, host, header value) unused for this many seconds is forgotten; its
    /// node-wide bucket is kept until it is full again, so forgetting never resets a limit.
    /// Default 60.
    pub idle_key_secs: u64,
    /// Keys each worker tracks at most; beyond it one not used recently is evicted (its
    /// state stays node-wide). Default 100000.
    pub max_keys: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            reject_status: 429,
            idle_key_secs: 60,
            max_keys: 100_000,
        }
    }
}

/// `[admin]`: the admin HTTP listener (`/metrics`, `/routes`, `/healthz`, `/readyz`). Without
/// this section there is no admin listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9090`. Keep it on loopback (or a management
    /// network): the endpoint has no authentication.
    pub addr: SocketAddr,
}

/// Where the access log goes: `"off"`, `"stdout"` or a file path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AccessLogTarget {
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogTarget::Off => f.write_str("off"),
            AccessLogTarget::Stdout => f.write_str("stdout"),
            AccessLogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "" => {
                return Err(serde::de::Error::custom(
                    "access_log must be \"off\", \"stdout\" or a file path",
                ))
            }
            _ => AccessLogTarget::File(PathBuf::from(s)),
        })
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info` (default), `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: String,
    /// JSON access log, one line per request: `"off"` (default), `"stdout"` or a file path
    /// (relative to the profile's directory; opened in append mode by every worker).
    pub access_log: AccessLogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            access_log: AccessLogTarget::Off,
        }
    }
}

impl TimeoutsConfig {
    pub fn header(&self) -> Duration {
        Duration::from_millis(self.header_ms)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }
    pub fn idle_hot(&self) -> Duration {
        Duration::from_millis(self.idle_hot_ms)
    }
    pub fn body(&self) -> Duration {
        Duration::from_millis(self.body_ms)
    }
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn upstream_read(&self) -> Duration {
        Duration::from_millis(self.upstream_read_ms)
    }
    pub fn send(&self) -> Duration {
        Duration::from_millis(self.send_ms)
    }
    pub fn tunnel_idle(&self) -> Duration {
        Duration::from_millis(self.tunnel_idle_ms)
    }
}

impl Profile {
    /// Read and validate a profile. Relative paths inside it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Profile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut profile = Profile::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(f) = profile.routes.file.as_mut() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        let etcd = &mut profile.etcd;
        for f in [
            profile.routes.snapshot.as_mut(),
            etcd.ca_file.as_mut(),
            etcd.cert_file.as_mut(),
            etcd.key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let AccessLogTarget::File(f) = &mut profile.log.access_log {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        Ok(profile)
    }

    /// Parse and validate profile text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Profile, ConfigError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        profile.validate(file)?;
        Ok(profile)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "at least one [[listener]] is required".into(),
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.name.is_empty() {
                return Err(invalid(
                    &format!("listener[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                return Err(invalid(
                    &format!("listener[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            if self.listeners[..i].iter().any(|o| o.addr == l.addr) {
                return Err(invalid(
                    &format!("listener[{i}].addr"),
                    format!("{} is already used by another listener", l.addr),
                ));
            }
            if l.backlog < 1 {
                return Err(invalid(
                    &format!("listener[{i}].backlog"),
                    "must be at least 1".into(),
                ));
            }
        }
        match self.routes.source {
            RouteSourceKind::File if self.routes.file.is_none() => {
                return Err(invalid(
                    "routes.file",
                    "required when routes.source = \"file\"".into(),
                ))
            }
            RouteSourceKind::Etcd if self.etcd.endpoints.is_empty() => {
                return Err(invalid(
                    "etcd.endpoints",
                    "at least one endpoint is required".into(),
                ))
            }
            _ => {}
        }
        if !self.etcd.prefix.starts_with('/') {
            return Err(invalid("etcd.prefix", "must start with '/'".into()));
        }
        let etcd = &self.etcd;
        for (i, e) in etcd.endpoints.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    &format!("etcd.endpoints[{i}]"),
                    format!("must be an http:// or https:// URL, got {e:?}"),
                ));
            }
        }
        if etcd.username.is_some() != etcd.password.is_some() {
            return Err(invalid(
                "etcd.password",
                "etcd.username and etcd.password go together".into(),
            ));
        }
        if etcd.cert_file.is_some() != etcd.key_file.is_some() {
            return Err(invalid(
                "etcd.key_file",
                "etcd.cert_file and etcd.key_file go together".into(),
            ));
        }
        if etcd.dial_timeout_ms == 0 {
            return Err(invalid("etcd.dial_timeout_ms", "must be at least 1".into()));
        }
        if self.routes.file_poll_ms == 0 {
            return Err(invalid("routes.file_poll_ms", "must be at least 1".into()));
        }
        if !(2..=32768).contains(&self.node.ring_entries)
            || !self.node.ring_entries.is_power_of_two()
        {
            return Err(invalid(
                "node.ring_entries",
                "must be a power of two between 2 and 32768".into(),
            ));
        }
        let lim = &self.limits;
        if lim.max_head_bytes < 1024 {
            return Err(invalid(
                "limits.max_head_bytes",
                "must be at least 1024".into(),
            ));
        }
        if lim.max_target_bytes < 64 {
            return Err(invalid(
                "limits.max_target_bytes",
                "must be at least 64".into(),
            ));
        }
        if lim.max_headers == 0 {
            return Err(invalid("limits.max_headers", "must be at least 1".into()));
        }
        if lim.buffer_bytes < 1024 {
            return Err(invalid(
                "limits.buffer_bytes",
                "must be at least 1024".into(),
            ));
        }
        if lim.body_buffer_bytes < lim.buffer_bytes || lim.body_buffer_bytes > 16 << 20 {
            return Err(invalid(
                "limits.body_buffer_bytes",
                "must be at least limits.buffer_bytes and at most 16 MiB".into(),
            ));
        }
        let t = &self.timeouts;
        for (key, v) in [
            ("timeouts.header_ms", t.header_ms),
            ("timeouts.keepalive_ms", t.keepalive_ms),
            ("timeouts.idle_hot_ms", t.idle_hot_ms),
            ("timeouts.body_ms", t.body_ms),
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.upstream_read_ms", t.upstream_read_ms),
            ("timeouts.send_ms", t.send_ms),
            ("timeouts.tunnel_idle_ms", t.tunnel_idle_ms),
            ("upstream.idle_timeout_ms", self.upstream.idle_timeout_ms),
            ("upstream.fail_timeout_ms", self.upstream.fail_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if !matches!(self.throttle.reject_status, 429 | 503) {
            return Err(invalid(
                "throttle.reject_status",
                format!("must be 429 or 503, got {}", self.throttle.reject_status),
            ));
        }
        if self.throttle.idle_key_secs == 0 {
            return Err(invalid(
                "throttle.idle_key_secs",
                "must be at least 1".into(),
            ));
        }
        if !(1..=10_000_000).contains(&self.throttle.max_keys) {
            return Err(invalid(
                "throttle.max_keys",
                "must be between 1 and 10000000".into(),
            ));
        }
        if self.upstream.max_fails == 0 {
            return Err(invalid("upstream.max_fails", "must be at least 1".into()));
        }
        match self.log.level.as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => {}
            other => {
                return Err(invalid(
                    "log.level",
                    format!("must be error, warn, info, debug or trace, got {other:?}"),
                ))
            }
        }
        Ok(())
    }

    /// Head limits for the codec.
    pub fn head_limits(&self) -> crate::http::HeadLimits {
        crate::http::HeadLimits {
            max_head_bytes: self.limits.max_head_bytes,
            // A target can never be longer than the head that carries it.
            max_target_bytes: self.limits.max_target_bytes.min(self.limits.max_head_bytes),
            max_headers: self.limits.max_headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ConfigError> {
        Profile::parse(text, Path::new("p.toml"))
    }

    const MINIMAL: &str = "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9003\"\n\n[routes]\nsource = \"file\"\nfile = \"r.json\"\n";

    #[test]
    fn every_profile_in_the_repo_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/profiles");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("deploy/profiles exists") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(
            seen >= 4,
            "expected the reference, dev, mesh-node and bench profiles"
        );
    }

    #[test]
    fn minimal_profile_takes_documented_defaults() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!(p.node.workers, Workers::Auto);
        assert!(p.node.pin_workers);
        assert_eq!(p.listeners[0].role, ListenerRole::Mesh);
        assert_eq!(p.limits.max_headers, 100);
        assert_eq!(p.timeouts.connect_ms, 3000);
        assert_eq!(p.etcd.prefix, "/vulcand");
        assert!(p.admin.is_none());
        assert_eq!(p.throttle.reject_status, 429);
        assert_eq!(p.throttle.idle_key_secs, 60);
        assert_eq!(p.throttle.max_keys, 100_000);
        assert_eq!(p.log.access_log, AccessLogTarget::Off);
    }

    #[test]
    fn access_log_is_off_stdout_or_a_path_relative_to_the_profile() {
        let dir = std::env::temp_dir().join(format!("ringway-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (value, want) in [
            ("off", AccessLogTarget::Off),
            ("stdout", AccessLogTarget::Stdout),
            (
                "logs/a.jsonl",
                AccessLogTarget::File(dir.join("logs/a.jsonl")),
            ),
            (
                "/var/log/a.jsonl",
                AccessLogTarget::File("/var/log/a.jsonl".into()),
            ),
        ] {
            let path = dir.join("p.toml");
            std::fs::write(
                &path,
                format!("{MINIMAL}\n[log]\naccess_log = \"{value}\"\n"),
            )
            .unwrap();
            assert_eq!(Profile::load(&path).unwrap().log.access_log, want);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let err = parse(&format!("{MINIMAL}\n[log]\naccess_log = \"\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("access_log"), "{err}");
    }

    #[test]
    fn admin_needs_an_address() {
        let p = parse(&format!("{MINIMAL}\n[admin]\naddr = \"127.0.0.1:9090\"\n")).unwrap();
        assert_eq!(p.admin.unwrap().addr.port(), 9090);
        let err = parse(&format!("{MINIMAL}\n[admin]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("addr"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}\n[admin]\naddr = \"127.0.0.1:9090\"\nport = 1\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = MINIMAL.replace("[routes]", "[routes]\nsorce = \"x\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:") && err.contains("sorce"), "{err}");
    }

    #[test]
    fn bad_values_name_file_key_and_reason() {
        let cases = [
            ("[node]\nworkers = 0\n", "workers"),
            ("[node]\nworkers = \"many\"\n", "workers"),
            ("[limits]\nmax_headers = 0\n", "limits.max_headers"),
            ("[timeouts]\nheader_ms = 0\n", "timeouts.header_ms"),
            ("[log]\nlevel = \"loud\"\n", "log.level"),
            ("[etcd]\nprefix = \"vulcand\"\n", "etcd.prefix"),
            (
                "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n",
                "etcd.endpoints[0]",
            ),
            ("[etcd]\nusername = \"u\"\n", "etcd.password"),
            ("[etcd]\ncert_file = \"c.pem\"\n", "etcd.key_file"),
            ("[etcd]\ndial_timeout_ms = 0\n", "etcd.dial_timeout_ms"),
            (
                "[throttle]\nreject_status = 500\n",
                "throttle.reject_status",
            ),
            ("[throttle]\nidle_key_secs = 0\n", "throttle.idle_key_secs"),
            ("[throttle]\nmax_keys = 0\n", "throttle.max_keys"),
        ];
        for (extra, key) in cases {
            let err = parse(&format!("{extra}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("p.toml") && err.contains(key),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn file_source_needs_a_file_and_listeners_need_distinct_addresses() {
        let err = parse(
            "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[routes]\nsource = \"file\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routes.file"), "{err}");
        let two = "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[[listener]]\nname = \"b\"\naddr = \"127.0.0.1:1\"\n[routes]\nsource = \"file\"\nfile = \"r\"\n";
        let err = parse(two).unwrap_err().to_string();
        assert!(err.contains("listener[1].addr"), "{err}");
    }
}
