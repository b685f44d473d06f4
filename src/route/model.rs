//! vulcand's documents (backends, servers, frontends, middlewares) parsed from a [`KvSet`] into
//! typed values. Bad documents are skipped and reported, never fatal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A frontend: a route expression bound to a backend.
#[derive(Clone, Debug)]
pub struct Frontend {
    pub id: Arc<str>,
    /// The route expression as written.
    pub route: String,
    /// Index into [`super::RouteTable::backends`].
    pub backend: usize,
    pub settings: FrontendSettings,
    /// Middlewares sorted by priority then id.
    pub middlewares: Vec<MiddlewareSpec>,
}

/// vulcand frontend `Settings`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontendSettings {
    /// Forward the client's Host (true) or the server's host:port (false, vulcand's default).
    pub pass_host_header: bool,
    /// Keep client-supplied X-Forwarded-* fields (true) or replace them (false).
    pub trust_forward_header: bool,
    /// `Limits.MaxBodyBytes`: larger request bodies get 413.
    pub max_body_bytes: Option<u64>,
    /// `Hostname`, sent as Host upstream when set.
    pub hostname: Option<String>,
    /// `FailoverPredicate`: when another server is tried (vulcand's default when empty).
    pub failover: super::Failover,
}

/// A middleware attached to a frontend, kept as parsed JSON.
#[derive(Clone, Debug)]
pub struct MiddlewareSpec {
    pub id: Arc<str>,
    pub priority: i64,
    pub kind: String,
    pub config: serde_json::Value,
    /// `ratelimit` and `connlimit` middlewares, validated when the routes were compiled (an
    /// invalid one is skipped and reported instead).
    pub limit: Option<Arc<crate::throttle::Limit>>,
    /// A `rewrite` middleware, compiled.
    pub rewrite: Option<Arc<super::rewrite::RewriteRule>>,
    /// A `cbreaker` middleware: its node-wide state (a fresh one from compiling; the node
    /// swaps in the state it already has for the same frontend, id and settings).
    pub breaker: Option<Arc<crate::resilience::breaker::Breaker>>,
}

impl PartialEq for MiddlewareSpec {
    /// Middlewares are equal by their documents; a breaker's state is node state.
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.priority, &self.kind, &self.config)
            == (&other.id, other.priority, &other.kind, &other.config)
    }
}

/// A backend: a set of servers and how to talk to them.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: Arc<str>,
    pub settings: BackendSettings,
    /// Servers sorted by id.
    pub servers: Vec<Server>,
    /// Running sums of the servers' weights, for drawing a server by weight; empty when every
    /// weight is 1.
    pub cumulative_weights: Box<[u64]>,
}

impl Backend {
    pub fn new(id: Arc<str>, settings: BackendSettings, servers: Vec<Server>) -> Backend {
        let cumulative_weights = if servers.iter().all(|s| s.weight == 1) {
            Box::default()
        } else {
            servers
                .iter()
                .scan(0u64, |sum, s| {
                    *sum += u64::from(s.weight.max(1));
                    Some(*sum)
                })
                .collect()
        };
        Backend {
            id,
            settings,
            servers,
            cumulative_weights,
        }
    }
}

/// vulcand backend `Settings` (Go duration strings such as "5s" parsed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendSettings {
    /// `Timeouts.Read`: deadline for the upstream's response (head and each body read).
    pub read_timeout: Option<Duration>,
    /// `Timeouts.Dial`: connect deadline.
    pub dial_timeout: Option<Duration>,
    /// `Timeouts.TLSHandshake`: deadline for the TLS handshake with an `https://` server
    /// (else the dial deadline).
    pub tls_handshake_timeout: Option<Duration>,
    /// `KeepAlive.Period`: how long an idle upstream connection is kept, and the TCP
    /// keep-alive probe period on connections to the backend's servers.
    pub keepalive_period: Option<Duration>,
    /// `KeepAlive.MaxIdleConnsPerHost`.
    pub max_idle_per_host: Option<usize>,
}

/// One server of a backend.
#[derive(Clone, Debug)]
pub struct Server {
    pub id: Arc<str>,
    /// The URL as registered.
    pub url: String,
    pub addr: SocketAddr,
    /// `host:port` of the URL, sent as Host when the frontend does not pass the client's.
    pub authority: String,
    /// `https://` servers: the name their certificate must carry (and SNI).
    pub tls: Option<rustls::pki_types::ServerName<'static>>,
    /// Relative weight for round-robin (default 1).
    pub weight: u32,
    /// Node-wide health (outlier ejection): a fresh one from compiling; the node swaps in the
    /// one it already keeps for this backend and URL.
    pub health: Arc<crate::resilience::ejection::ServerHealth>,
}

impl PartialEq for Server {
    /// Servers are equal by what the documents say; their health is node state.
    fn eq(&self, other: &Self) -> bool {
        (&self.id, &self.url, self.addr, &self.authority, self.weight)
            == (
                &other.id,
                &other.url,
                other.addr,
                &other.authority,
                other.weight,
            )
    }
}
