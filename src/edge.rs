//! The edge role: which requests a public listener lets into the mesh. Expose rules are
//! compiled once from the profile into an [`EdgePolicy`]; per request the data plane asks
//! [`EdgePolicy::decide`] and gets the rule to forward under (with its prefix rewrite and its
//! nginx-style rate limit) or the reason to refuse. Pure code, no I/O.
//!
//! Matching is on the path exactly as received: nothing is percent-decoded, so an encoded
//! spelling of an exposed prefix (`/%75sers/`) is not exposed. Paths with dot segments
//! (`/./`, `/../`, also percent-encoded) are refused outright, because a server behind the
//! mesh that normalises them could be walked out of the exposed prefix.

mod cidr;

pub use cidr::Cidr;

use regex::bytes::Regex;

use crate::config::ExposeConfig;
use crate::http::fields::is_token;
use crate::http::upgrade::{UpgradePolicy, H2C};
use crate::throttle::{Limit, Variable};

/// Methods an expose rule without a `methods` list allows (everything but TRACE and
/// CONNECT), as named in `Allow`.
const ANY_METHOD_ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";

/// The compiled expose rules of one edge listener, in profile order.
#[derive(Clone, Debug)]
pub struct EdgePolicy {
    rules: Vec<ExposeRule>,
}

#[derive(Clone, Debug)]
enum PathMatch {
    Prefix(Box<[u8]>),
    Regex(Regex),
}

/// One `[[listener.expose]]` rule.
#[derive(Clone, Debug)]
pub struct ExposeRule {
    path: PathMatch,
    /// `None`: any method but TRACE and CONNECT.
    methods: Option<Vec<Box<[u8]>>>,
    /// Value of `Allow` when a method is refused.
    allow: Box<str>,
    rewrite: Option<Box<[u8]>>,
    /// The rule's `rate`/`burst`, as a node-wide token bucket per key.
    pub limit: Option<Limit>,
    /// Protocol names (lowercase) a request may upgrade to; empty: none.
    upgrade: Box<[Box<[u8]>]>,
}

/// What happens to a request on an edge listener.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Forward it under this rule.
    Forward(&'a ExposeRule),
    /// No rule exposes the path: 404, no service is touched.
    Hidden,
    /// A rule exposes the path but not this method (or the method is TRACE): 405 with this
    /// `Allow` value (empty when no rule exposes the path).
    MethodNotAllowed(&'a str),
    /// The path has a dot segment: 400.
    DotSegment,
}

/// A rule's prefix rewrite applied to one path: `cut` bytes of the received path are replaced
/// by `prefix`; the rest of the target follows byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite<'a> {
    pub cut: usize,
    pub prefix: &'a [u8],
}

impl ExposeRule {
    /// The rewrite this rule applies to `path` (one it matched), if it has one.
    pub fn rewrite(&self) -> Option<Rewrite<'_>> {
        match (&self.path, &self.rewrite) {
            (PathMatch::Prefix(p), Some(r)) => Some(Rewrite {
                cut: p.len(),
                prefix: r,
            }),
            _ => None,
        }
    }

    /// Which protocol upgrades a request under this rule may offer upstream.
    pub fn upgrade_policy(&self) -> UpgradePolicy<'_> {
        UpgradePolicy::Only(&self.upgrade)
    }

    fn matches_path(&self, path: &[u8]) -> bool {
        match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }

    fn allows(&self, method: &[u8]) -> bool {
        match &self.methods {
            None => true,
            // nginx's `limit_except GET` allows HEAD too.
            Some(list) => list
                .iter()
                .any(|m| &**m == method || (method == b"HEAD" && &**m == b"GET")),
        }
    }
}

impl EdgePolicy {
    /// Compile a listener's rules. An error names the rule's index and key, with the reason.
    pub fn compile(listener: &str, rules: &[ExposeConfig]) -> Result<EdgePolicy, RuleError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                compile_rule(listener, i, r).map_err(|(key, reason)| RuleError {
                    index: i,
                    key,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(EdgePolicy { rules })
    }

    pub fn rules(&self) -> &[ExposeRule] {
        &self.rules
    }

    /// The verdict for a request: the first rule whose path matches decides.
    pub fn decide(&self, method: &[u8], path: &[u8]) -> Decision<'_> {
        if has_dot_segment(path) {
            return Decision::DotSegment;
        }
        let Some(rule) = self.rules.iter().find(|r| r.matches_path(path)) else {
            return if method == b"TRACE" {
                Decision::MethodNotAllowed("")
            } else {
                Decision::Hidden
            };
        };
        if method == b"TRACE" || !rule.allows(method) {
            return Decision::MethodNotAllowed(&rule.allow);
        }
        Decision::Forward(rule)
    }
}

/// A rule the profile cannot use: `listener[i].expose[index].key`: reason.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleError {
    pub index: usize,
    pub key: &'static str,
    pub reason: String,
}

fn compile_rule(
    listener: &str,
    index: usize,
    r: &ExposeConfig,
) -> Result<ExposeRule, (&'static str, String)> {
    let path = match (&r.prefix, &r.regex) {
        (Some(p), None) => {
            if !p.starts_with('/') {
                return Err(("prefix", format!("must start with '/', got {p:?}")));
            }
            if p.bytes().any(|b| !(0x21..0x7f).contains(&b)) || p.contains(['?', '#']) {
                return Err((
                    "prefix",
                    "must be visible ASCII without '?' or '#' (it is matched against the \
                     path as received, percent-encoding included)"
                        .into(),
                ));
            }
            PathMatch::Prefix(p.as_bytes().into())
        }
        (None, Some(re)) => match Regex::new(re) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => return Err(("regex", format!("invalid regex: {e}"))),
        },
        (Some(_), Some(_)) => {
            return Err(("regex", "give either prefix or regex, not both".into()));
        }
        (None, None) => return Err(("prefix", "a rule needs a prefix or a regex".into())),
    };
    let rewrite = match &r.rewrite {
        None => None,
        Some(_) if r.regex.is_some() => {
            return Err((
                "rewrite",
                "rewrite replaces the matched prefix: it needs a prefix rule, not a regex".into(),
            ));
        }
        Some(w) if !w.starts_with('/') => {
            return Err(("rewrite", format!("must start with '/', got {w:?}")));
        }
        Some(w) if w.bytes().any(|b| !(0x21..0x7f).contains(&b)) || w.contains(['?', '#']) => {
            return Err(("rewrite", "must be visible ASCII without '?' or '#'".into()));
        }
        Some(w) => Some(w.as_bytes().into()),
    };
    let methods = match &r.methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(("methods", "leave it out to allow every method".into()));
        }
        Some(list) => {
            for m in list {
                if !is_token(m.as_bytes()) {
                    return Err(("methods", format!("{m:?} is not a method name")));
                }
                if m == "TRACE" || m == "CONNECT" {
                    return Err((
                        "methods",
                        format!("{m} is never forwarded from an edge listener"),
                    ));
                }
            }
            Some(list.iter().map(|m| m.as_bytes().into()).collect())
        }
    };
    let allow = match &r.methods {
        None => ANY_METHOD_ALLOW.to_string(),
        Some(list) => {
            let mut names: Vec<&str> = list.iter().map(String::as_str).collect();
            if names.contains(&"GET") && !names.contains(&"HEAD") {
                names.push("HEAD");
            }
            names.join(", ")
        }
    };
    let limit = compile_limit(listener, index, r)?;
    let mut upgrade = Vec::new();
    for p in r.upgrade.iter().flatten() {
        if !is_token(p.as_bytes()) {
            return Err((
                "upgrade",
                format!("{p:?} is not a protocol name (such as \"websocket\")"),
            ));
        }
        if p.as_bytes().eq_ignore_ascii_case(H2C) {
            return Err((
                "upgrade",
                "h2c is never forwarded: RFC 9113 removed the upgrade to cleartext HTTP/2, and \
                 its connection would bypass every rule of the edge"
                    .into(),
            ));
        }
        upgrade.push(p.to_ascii_lowercase().into_bytes().into_boxed_slice());
    }
    Ok(ExposeRule {
        path,
        methods,
        allow: allow.into(),
        rewrite,
        limit,
        upgrade: upgrade.into(),
    })
}

/// nginx `limit_req` on ringway's buckets: `burst = N` with `nodelay` lets N + 1 requests
/// through back to back, so the bucket holds N + 1 tokens.
fn compile_limit(
    listener: &str,
    index: usize,
    r: &ExposeConfig,
) -> Result<Option<Limit>, (&'static str, String)> {
    let Some(rate_text) = &r.rate else {
        for (key, set) in [
            ("burst", r.burst.is_some()),
            ("nodelay", r.nodelay.is_some()),
            ("key", r.key.is_some()),
        ] {
            if set {
                return Err((key, "only meaningful with rate".into()));
            }
        }
        return Ok(None);
    };
    let (requests, period_secs) = parse_rate(rate_text).map_err(|e| ("rate", e))?;
    let burst = r.burst.unwrap_or(0);
    if burst > 1_000_000_000 {
        return Err(("burst", "must be at most 1000000000".into()));
    }
    // As nginx: without `nodelay`, requests within the burst wait for their turn at the rate.
    let paced = burst > 0 && r.nodelay != Some(true);
    let variable = match &r.key {
        None => Variable::ClientIp,
        Some(k) => Variable::parse(k).map_err(|e| ("key", e))?,
    };
    let label = match (&r.prefix, &r.regex) {
        (Some(p), _) => p.clone(),
        (_, Some(re)) => format!("~{re}"),
        _ => String::new(),
    };
    Ok(Some(crate::throttle::edge_rate(
        listener,
        index,
        &label,
        rate_text,
        (requests, period_secs, burst + 1),
        variable,
        paced,
    )))
}

/// nginx's rate syntax: `100r/s` or `30r/m`. Returns (requests, period in seconds).
pub fn parse_rate(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{text:?} is not a rate like \"100r/s\" or \"30r/m\"");
    let (n, period) = if let Some(n) = text.strip_suffix("r/s") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix("r/m") {
        (n, 60)
    } else {
        return Err(bad());
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match n.parse::<u64>() {
        Ok(v) if (1..=1_000_000_000).contains(&v) => Ok((v, period)),
        _ => Err(format!(
            "{text:?}: the count must be between 1 and 1000000000"
        )),
    }
}

/// Whether a path has a `.` or `..` segment, spelled plainly or percent-encoded. Segments end
/// at `/` and also at what some servers and frameworks read as one: `\`, `%2F` and `%5C` (so
/// `/users/..\admin` and `/users/..%2Fadmin` count too).
pub fn has_dot_segment(path: &[u8]) -> bool {
    let mut start = 0;
    let mut i = 0;
    while i <= path.len() {
        let sep = match path.get(i) {
            None => 1,
            Some(b'/' | b'\\') => 1,
            Some(b'%')
                if matches!(
                    (path.get(i + 1), path.get(i + 2)),
                    (Some(b'2'), Some(b'f' | b'F')) | (Some(b'5'), Some(b'c' | b'C'))
                ) =>
            {
                3
            }
            Some(_) => 0,
        };
        if sep > 0 {
            if is_dot_segment(&path[start..i]) {
                return true;
            }
            start = i + sep;
            i += sep;
        } else {
            i += 1;
        }
    }
    false
}

/// A segment made only of one or two dots, each plain or as `%2E`.
fn is_dot_segment(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'.' {
            i += 1;
        } else if seg[i] == b'%'
            && seg.get(i + 1) == Some(&b'2')
            && matches!(seg.get(i + 2), Some(b'e' | b'E'))
        {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<EdgePolicy, RuleError> {
        let cfg: ExposeConfig = toml::from_str(toml_text).expect("rule parses");
        EdgePolicy::compile("public", &[cfg])
    }

    fn policy(rules: &[&str]) -> EdgePolicy {
        let cfgs: Vec<ExposeConfig> = rules.iter().map(|t| toml::from_str(t).unwrap()).collect();
        EdgePolicy::compile("public", &cfgs).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides_and_everything_else_is_hidden() {
        let p = policy(&[
            "prefix = \"/users/\"\nmethods = [\"GET\"]\nrewrite = \"/user-service/users/\"",
            "regex = \"^/api/v[12]/\"",
        ]);
        let Decision::Forward(r) = p.decide(b"GET", b"/users/42") else {
            panic!("exposed");
        };
        assert_eq!(
            r.rewrite(),
            Some(Rewrite {
                cut: 7,
                prefix: b"/user-service/users/"
            })
        );
        assert!(matches!(
            p.decide(b"HEAD", b"/users/42"),
            Decision::Forward(_)
        ));
        assert!(matches!(
            p.decide(b"POST", b"/users/42"),
            Decision::MethodNotAllowed("GET, HEAD")
        ));
        assert!(matches!(p.decide(b"GET", b"/users"), Decision::Hidden));
        assert!(matches!(p.decide(b"GET", b"/%75sers/1"), Decision::Hidden));
        let Decision::Forward(r) = p.decide(b"DELETE", b"/api/v2/x") else {
            panic!("regex rule");
        };
        assert_eq!(r.rewrite(), None);
        assert!(matches!(p.decide(b"GET", b"/api/v3/x"), Decision::Hidden));
    }

    #[test]
    fn trace_is_refused_with_the_rules_methods_or_none() {
        let p = policy(&["prefix = \"/a\"", "prefix = \"/b\"\nmethods = [\"POST\"]"]);
        assert!(matches!(
            p.decide(b"TRACE", b"/a"),
            Decision::MethodNotAllowed(ANY_METHOD_ALLOW)
        ));
        assert!(matches!(
            p.decide(b"TRACE", b"/b"),
            Decision::MethodNotAllowed("POST")
        ));
        assert!(matches!(
            p.decide(b"TRACE", b"/c"),
            Decision::MethodNotAllowed("")
        ));
    }

    #[test]
    fn a_rule_allows_only_the_upgrades_it_lists() {
        let p = policy(&[
            "prefix = \"/ws/\"\nupgrade = [\"WebSocket\"]",
            "prefix = \"/\"",
        ]);
        let Decision::Forward(ws) = p.decide(b"GET", b"/ws/chat") else {
            panic!("exposed");
        };
        assert!(ws.upgrade_policy().allows(b"websocket"));
        assert!(ws.upgrade_policy().allows(b"websocket/13"));
        assert!(!ws.upgrade_policy().allows(b"h2c"));
        assert!(!ws.upgrade_policy().allows(b"foo"));
        let Decision::Forward(plain) = p.decide(b"GET", b"/other") else {
            panic!("exposed");
        };
        assert!(!plain.upgrade_policy().allows(b"websocket"));
    }

    #[test]
    fn dot_segments_are_refused_in_any_spelling() {
        for bad in [
            "/users/../admin",
            "/users/./x",
            "/users/..",
            "/users/%2e%2E/admin",
            "/users/.%2e/admin",
            "/users/..\\admin",
            "/users\\..\\admin",
            "/users/..%2Fadmin",
            "/users/%2e%2e%5cadmin",
            "/users/..%5C",
        ] {
            assert!(has_dot_segment(bad.as_bytes()), "{bad}");
        }
        for ok in [
            "/users/...",
            "/users/.x",
            "/a..b/",
            "/users/%2ex",
            "/",
            "/a\\b",
            "/x%2Fy",
            "/users/..x%5C",
        ] {
            assert!(!has_dot_segment(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn nginx_rates_and_bursts_map_to_bucket_sizes() {
        assert_eq!(parse_rate("10r/s"), Ok((10, 1)));
        assert_eq!(parse_rate("30r/m"), Ok((30, 60)));
        for bad in [
            "", "r/s", "10", "10r/h", "-1r/s", "0r/s", "1.5r/s", " 10r/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        let p = policy(&["prefix = \"/\"\nrate = \"10r/s\"\nburst = 5\nnodelay = true"]);
        let limit = p.rules()[0].limit.as_ref().expect("a limit");
        assert_eq!(
            limit.kind,
            crate::throttle::LimitKind::Rate(crate::throttle::Rate::new(10, 1, 6))
        );
        assert_eq!(limit.variable, Variable::ClientIp);
        // Without `nodelay`, as nginx: the burst is paced at the rate instead of let through.
        for text in [
            "prefix = \"/\"\nrate = \"10r/s\"\nburst = 5",
            "prefix = \"/\"\nrate = \"10r/s\"\nburst = 5\nnodelay = false",
        ] {
            let p = policy(&[text]);
            assert_eq!(
                p.rules()[0].limit.as_ref().unwrap().kind,
                crate::throttle::LimitKind::Paced(crate::throttle::Rate::new(10, 1, 6)),
                "{text}"
            );
        }
        let keyed =
            policy(&["prefix = \"/\"\nrate = \"1r/m\"\nkey = \"request.header.X-Api-Key\""]);
        assert_eq!(
            keyed.rules()[0].limit.as_ref().unwrap().variable,
            Variable::Header("x-api-key".into())
        );
    }

    #[test]
    fn bad_rules_name_their_key() {
        let cases = [
            ("regex = \"(\"", "regex"),
            ("regex = \"^/a\"\nrewrite = \"/b\"", "rewrite"),
            ("prefix = \"a\"", "prefix"),
            ("prefix = \"/a\"\nregex = \"b\"", "regex"),
            ("methods = [\"GET\"]", "prefix"),
            ("prefix = \"/a\"\nrewrite = \"b\"", "rewrite"),
            ("prefix = \"/a\"\nmethods = []", "methods"),
            ("prefix = \"/a\"\nmethods = [\"TRACE\"]", "methods"),
            ("prefix = \"/a\"\nmethods = [\"G T\"]", "methods"),
            ("prefix = \"/a\"\nrate = \"fast\"", "rate"),
            ("prefix = \"/a\"\nburst = 3", "burst"),
            ("prefix = \"/a\"\nrate = \"1r/s\"\nkey = \"cookie\"", "key"),
            ("prefix = \"/a\"\nupgrade = [\"h2c\"]", "upgrade"),
            ("prefix = \"/a\"\nupgrade = [\"H2C\"]", "upgrade"),
            ("prefix = \"/a\"\nupgrade = [\"web socket\"]", "upgrade"),
            ("prefix = \"/a\"\nupgrade = [\"websocket/13\"]", "upgrade"),
        ];
        for (text, key) in cases {
            let err = rule(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {}", err.reason);
        }
        // Without a burst there is nothing to delay.
        assert!(rule("prefix = \"/a\"\nrate = \"1r/s\"").is_ok());
    }
}
