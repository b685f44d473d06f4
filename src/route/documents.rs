//! vulcand's JSON documents read from a [`KvSet`]: keys classified by shape, values parsed with
//! serde into the typed model. Every bad value becomes a [`Skipped`] entry, never an error.
//! Unknown JSON fields are ignored, as vulcand does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;

use super::duration::parse_go_duration;
use super::{BackendSettings, FrontendSettings, KvSet, MiddlewareSpec, Server, Skipped};

/// Where a key sits in vulcand's layout.
#[derive(Debug, PartialEq, Eq)]
enum KeyShape<'a> {
    Backend(&'a str),
    Server(&'a str, &'a str),
    Frontend(&'a str),
    Middleware(&'a str, &'a str),
    Host,
}

/// `None` for keys outside the prefix (ignored); `Some(Err)` for unknown shapes under it.
fn classify<'a>(prefix: &str, key: &'a str) -> Option<Result<KeyShape<'a>, ()>> {
    let rest = key.strip_prefix(prefix.trim_end_matches('/'))?;
    let rest = rest.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Some(Err(()));
    }
    Some(match parts[..] {
        ["backends", bid, "backend"] => Ok(KeyShape::Backend(bid)),
        ["backends", bid, "servers", sid] => Ok(KeyShape::Server(bid, sid)),
        ["frontends", fid, "frontend"] => Ok(KeyShape::Frontend(fid)),
        ["frontends", fid, "middlewares", mid] => Ok(KeyShape::Middleware(fid, mid)),
        ["hosts", _, "host"] => Ok(KeyShape::Host),
        _ => Err(()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BackendDoc {
    r#type: String,
    settings: Option<BackendSettingsDoc>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct BackendSettingsDoc {
    timeouts: Option<TimeoutsDoc>,
    keep_alive: Option<KeepAliveDoc>,
    #[serde(rename = "TLS")]
    tls: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TimeoutsDoc {
    read: Option<String>,
    dial: Option<String>,
    #[serde(rename = "TLSHandshake")]
    tls_handshake: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct KeepAliveDoc {
    period: Option<String>,
    max_idle_conns_per_host: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServerDoc {
    #[serde(rename = "URL")]
    url: String,
    weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FrontendDoc {
    r#type: String,
    backend_id: String,
    route: String,
    settings: Option<FrontendSettingsDoc>,
    /// ringway extension: higher wins among equally specific routes.
    priority: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct FrontendSettingsDoc {
    #[serde(default)]
    pass_host_header: bool,
    #[serde(default)]
    trust_forward_header: bool,
    hostname: Option<String>,
    limits: Option<LimitsDoc>,
    #[serde(default)]
    failover_predicate: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct LimitsDoc {
    max_body_bytes: Option<i64>,
    max_mem_body_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MiddlewareDoc {
    #[serde(default)]
    priority: i64,
    r#type: String,
    #[serde(default)]
    middleware: serde_json::Value,
}

/// A frontend document before its route is compiled and its backend resolved.
pub(crate) struct FrontendEntry {
    pub key: String,
    pub backend_id: String,
    pub route: String,
    pub priority: i64,
    pub settings: FrontendSettings,
}

/// Everything usable in a key/value set, by id, plus what was skipped.
#[derive(Default)]
pub(crate) struct Documents {
    /// Backend id → settings; servers are attached separately.
    pub backends: BTreeMap<Arc<str>, BackendSettings>,
    /// Backend id → servers sorted by id (server keys whose backend is missing are skipped).
    pub servers: BTreeMap<Arc<str>, Vec<Server>>,
    pub frontends: BTreeMap<Arc<str>, FrontendEntry>,
    /// Frontend id → (key, middleware) in key order.
    pub middlewares: BTreeMap<Arc<str>, Vec<(String, MiddlewareSpec)>>,
    pub skipped: Vec<Skipped>,
    /// Settings that were read but are not supported (the rest of the value is used).
    pub unsupported: Vec<Skipped>,
    /// vulcand's TLS hosts with a key pair.
    pub tls_hosts: crate::tls::hosts::TlsHosts,
}

impl Documents {
    pub fn skip(&mut self, key: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            key: key.to_string(),
            reason: reason.into(),
        });
    }

    fn unsupported(&mut self, key: &str, notes: Vec<String>) {
        for reason in notes {
            self.unsupported.push(Skipped {
                key: key.to_string(),
                reason,
            });
        }
    }
}

/// Read every document under `prefix`.
pub(crate) fn read(
    kv: &KvSet,
    prefix: &str,
    seal: Option<&crate::tls::hosts::SealKey>,
) -> Documents {
    let mut docs = Documents::default();
    let mut servers = Vec::new();
    for (key, value) in &kv.entries {
        let shape = match classify(prefix, key) {
            None => continue,
            Some(Err(())) => {
                docs.skip(key, "unknown key: ringway reads <prefix>/backends/<id>/backend, <prefix>/backends/<id>/servers/<id>, <prefix>/frontends/<id>/frontend, <prefix>/frontends/<id>/middlewares/<id> and <prefix>/hosts/<name>/host");
                continue;
            }
            Some(Ok(shape)) => shape,
        };
        let mut notes = Vec::new();
        let result = match shape {
            KeyShape::Backend(bid) => backend(value, &mut notes).map(|settings| {
                docs.backends.insert(bid.into(), settings);
            }),
            KeyShape::Server(bid, sid) => server(sid, value).map(|s| servers.push((key, bid, s))),
            KeyShape::Frontend(fid) => frontend(key, value, &mut notes).map(|entry| {
                docs.frontends.insert(fid.into(), entry);
            }),
            KeyShape::Middleware(fid, mid) => middleware(fid, mid, value, &mut notes).map(|m| {
                docs.middlewares
                    .entry(fid.into())
                    .or_default()
                    .push((key.clone(), m));
            }),
            KeyShape::Host => crate::tls::hosts::host(value, seal).map(|h| {
                if let Some((name, certified)) = h {
                    docs.tls_hosts.insert(&name, certified);
                }
            }),
        };
        match result {
            Ok(()) => docs.unsupported(key, notes),
            Err(reason) => docs.skip(key, reason),
        }
    }
    // Servers are attached once every backend is known: keys sort `.../backend` before
    // `.../servers/...` for one id, but nothing guarantees the backend document parsed.
    for (key, bid, server) in servers {
        if docs.backends.contains_key(bid) {
            docs.servers.entry(bid.into()).or_default().push(server);
        } else {
            docs.skip(
                key,
                format!("backend {bid:?} does not exist or was skipped"),
            );
        }
    }
    docs
}

fn json<'a, T: Deserialize<'a>>(value: &'a str) -> Result<T, String> {
    serde_json::from_str(value).map_err(|e| format!("invalid document: {e}"))
}

/// A Go duration setting; zero is Go's "no limit", which leaves ringway's own default in
/// place (every deadline of ringway's is bounded).
fn duration(field: &str, value: Option<String>) -> Result<Option<Duration>, String> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse_go_duration(text)
            .map(|d| Some(d).filter(|d| !d.is_zero()))
            .map_err(|e| format!("{field}: {e}")),
    }
}

fn backend(value: &str, notes: &mut Vec<String>) -> Result<BackendSettings, String> {
    let doc: BackendDoc = json(value)?;
    if doc.r#type != "http" {
        return Err(format!(
            "backend Type {:?} is not supported (only \"http\")",
            doc.r#type
        ));
    }
    let settings = doc.settings.unwrap_or_default();
    let timeouts = settings.timeouts.unwrap_or_default();
    let keep_alive = settings.keep_alive.unwrap_or_default();
    if settings.tls.as_ref().is_some_and(|t| !t.is_null()) {
        notes.push(
            "Settings.TLS is not supported: https:// servers are verified against [upstream] \
             ca_file or the system's CAs"
                .into(),
        );
    }
    Ok(BackendSettings {
        read_timeout: duration("Settings.Timeouts.Read", timeouts.read)?,
        dial_timeout: duration("Settings.Timeouts.Dial", timeouts.dial)?,
        // vulcand writes it into every backend's settings; only `https://` servers use it.
        tls_handshake_timeout: duration("Settings.Timeouts.TLSHandshake", timeouts.tls_handshake)?,
        keepalive_period: duration("Settings.KeepAlive.Period", keep_alive.period)?,
        max_idle_per_host: keep_alive.max_idle_conns_per_host.filter(|&n| n > 0),
    })
}

fn server(sid: &str, value: &str) -> Result<Server, String> {
    let doc: ServerDoc = json(value)?;
    let weight = doc.weight.unwrap_or(1);
    if weight == 0 {
        return Err("Weight must be at least 1".to_string());
    }
    let UpstreamUrl {
        addr,
        authority,
        tls_name,
    } = upstream_url(&doc.url)?;
    Ok(Server {
        id: sid.into(),
        url: doc.url,
        addr,
        authority,
        tls: tls_name,
        weight,
        health: Arc::default(),
    })
}

/// Check an upstream URL (`http://host[:port][/]` or `https://...`) and resolve its host.
/// Returns the address, the authority as written, and for `https://` the name the server's
/// certificate must carry (also sent as SNI).
pub fn upstream_url(url: &str) -> Result<UpstreamUrl, String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| format!("URL {url:?} is not http://host:port"))?;
    let scheme = &url[..scheme_end];
    let tls = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(format!("URL {url:?}: scheme {scheme:?} not supported"));
    };
    let rest = &url[scheme_end + 3..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !(path.is_empty() || path == "/") {
        return Err(format!(
            "URL {url:?}: upstream URLs cannot have a path, query or fragment"
        ));
    }
    if authority.is_empty() || authority.contains(['@', '?', '#']) {
        return Err(format!("URL {url:?}: expected http://host:port"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("URL {url:?}: unclosed IPv6 bracket"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("URL {url:?}: expected :port after ]")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p
            .parse()
            .map_err(|_| format!("URL {url:?}: port {p:?} is not a number 0-65535"))?,
    };
    if host.is_empty() {
        return Err(format!("URL {url:?}: empty host"));
    }
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("URL {url:?}: cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("URL {url:?}: {host:?} resolves to no address"))?,
    };
    let tls_name = if tls {
        let name = ServerName::try_from(host)
            .map_err(|e| format!("URL {url:?}: {host:?} is not a TLS server name: {e}"))?;
        Some(name.to_owned())
    } else {
        None
    };
    Ok(UpstreamUrl {
        addr,
        authority: authority.to_string(),
        tls_name,
    })
}

/// A checked upstream URL.
#[derive(Clone, Debug)]
pub struct UpstreamUrl {
    pub addr: SocketAddr,
    /// `host:port` as written.
    pub authority: String,
    /// `https://`: the name the server's certificate must carry, sent as SNI.
    pub tls_name: Option<ServerName<'static>>,
}

fn frontend(key: &str, value: &str, notes: &mut Vec<String>) -> Result<FrontendEntry, String> {
    let doc: FrontendDoc = json(value)?;
    if doc.r#type != "http" {
        return Err(format!(
            "frontend Type {:?} is not supported (only \"http\")",
            doc.r#type
        ));
    }
    let settings = doc.settings.unwrap_or_default();
    let limits = settings.limits.unwrap_or_default();
    let failover = super::Failover::parse(&settings.failover_predicate).map_err(|e| {
        format!(
            "Settings.FailoverPredicate {:?}: {e}",
            settings.failover_predicate
        )
    })?;
    if settings.trust_forward_header {
        notes.push(
            "Settings.TrustForwardHeader is not used: the listener decides (a mesh listener keeps \
             X-Forwarded-* from the previous hop, an edge listener keeps them only from \
             trusted_proxies)"
                .into(),
        );
    }
    if limits.max_mem_body_bytes.is_some_and(|n| n > 0) {
        notes.push(
            "Settings.Limits.MaxMemBodyBytes is not used: bodies stream, and at most [upstream] \
             retry_body_bytes of one is kept for a retry"
                .into(),
        );
    }
    let max_body = limits.max_body_bytes;
    Ok(FrontendEntry {
        key: key.to_string(),
        backend_id: doc.backend_id,
        route: doc.route,
        priority: doc.priority.unwrap_or(0),
        settings: FrontendSettings {
            pass_host_header: settings.pass_host_header,
            trust_forward_header: settings.trust_forward_header,
            // vulcand writes 0 for "no limit".
            max_body_bytes: max_body.filter(|&n| n > 0).map(|n| n as u64),
            hostname: settings.hostname.filter(|h| !h.is_empty()),
            failover,
        },
    })
}

fn middleware(
    fid: &str,
    mid: &str,
    value: &str,
    notes: &mut Vec<String>,
) -> Result<MiddlewareSpec, String> {
    let doc: MiddlewareDoc = json(value)?;
    let limit = crate::throttle::parse(fid, mid, &doc.r#type, &doc.middleware)?;
    let mut rewrite = None;
    let mut breaker = None;
    match doc.r#type.as_str() {
        "ratelimit" | "connlimit" => {}
        "rewrite" => {
            let (rule, note) = super::rewrite::RewriteRule::parse(&doc.middleware)?;
            notes.extend(note);
            rewrite = Some(Arc::new(rule));
        }
        "cbreaker" => {
            use crate::resilience::breaker::{Breaker, BreakerSpec};
            let spec = BreakerSpec::parse(&doc.middleware, notes)?;
            breaker = Some(Arc::new(Breaker::new(
                Arc::new(spec),
                fid.into(),
                mid.into(),
            )));
        }
        "trace" => notes.push(
            "trace middlewares are not supported: requests are recorded by the access log \
             ([log] access_log)"
                .into(),
        ),
        other => notes.push(format!(
            "middleware Type {other:?} is not supported (ringway runs ratelimit, connlimit, \
             rewrite and cbreaker); the frontend serves without it"
        )),
    }
    Ok(MiddlewareSpec {
        id: mid.into(),
        priority: doc.priority,
        kind: doc.r#type,
        config: doc.middleware,
        limit: limit.map(Arc::new),
        rewrite,
        breaker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_shape_under_the_prefix() {
        let p = "/vulcand";
        assert_eq!(
            classify(p, "/vulcand/backends/b1/backend"),
            Some(Ok(KeyShape::Backend("b1")))
        );
        assert_eq!(
            classify("/vulcand/", "/vulcand/backends/b1/servers/s1"),
            Some(Ok(KeyShape::Server("b1", "s1")))
        );
        assert_eq!(
            classify(p, "/vulcand/frontends/f1/frontend"),
            Some(Ok(KeyShape::Frontend("f1")))
        );
        assert_eq!(
            classify(p, "/vulcand/frontends/f1/middlewares/m1"),
            Some(Ok(KeyShape::Middleware("f1", "m1")))
        );
        assert_eq!(
            classify(p, "/vulcand/hosts/h1/host"),
            Some(Ok(KeyShape::Host))
        );
        assert_eq!(classify(p, "/vulcand/listeners/l1"), Some(Err(())));
        assert_eq!(classify(p, "/vulcand/backends//backend"), Some(Err(())));
        assert_eq!(classify(p, "/other/backends/b1/backend"), None);
        assert_eq!(classify(p, "/vulcandx/backends/b1/backend"), None);
    }

    #[test]
    fn upstream_urls_resolve_with_default_port() {
        let u = upstream_url("http://10.0.0.5:5000").unwrap();
        assert_eq!(u.addr, "10.0.0.5:5000".parse().unwrap());
        assert_eq!(u.authority, "10.0.0.5:5000");
        assert!(u.tls_name.is_none());
        let u = upstream_url("http://10.0.0.5/").unwrap();
        assert_eq!(u.addr, "10.0.0.5:80".parse().unwrap());
        assert_eq!(u.authority, "10.0.0.5");
        let u = upstream_url("http://[::1]:8080").unwrap();
        assert_eq!(u.addr, "[::1]:8080".parse().unwrap());
        let u = upstream_url("http://localhost:5000").unwrap();
        assert!(u.addr.ip().is_loopback());
        assert_eq!(u.addr.port(), 5000);
        assert_eq!(u.authority, "localhost:5000");
        // https: port 443 by default, and the host is the certificate name (an IP or DNS).
        let u = upstream_url("https://localhost").unwrap();
        assert_eq!((u.addr.port(), u.authority.as_str()), (443, "localhost"));
        assert_eq!(
            u.tls_name.map(|n| n.to_str().into_owned()),
            Some("localhost".into())
        );
        let u = upstream_url("HTTPS://10.0.0.5:8443").unwrap();
        assert_eq!(u.addr, "10.0.0.5:8443".parse().unwrap());
        assert_eq!(
            u.tls_name.map(|n| n.to_str().into_owned()),
            Some("10.0.0.5".into())
        );
    }

    #[test]
    fn bad_upstream_urls_say_why() {
        for (url, want) in [
            ("ftp://10.0.0.5", "scheme"),
            ("10.0.0.5:80", "not http://host:port"),
            ("http://10.0.0.5:80/api", "cannot have a path"),
            ("http://10.0.0.5:99999", "port"),
            ("http://user@10.0.0.5", "expected http://host:port"),
            ("http://:80", "empty host"),
        ] {
            let err = upstream_url(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}
