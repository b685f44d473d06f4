//! What a worker knows about each listener: its role, and for an edge listener the expose
//! rules, the trusted proxies and the stricter head limits. Built once from the profile;
//! every worker keeps its own copy so connections clone an `Rc`, not an `Arc`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ListenerConfig, ListenerRole, Profile};
use crate::edge::{Cidr, EdgePolicy};
use crate::http::HeadLimits;
use crate::tls::Terminator;

#[derive(Clone, Debug)]
pub struct ListenerCtx {
    pub name: Box<str>,
    pub addr: SocketAddr,
    pub role: ListenerRole,
    /// Expose rules; `Some` exactly for edge listeners.
    pub edge: Option<EdgePolicy>,
    trusted_proxies: Vec<Cidr>,
    pub head_limits: HeadLimits,
    pub header_timeout: Duration,
    /// The port as text, for `X-Forwarded-Port`.
    pub port_text: Box<str>,
    /// TLS termination, shared by every worker; `None` on a plain HTTP listener.
    pub tls: Option<Arc<Terminator>>,
    /// Connections are accepted once their first bytes arrived (`defer_accept`).
    pub defer_accept: bool,
}

impl ListenerCtx {
    /// The listener's context. The profile was validated, so its rules compile.
    pub fn new(l: &ListenerConfig, p: &Profile, tls: Option<Arc<Terminator>>) -> ListenerCtx {
        let edge = (l.role == ListenerRole::Edge).then(|| {
            EdgePolicy::compile(&l.name, &l.expose)
                .expect("expose rules are validated when the profile is loaded")
        });
        let trusted_proxies = l
            .trusted_proxies
            .iter()
            .filter_map(|t| Cidr::parse(t).ok())
            .collect();
        ListenerCtx {
            name: l.name.as_str().into(),
            addr: l.addr,
            role: l.role,
            edge,
            trusted_proxies,
            head_limits: l.head_limits(&p.limits),
            header_timeout: l.header_timeout(&p.timeouts),
            port_text: l.addr.port().to_string().into(),
            tls,
            defer_accept: l.defer_accept,
        }
    }

    /// Whether forwarding fields from this peer are kept: always on a mesh listener (the
    /// previous hop is a service of this host or another ringway), on an edge listener only
    /// from a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.edge.is_none() || self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}
