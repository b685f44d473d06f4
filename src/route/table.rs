//! The compiled, immutable route table: host map, path trie, regex matchers only where a route
//! needs one, deterministic precedence, and the report of conflicts and skipped values.
//!
//! # Precedence
//!
//! Every frontend gets a rank; for a request, the best-ranked frontend all of whose matchers
//! match wins. Ranks compare, in order:
//!
//! 1. **Path specificity**: a literal `Path` first (`Path("/users/me")`), then a `Path` with
//!    placeholders (more literal segments first; then, segment by segment, literal before
//!    `<int:x>` before `<x>` before `<path:x>`), then `PathPrefix` (longer prefix first), then
//!    `PathRegexp` or no path matcher at all (one tier: regexes are not comparable).
//! 2. **Host**: a literal `Host`, then a `Host` with placeholders, then `HostRegexp`, then no
//!    host matcher.
//! 3. **More matchers first**: `Method`, `Header`, regexes and any further matchers beyond the
//!    path and host the index used (`Path("/x") && Method("GET")` before `Path("/x")`).
//! 4. **Higher `Priority`** (ringway's extension field of the frontend document, default 0).
//! 5. **Frontend id**, ascending.
//!
//! Note that the path comes before the host: `PathPrefix("/")` on any host beats
//! `Host("a.com")` alone. Such a frontend can never win and is reported (see below).
//!
//! # Conflicts
//!
//! - `same route`: two frontends whose expressions are the same set of matchers (modulo
//!   whitespace, quoting, matcher order and placeholder names) with the same priority. The
//!   smaller id wins.
//! - `shadowed by`: a better-ranked frontend whose matchers are a subset of the loser's (a
//!   `PathPrefix("/")` counting as no matcher), so it takes every request the loser could.
//!
//! Conflicting frontends still compile and keep their rank: a loser is simply never chosen.
//!
//! # Lookup
//!
//! Hosts are compared without port and ignoring ASCII case; paths are raw bytes, no query,
//! no percent-decoding (`/a%2Fb` is one segment). Exact hosts are one hash probe; each host
//! bucket's [`PathIndex`](super::trie) answers by hashing or walking the request path, so the
//! cost does not grow with the number of `Host`/`Path`/`PathPrefix` frontends. Host templates
//! and `HostRegexp`s are tried in a list of distinct hosts (expected to be few), and only when
//! their best frontend could beat what was already found. Lookup does not allocate (regexes
//! reuse the `regex` crate's per-thread cache).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use regex::bytes::Regex;

use crate::fast_hash::FastMap;

use super::documents;
use super::expr::{self, request_path, Expr, Matcher};
use super::template::HostTemplate;
use super::trie::{PathIndex, PathKey};
use super::{Backend, Frontend, KvSet, RouteRequest};

/// Options for compiling a [`KvSet`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Key prefix, `/vulcand` by default.
    pub prefix: String,
    /// (host, alias) pairs, lowercase: a frontend with `Host(host)` also serves requests for
    /// `alias` (vulcand's `-aliases`). Empty by default.
    pub host_aliases: Vec<(String, String)>,
    /// Opens vulcand's sealed TLS key pairs (`[etcd] seal_key_file`).
    pub seal_key: Option<Arc<crate::tls::hosts::SealKey>>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            prefix: "/vulcand".to_string(),
            host_aliases: Vec::new(),
            seal_key: None,
        }
    }
}

/// A value that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// Two frontends that claim the same requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The frontend that wins.
    pub winner: String,
    /// The frontend that can never (or only sometimes) be reached because of the winner.
    pub loser: String,
    pub reason: String,
}

/// What compiling found wrong. Empty when every value was used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub skipped: Vec<Skipped>,
    pub conflicts: Vec<Conflict>,
    /// Settings that were read but are not supported; their values are used without them.
    pub unsupported: Vec<Skipped>,
}

/// The result of [`compile`].
pub struct Compiled {
    pub table: RouteTable,
    pub report: Report,
}

/// A frontend's parsed expression and how the index uses it.
#[derive(Debug)]
struct RouteInfo {
    expr: Expr,
    priority: i64,
    /// Matchers the index already guarantees (primary host and path), skipped on verify.
    host: Option<usize>,
    path: Option<usize>,
}

impl RouteInfo {
    fn accepts(&self, req: &dyn RouteRequest) -> bool {
        self.expr
            .matchers
            .iter()
            .enumerate()
            .all(|(i, m)| Some(i) == self.host || Some(i) == self.path || m.matches(req))
    }
}

#[derive(Debug)]
struct HostIndex {
    exact: FastMap<Box<[u8]>, PathIndex>,
    templates: Vec<(HostTemplate, PathIndex)>,
    regexes: Vec<(Regex, PathIndex)>,
    any: PathIndex,
}

impl Default for HostIndex {
    fn default() -> Self {
        HostIndex {
            exact: FastMap::default(),
            templates: Vec::new(),
            regexes: Vec::new(),
            any: PathIndex::new(),
        }
    }
}

/// An immutable, compiled route table. Shared between workers behind an `Arc`.
#[derive(Debug, Default)]
pub struct RouteTable {
    revision: i64,
    frontends: Vec<Frontend>,
    backends: Vec<Backend>,
    /// Parallel to `frontends`.
    routes: Vec<RouteInfo>,
    hosts: HostIndex,
    /// Certificates of vulcand's TLS hosts, for the TLS listeners' SNI choice.
    tls_hosts: Arc<crate::tls::hosts::TlsHosts>,
}

/// Longest host kept in the exact-host map (DNS names are at most 253 bytes).
const MAX_HOST: usize = 253;

impl RouteTable {
    /// A table with no routes (every request gets 404).
    pub fn empty() -> RouteTable {
        RouteTable::default()
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// vulcand's TLS hosts (`<prefix>/hosts/<name>/host`) that carry a key pair.
    pub fn tls_hosts(&self) -> &crate::tls::hosts::TlsHosts {
        &self.tls_hosts
    }

    /// Frontends in precedence order.
    pub fn frontends(&self) -> &[Frontend] {
        &self.frontends
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn backend(&self, index: usize) -> &Backend {
        &self.backends[index]
    }

    /// The parsed route expression of `frontends()[index]`.
    pub fn expr(&self, index: usize) -> &Expr {
        &self.routes[index].expr
    }

    /// The `Priority` of `frontends()[index]` (0 unless the document set one).
    pub fn priority(&self, index: usize) -> i64 {
        self.routes[index].priority
    }

    /// Visit every server (with its backend's id) and every middleware (with its frontend's
    /// id), mutably: the node swaps in the health and breaker state it keeps across tables.
    pub fn attach_state(
        &mut self,
        mut server: impl FnMut(&str, &mut super::Server),
        mut middleware: impl FnMut(&str, &mut super::MiddlewareSpec),
    ) {
        for b in &mut self.backends {
            for s in &mut b.servers {
                server(&b.id, s);
            }
        }
        for f in &mut self.frontends {
            for m in &mut f.middlewares {
                middleware(&f.id, m);
            }
        }
    }

    /// The frontend that serves this request, if any.
    pub fn lookup(&self, req: &dyn RouteRequest) -> Option<&Frontend> {
        self.lookup_index(req).map(|i| &self.frontends[i])
    }

    /// Like [`RouteTable::lookup`], as an index into [`RouteTable::frontends`].
    pub fn lookup_index(&self, req: &dyn RouteRequest) -> Option<usize> {
        let path = request_path(req);
        let host = req.host();
        let accepts = |rank: u32| self.routes[rank as usize].accepts(req);
        let mut best = u32::MAX;
        if !self.hosts.exact.is_empty() && host.len() <= MAX_HOST {
            let mut buf = [0u8; MAX_HOST];
            let lower = &mut buf[..host.len()];
            lower.copy_from_slice(host);
            lower.make_ascii_lowercase();
            if let Some(index) = self.hosts.exact.get(&*lower) {
                best = index.best(path, best, &accepts);
            }
        }
        for (template, index) in &self.hosts.templates {
            if index.min_rank < best && template.matches(host) {
                best = index.best(path, best, &accepts);
            }
        }
        for (regex, index) in &self.hosts.regexes {
            if index.min_rank < best && regex.is_match(host) {
                best = index.best(path, best, &accepts);
            }
        }
        best = self.hosts.any.best(path, best, &accepts);
        (best != u32::MAX).then_some(best as usize)
    }
}

/// Which matcher the path index uses, and the path tier (1) of the precedence.
fn primary_path(expr: &Expr) -> (Option<usize>, PathRank) {
    let mut best: Option<(usize, PathRank)> = None;
    for (i, m) in expr.matchers.iter().enumerate() {
        let rank = match m {
            Matcher::Path(t) if t.is_literal() => PathRank {
                tier: 0,
                text: t.normalized().into_bytes(),
                ..PathRank::default()
            },
            Matcher::Path(t) => PathRank {
                tier: 1,
                literal_segments: Reverse(t.literal_count()),
                shape: t.segments.iter().map(|s| s.kind_rank()).collect(),
                text: t.normalized().into_bytes(),
                ..PathRank::default()
            },
            Matcher::PathPrefix(p) => PathRank {
                tier: 2,
                prefix_len: Reverse(p.len()),
                text: p.to_vec(),
                ..PathRank::default()
            },
            _ => continue,
        };
        let better = match &best {
            Some((_, b)) => rank < *b,
            None => true,
        };
        if better {
            best = Some((i, rank));
        }
    }
    match best {
        Some((i, rank)) => (Some(i), rank),
        None => (
            None,
            PathRank {
                tier: 3,
                ..PathRank::default()
            },
        ),
    }
}

/// Which matcher the host index uses, and the host tier (2) of the precedence.
fn primary_host(expr: &Expr) -> (Option<usize>, u8) {
    let mut best = (None, 3);
    for (i, m) in expr.matchers.iter().enumerate() {
        let tier = match m {
            Matcher::Host(t) if t.is_literal() => 0,
            Matcher::Host(_) => 1,
            Matcher::HostRegexp(_) => 2,
            _ => continue,
        };
        if tier < best.1 {
            best = (Some(i), tier);
        }
    }
    best
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct PathRank {
    tier: u8,
    literal_segments: Reverse<usize>,
    shape: Vec<u8>,
    prefix_len: Reverse<usize>,
    text: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    path: PathRank,
    host_tier: u8,
    matchers: Reverse<usize>,
    priority: Reverse<i64>,
    id: Arc<str>,
}

/// A frontend that parsed, waiting for its rank.
struct Candidate {
    key: RankKey,
    frontend: Frontend,
    route: RouteInfo,
}

/// Build a table from a key/value set. Never fails: bad values are skipped and reported.
pub fn compile(kv: &KvSet, opts: &CompileOptions) -> Compiled {
    let mut docs = documents::read(kv, &opts.prefix, opts.seal_key.as_deref());

    let mut backends = Vec::with_capacity(docs.backends.len());
    let mut backend_index = HashMap::with_capacity(docs.backends.len());
    for (id, settings) in std::mem::take(&mut docs.backends) {
        backend_index.insert(id.clone(), backends.len());
        let servers = docs.servers.remove(&id).unwrap_or_default();
        backends.push(Backend::new(id, settings, servers));
    }

    let mut middlewares = std::mem::take(&mut docs.middlewares);
    let mut candidates = Vec::with_capacity(docs.frontends.len());
    for (id, entry) in std::mem::take(&mut docs.frontends) {
        let Some(&backend) = backend_index.get(entry.backend_id.as_str()) else {
            let reason = format!(
                "BackendId {:?} does not exist or was skipped",
                entry.backend_id
            );
            docs.skip(&entry.key, reason);
            continue;
        };
        let expr = match expr::parse(&entry.route) {
            Ok(expr) => expr,
            Err(e) => {
                docs.skip(
                    &entry.key,
                    format!("bad route expression {:?}: {e}", entry.route),
                );
                continue;
            }
        };
        let mut specs: Vec<_> = middlewares
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        specs.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        let (path, path_rank) = primary_path(&expr);
        let (host, host_tier) = primary_host(&expr);
        let used = usize::from(path.is_some()) + usize::from(host.is_some());
        candidates.push(Candidate {
            key: RankKey {
                path: path_rank,
                host_tier,
                matchers: Reverse(expr.matchers.len() - used),
                priority: Reverse(entry.priority),
                id: id.clone(),
            },
            frontend: Frontend {
                id,
                route: entry.route,
                backend,
                settings: entry.settings,
                middlewares: specs,
            },
            route: RouteInfo {
                expr,
                priority: entry.priority,
                host,
                path,
            },
        });
    }
    for (fid, orphans) in middlewares {
        for (key, _) in orphans {
            docs.skip(
                &key,
                format!("frontend {fid:?} does not exist or was skipped"),
            );
        }
    }

    // Sort positions rather than the (large) candidates; ids are unique, so the order is total
    // and an unstable sort is still deterministic.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_unstable_by(|&a, &b| candidates[a].key.cmp(&candidates[b].key));
    let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
    let mut frontends = Vec::with_capacity(slots.len());
    let mut routes = Vec::with_capacity(slots.len());
    for i in order {
        let c = slots[i].take().expect("each position is taken once");
        frontends.push(c.frontend);
        routes.push(c.route);
    }
    let hosts = index(&routes, &opts.host_aliases);
    let conflicts = conflicts(&frontends, &routes);
    let mut skipped = docs.skipped;
    skipped.sort_by(|a, b| a.key.cmp(&b.key));
    // Notes about values that were skipped after all say nothing more.
    let unsupported = docs
        .unsupported
        .into_iter()
        .filter(|u| skipped.iter().all(|s| s.key != u.key))
        .collect();
    Compiled {
        table: RouteTable {
            revision: kv.revision,
            frontends,
            backends,
            routes,
            hosts,
            tls_hosts: Arc::new(std::mem::take(&mut docs.tls_hosts)),
        },
        report: Report {
            skipped,
            conflicts,
            unsupported,
        },
    }
}

fn index(routes: &[RouteInfo], aliases: &[(String, String)]) -> HostIndex {
    let mut hosts = HostIndex::default();
    let mut templates: HashMap<String, usize> = HashMap::new();
    let mut regexes: HashMap<String, usize> = HashMap::new();
    for (rank, route) in routes.iter().enumerate() {
        let rank = u32::try_from(rank).expect("fewer than 2^32 frontends");
        let bucket = match route.host.map(|i| &route.expr.matchers[i]) {
            Some(Matcher::Host(t)) if t.is_literal() => hosts
                .exact
                .entry(t.normalized().into_bytes().into_boxed_slice())
                .or_insert_with(PathIndex::new),
            Some(Matcher::Host(t)) => {
                let at = *templates.entry(t.normalized()).or_insert_with(|| {
                    hosts.templates.push((t.clone(), PathIndex::new()));
                    hosts.templates.len() - 1
                });
                &mut hosts.templates[at].1
            }
            Some(Matcher::HostRegexp(re)) => {
                let at = *regexes.entry(re.as_str().to_string()).or_insert_with(|| {
                    hosts.regexes.push((re.clone(), PathIndex::new()));
                    hosts.regexes.len() - 1
                });
                &mut hosts.regexes[at].1
            }
            _ => &mut hosts.any,
        };
        let key = || match route.path.map(|i| &route.expr.matchers[i]) {
            Some(Matcher::Path(t)) => PathKey::Template(t),
            Some(Matcher::PathPrefix(p)) => PathKey::Prefix(p),
            _ => PathKey::Other,
        };
        bucket.insert(key(), rank);
        if let Some(Matcher::Host(t)) = route.host.map(|i| &route.expr.matchers[i]) {
            if t.is_literal() {
                let name = t.normalized();
                for (_, alias) in aliases.iter().filter(|(from, _)| *from == name) {
                    hosts
                        .exact
                        .entry(alias.as_bytes().into())
                        .or_insert_with(PathIndex::new)
                        .insert(key(), rank);
                }
            }
        }
    }
    hosts
}

/// A matcher set is a subset of another when every one of its normalized matchers is in it;
/// `PathPrefix("/")` matches every path, so it is left out of the sets a winner is filed by.
fn conflicts(frontends: &[Frontend], routes: &[RouteInfo]) -> Vec<Conflict> {
    const EVERY_PATH: &str = "PathPrefix(\"/\")";
    // Subsets of larger sets are not enumerated; such shadowing goes unreported.
    const MAX_ENUMERATED: usize = 8;
    let mut conflicts = Vec::new();
    let mut same: HashMap<(String, i64), usize> = HashMap::new();
    let mut by_set: HashMap<String, usize> = HashMap::new();
    for (rank, route) in routes.iter().enumerate() {
        let mut set: Vec<String> = route.expr.matchers.iter().map(|m| m.to_string()).collect();
        set.sort();
        set.dedup();
        let whole = set.join(" && ");
        let loser = frontends[rank].id.to_string();
        if let Some(&winner) = same.get(&(whole.clone(), route.priority)) {
            conflicts.push(Conflict {
                winner: frontends[winner].id.to_string(),
                loser,
                reason: "same route".to_string(),
            });
            continue;
        }
        same.insert((whole, route.priority), rank);
        let mut shadower: Option<usize> = None;
        if set.len() <= MAX_ENUMERATED {
            for mask in 0u32..(1 << set.len()) {
                let subset: Vec<&str> = (0..set.len())
                    .filter(|b| mask & (1 << b) != 0)
                    .map(|b| set[b].as_str())
                    .filter(|m| *m != EVERY_PATH)
                    .collect();
                if let Some(&w) = by_set.get(&subset.join(" && ")) {
                    shadower = Some(shadower.map_or(w, |s| s.min(w)));
                }
            }
        }
        if let Some(winner) = shadower {
            conflicts.push(Conflict {
                winner: frontends[winner].id.to_string(),
                loser,
                reason: "shadowed by".to_string(),
            });
        }
        let own: Vec<&str> = set
            .iter()
            .map(String::as_str)
            .filter(|m| *m != EVERY_PATH)
            .collect();
        by_set.entry(own.join(" && ")).or_insert(rank);
    }
    conflicts
}

#[cfg(test)]
mod tests;
