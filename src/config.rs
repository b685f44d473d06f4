//! Deploy profiles: the typed, strict TOML a node is started with. Unknown keys are errors and
//! every default is documented on its field (see `deploy/profiles/reference.toml`).

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// cheaper completions; needs Linux 6.1. Default `true` (falls back when refused). Also
    /// enables, where the kernel has them, receives that poll first (5.19), keep-alive
    /// clients' requests through multishot receives into a buffer ring (6.0) and gathered
    /// writes as vectorized sends (6.17).
    pub ring_fast_flags: bool,
    /// io_uring: slots per worker in a table of registered files (Linux 5.19). A keep-alive
    /// client connection after eight responses, and a pooled upstream connection when reused,
    /// take a slot, so each receive and send on it skips the kernel's descriptor lookup and
    /// file reference count; connections beyond the table work as before. Capped at the
    /// process's open-file limit. 0 turns it off. Default 4096.
    pub ring_registered_files: u32,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT. Default 30.
    pub shutdown_grace_secs: u64,
    /// Unix socket through which a newer ringway takes over this one's listening sockets
    /// (zero-downtime upgrade). `ringway run` connects to it first: when a node answers, the
    /// new process receives its listeners and the old one drains and exits. Relative to the
    /// profile's directory. Default none: no handover, listeners are bound afresh.
    pub handover_socket: Option<PathBuf>,
    /// After handing its listeners over, how long an old process keeps idle keep-alive client
    /// connections open for one more request (answered with `Connection: close`) before it
    /// closes them, in milliseconds. Default 2000.
    pub handover_linger_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            workers: Workers::Auto,
            pin_workers: true,
            io_driver: IoDriver::Auto,
            ring_entries: 1024,
            ring_fast_flags: true,
            ring_registered_files: 4096,
            shutdown_grace_secs: 30,
            handover_socket: None,
            handover_linger_ms: 2000,
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
    /// Hand a connection to a worker only once its first bytes arrived (`TCP_DEFER_ACCEPT`,
    /// nginx's `deferred`, HAProxy's `defer-accept`): the worker wakes once per new connection
    /// instead of once for the connection and again for its request. A client that connects
    /// and stays silent is handed over after about a second. Default true.
    #[serde(default = "default_true")]
    pub defer_accept: bool,
    /// `[[listener.expose]]`: the routes an edge listener lets through, first match wins.
    /// Required (at least one) on an edge listener, refused on a mesh listener.
    #[serde(default)]
    pub expose: Vec<ExposeConfig>,
    /// Edge only: peers (CIDRs or addresses) whose `X-Forwarded-*`, `Forwarded` and
    /// `X-Request-Id` are kept (a load balancer in front). From anyone else they are replaced.
    /// Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `[listener.limits]`: this listener's head limits and head timeout, overriding
    /// `[limits]`/`[timeouts]` (and the stricter edge defaults).
    #[serde(default)]
    pub limits: ListenerLimits,
    /// `[listener.tls]`: terminate TLS (HTTPS) on this listener. Default none: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[listener.tls]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chains (PEM) and their keys (PKCS#8, PKCS#1 or SEC1 PEM), relative to the
    /// profile's directory. The first is the default; the others are chosen by SNI from their
    /// SAN names (exact first, then wildcard).
    pub certificates: Vec<CertificateFiles>,
    /// Oldest protocol version: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsMinVersion,
    /// CA certificates (PEM) that client certificates are verified against.
    pub client_ca: Option<PathBuf>,
    /// `"off"`, `"optional"` or `"required"`. Default `"required"` when `client_ca` is set,
    /// else `"off"`.
    pub client_auth: Option<ClientAuth>,
    /// ALPN protocols offered, in order. Default `["http/1.1"]`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    /// Time for a whole handshake from its first byte, ms. Default 10000.
    #[serde(default = "default_handshake_ms")]
    pub handshake_ms: u64,
    /// Handshakes one worker runs at once (over its TLS listeners); past it, the oldest
    /// unfinished one is closed to make room. Default 1024.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
}

impl TlsConfig {
    pub fn client_auth(&self) -> ClientAuth {
        match (self.client_auth, &self.client_ca) {
            (Some(a), _) => a,
            (None, Some(_)) => ClientAuth::Required,
            (None, None) => ClientAuth::Off,
        }
    }
}

/// One `{ cert = "...", key = "..." }` of `[listener.tls] certificates`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TlsMinVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Off,
    Optional,
    Required,
}

fn default_alpn() -> Vec<String> {
    vec!["http/1.1".into()]
}

fn default_handshake_ms() -> u64 {
    10_000
}

fn default_max_handshakes() -> usize {
    1024
}

/// `[[listener.expose]]`: one allow-listed path on an edge listener.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeConfig {
    /// Paths starting with these bytes (as received, no decoding; nginx `location /p`).
    pub prefix: Option<String>,
    /// Or paths matching this regex (unanchored; write `^...`).
    pub regex: Option<String>,
    /// Methods allowed (GET implies HEAD). Default: any but TRACE and CONNECT. Others: 405.
    pub methods: Option<Vec<String>>,
    /// Replace the matched prefix with this before routing and forwarding (prefix rules only;
    /// nginx `proxy_pass http://up/new/`). The rest of the target is kept byte for byte.
    pub rewrite: Option<String>,
    /// nginx `limit_req` rate: `"100r/s"` or `"30r/m"`, node-wide per key. Default none.
    pub rate: Option<String>,
    /// nginx `burst`: excess requests allowed back to back beyond the one served. Default 0.
    pub burst: Option<u64>,
    /// nginx `nodelay`: true lets the burst through at once; false or absent (as nginx) makes
    /// each request within the burst wait for its turn at the rate.
    pub nodelay: Option<bool>,
    /// What the rate is counted per: `client.ip` (default), `request.host` or
    /// `request.header.<Name>`.
    pub key: Option<String>,
    /// Protocols a request under this rule may switch to (`["websocket"]`); default none: the
    /// `Upgrade` offer is removed and the request is served as plain HTTP/1.1. `h2c` is never
    /// forwarded on any listener.
    pub upgrade: Option<Vec<String>>,
}

/// `[listener.limits]`: per-listener overrides. Edge listeners default to the stricter
/// [`EDGE_LIMITS`] (or `[limits]`/`[timeouts]` where those are stricter still).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Largest request head (431).
    pub max_head_bytes: Option<usize>,
    /// Longest request target (414).
    pub max_target_bytes: Option<usize>,
    /// Most header fields (431).
    pub max_headers: Option<usize>,
    /// Time for a whole request head once it started, ms (408).
    pub header_ms: Option<u64>,
}

/// Defaults of an edge listener: 16 KiB heads, 8 KiB targets, 64 fields, 5 s for a head.
pub const EDGE_LIMITS: (usize, usize, usize, u64) = (16 * 1024, 8 * 1024, 64, 5_000);

impl ListenerConfig {
    /// Head limits on this listener: its own `[listener.limits]`, else the edge defaults
    /// (never looser than `[limits]`), else `[limits]`.
    pub fn head_limits(&self, global: &LimitsConfig) -> crate::http::HeadLimits {
        let edge = self.role == ListenerRole::Edge;
        let pick = |own: Option<usize>, edge_default: usize, global: usize| match own {
            Some(v) => v,
            None if edge => edge_default.min(global),
            None => global,
        };
        let max_head_bytes = pick(
            self.limits.max_head_bytes,
            EDGE_LIMITS.0,
            global.max_head_bytes,
        );
        crate::http::HeadLimits {
            max_head_bytes,
            max_target_bytes: pick(
                self.limits.max_target_bytes,
                EDGE_LIMITS.1,
                global.max_target_bytes,
            )
            .min(max_head_bytes),
            max_headers: pick(self.limits.max_headers, EDGE_LIMITS.2, global.max_headers),
        }
    }

    /// Time a request head may take on this listener.
    pub fn header_timeout(&self, global: &TimeoutsConfig) -> Duration {
        let ms = match self.limits.header_ms {
            Some(ms) => ms,
            None if self.role == ListenerRole::Edge => EDGE_LIMITS.3.min(global.header_ms),
            None => global.header_ms,
        };
        Duration::from_millis(ms)
    }
}

fn default_role() -> ListenerRole {
    ListenerRole::Mesh
}

fn default_backlog() -> i32 {
    1024
}

fn default_true() -> bool {
    true
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
    /// Host aliases, as vulcand's `-aliases`: `{ localhost = "node-17.mesh" }` makes frontends
    /// whose route says `Host("localhost")` also serve requests for `node-17.mesh`, so routes
    /// registered for "this node" work whatever name callers use. Default: none.
    #[serde(default)]
    pub host_aliases: std::collections::BTreeMap<String, String>,
}

fn default_poll_ms() -> u64 {
    500
}

/// `[etcd]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the cluster. A node talks to one member at a time (each node starts at a
    /// different one) and moves to the next when it fails or loses its leader. Default
    /// `["http://127.0.0.1:2379"]`. All `http://` or all `https://`; `https://` speaks TLS and,
    /// without `ca_file`, trusts the system's CA store.
    pub endpoints: Vec<String>,
    /// Key prefix. Default `/vulcand`.
    pub prefix: String,
    /// User for etcd authentication. Default none (no auth). Needs `password`.
    pub username: Option<String>,
    /// Password of `username`. Default none.
    pub password: Option<String>,
    /// CA bundle (PEM) that signs the etcd servers' certificates. Default none (the system's
    /// CA store). Any of the TLS files needs `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS. Default none. Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`. Default none.
    pub key_file: Option<PathBuf>,
    /// Deadline for reaching etcd: the start-up probe of each endpoint, each reconnect, each
    /// full read, in milliseconds. Default 2000.
    pub dial_timeout_ms: u64,
    /// File holding vulcand's `--sealKey` (64 hex digits): TLS hosts in
    /// `<prefix>/hosts/<name>/host` are opened with it. Default none (such hosts are reported
    /// and skipped).
    pub seal_key_file: Option<PathBuf>,
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
            seal_key_file: None,
        }
    }
}

impl EtcdConfig {
    /// Whether any TLS key is set.
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Whether etcd is reached over TLS: the endpoints are `https://` URLs.
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// Why the endpoints' schemes do not fit together or with the TLS files, if they do not.
    /// One scheme for the whole cluster: a member that answers in plain text while the others
    /// need TLS is a misconfiguration, not a fallback. TLS files with `http://` endpoints would
    /// be silently unused, so they are refused too.
    pub fn scheme_error(&self) -> Option<String> {
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.endpoints.len() {
            return Some("mixes http:// and https:// URLs; use one scheme for the cluster".into());
        }
        if https == 0 && self.wants_tls() {
            return Some(
                "must be https:// URLs when a CA, client certificate or key file is given".into(),
            );
        }
        None
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
    /// A Content-Length body (request or response) with at least this many bytes still to
    /// come after its head moves socket -> pipe -> socket with `splice`, never copied through
    /// user space; smaller, chunked and close-delimited bodies go through `body_buffer_bytes`
    /// buffers. 0 turns splicing off. Default 65536.
    pub splice_min_bytes: u64,
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
            splice_min_bytes: 64 * 1024,
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
    /// and holds no buffer and no request state (about 0.45 KiB per connection in all).
    /// Default 250.
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
            idle_hot_ms: 250,
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
    /// Outlier ejection: 5xx answers or failed connections (refused, reset, timed out) in a
    /// row that take a server out of its backend's rotation; 0 turns ejection off. Default 5.
    pub consecutive_failures: Option<u32>,
    /// First ejection's length, ms; the n-th ejection in a row lasts n times as long (plus
    /// up to 10% jitter). Default 10000.
    pub ejection_base_ms: Option<u64>,
    /// Longest ejection, ms. Default 300000.
    pub ejection_max_ms: u64,
    /// Most servers of a backend ejected at once, percent (at least one). Default 50.
    pub max_ejection_percent: u32,
    /// nginx's spelling of `consecutive_failures`, kept for profiles that use it.
    pub max_fails: Option<u32>,
    /// nginx's spelling of `ejection_base_ms`, kept for profiles that use it.
    pub fail_timeout_ms: Option<u64>,
    /// How a server is chosen: "p2c_ewma" (latency-aware power of two choices) or
    /// "round_robin" (weighted). Default "p2c_ewma".
    pub balancer: Balancer,
    /// Attempts on other servers after the first, when the frontend's `FailoverPredicate`
    /// asks for them (at most 10, vulcand's cap). Default 2.
    pub max_retries: u32,
    /// Request bodies up to this size are kept while they stream so that a retry can send
    /// them again (vulcand keeps 1 MiB in memory); a larger body is streamed without a copy
    /// and its request is not retried once body bytes went out. Default 1048576.
    pub retry_body_bytes: u64,
    /// Node-wide, retries may add at most this share of the requests of the last 10 s (as
    /// Linkerd's and Envoy's retry budgets), plus `retry_budget_min_per_sec`. Default 0.2.
    pub retry_budget_ratio: f64,
    /// Retries per second always allowed on top of the ratio (over the 10 s window), so a
    /// quiet node can still retry. Default 10.
    pub retry_budget_min_per_sec: u32,
    /// CA certificates (PEM) that `https://` servers are verified against; default the
    /// system's CA store.
    pub ca_file: Option<PathBuf>,
}

/// Most retries of one request (vulcand's hard cap).
pub const MAX_RETRIES: u32 = 10;

/// `[upstream] balancer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancer {
    /// Power of two choices over a peak-EWMA latency estimate × (in flight + 1) / weight.
    #[default]
    P2cEwma,
    /// Weighted round-robin.
    RoundRobin,
}

impl UpstreamConfig {
    /// The outlier ejection settings, `max_fails` / `fail_timeout_ms` read as their spelling.
    pub fn ejection(&self) -> crate::resilience::ejection::EjectionSettings {
        let d = crate::resilience::ejection::EjectionSettings::default();
        let base_ms = self
            .ejection_base_ms
            .or(self.fail_timeout_ms)
            .unwrap_or(d.base_ms);
        crate::resilience::ejection::EjectionSettings {
            consecutive_failures: self
                .consecutive_failures
                .or(self.max_fails)
                .unwrap_or(d.consecutive_failures),
            base_ms,
            max_ms: self.ejection_max_ms.max(base_ms),
            max_percent: self.max_ejection_percent,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_idle_per_server: 64,
            idle_timeout_ms: 30_000,
            consecutive_failures: None,
            ejection_base_ms: None,
            ejection_max_ms: 300_000,
            max_ejection_percent: 50,
            max_fails: None,
            fail_timeout_ms: None,
            balancer: Balancer::P2cEwma,
            max_retries: 2,
            retry_body_bytes: 1 << 20,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_sec: 10,
            ca_file: None,
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

mod load;

#[cfg(test)]
mod tests;
