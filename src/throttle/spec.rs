//! vulcand's `ratelimit` and `connlimit` middleware documents parsed into typed, validated
//! [`Limit`]s. Runs when routes are compiled, so a bad middleware is skipped and reported
//! there and the data plane only ever sees valid limits.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::Deserialize;

use super::bucket::Rate;
use super::duration_text::go_duration_ms;

/// Largest `Requests` and `Burst` accepted.
const MAX_COUNT: i64 = 1_000_000_000_000;
/// Longest `PeriodSeconds` accepted: ten years.
const MAX_PERIOD_SECS: i64 = 10 * 365 * 86_400;
/// Most `Connections` accepted.
const MAX_CONNECTIONS: i64 = 1_000_000;

/// What requests are grouped by (vulcand's `Variable`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    /// The peer address of the client connection (not `X-Forwarded-For`).
    ClientIp,
    /// The request's host without port, ASCII-lowercased.
    RequestHost,
    /// The first value of this header field (name matched ignoring case). Requests without
    /// the field share one bucket of their own.
    Header(Box<str>),
}

impl Variable {
    /// `client.ip`, `request.host` or `request.header.<Name>`.
    pub fn parse(text: &str) -> Result<Variable, String> {
        match text {
            "client.ip" => Ok(Variable::ClientIp),
            "request.host" => Ok(Variable::RequestHost),
            _ => match text.strip_prefix("request.header.") {
                Some(name) if !name.is_empty() && name.bytes().all(is_tchar) => {
                    Ok(Variable::Header(name.to_ascii_lowercase().into()))
                }
                _ => Err(format!(
                    "Variable {text:?} is not one of client.ip, request.host, request.header.<Name>"
                )),
            },
        }
    }
}

impl std::fmt::Display for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variable::ClientIp => f.write_str("client.ip"),
            Variable::RequestHost => f.write_str("request.host"),
            Variable::Header(name) => write!(f, "request.header.{name}"),
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a limit bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// `ratelimit`: a token bucket per key.
    Rate(Rate),
    /// nginx `limit_req` without `nodelay`: the same bucket, but a request that finds it
    /// short of full waits until its turn at the rate (nginx's "excess" divided by the rate)
    /// instead of going through at once; beyond the burst it is refused.
    Paced(Rate),
    /// `connlimit`: at most this many requests in flight per key.
    Connections(u32),
}

/// One throttling middleware of one frontend, ready for the data plane.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub kind: LimitKind,
    pub variable: Variable,
    /// Equal for the same frontend id, middleware id and settings: bucket state is keyed by
    /// it, so it survives route refreshes that leave the middleware alone, and changed
    /// settings start from fresh state.
    pub identity: u64,
    /// Body of the rejection, naming the limit.
    pub message: Arc<str>,
    /// The middleware's id, for the rejection counters.
    pub middleware: Arc<str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RateDoc {
    requests: i64,
    period_seconds: i64,
    #[serde(default)]
    burst: i64,
    variable: String,
    /// vulcand reads per-request rates from this variable; not supported.
    #[serde(default)]
    config_var: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ConnDoc {
    connections: i64,
    variable: String,
}

fn bounded(field: &str, v: i64, min: i64, max: i64) -> Result<u64, String> {
    if (min..=max).contains(&v) {
        Ok(v as u64)
    } else {
        Err(format!("{field} must be between {min} and {max}, got {v}"))
    }
}

fn identity(kind: &str, frontend: &str, middleware: &str, settings: impl Hash) -> u64 {
    // Fixed keys: the identity must be the same on every worker and every compile.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    (kind, frontend, middleware).hash(&mut h);
    settings.hash(&mut h);
    h.finish()
}

/// The rate limit of an edge listener's expose rule (nginx `limit_req`): `rate` is the
/// nginx text it came from, `bucket` is (requests, period seconds, bucket size).
pub fn edge_rate(
    listener: &str,
    rule: usize,
    label: &str,
    rate: &str,
    bucket: (u64, u64, u64),
    variable: Variable,
    paced: bool,
) -> Limit {
    let (requests, period, size) = bucket;
    let message = format!(
        "rate limit of listener {listener} ({label}) exceeded ({rate}, burst {})",
        size - 1
    );
    Limit {
        identity: identity(
            "edge",
            listener,
            &rule.to_string(),
            (label, requests, period, size, &variable),
        ),
        kind: if paced {
            LimitKind::Paced(Rate::new(requests, period, size))
        } else {
            LimitKind::Rate(Rate::new(requests, period, size))
        },
        variable,
        message: message.into(),
        middleware: format!("{listener}/expose[{rule}]").into(),
    }
}

/// Parse the middleware `config` of type `kind` attached to `frontend`. `Ok(None)` for types
/// that are not throttling middlewares; `Err` names the bad field.
pub fn parse(
    frontend: &str,
    middleware: &str,
    kind: &str,
    config: &serde_json::Value,
) -> Result<Option<Limit>, String> {
    let doc_err = |e: serde_json::Error| format!("{kind}: {e}");
    match kind {
        "ratelimit" => {
            let doc = RateDoc::deserialize(config).map_err(doc_err)?;
            let requests = bounded("Requests", doc.requests, 1, MAX_COUNT)?;
            let period = bounded("PeriodSeconds", doc.period_seconds, 1, MAX_PERIOD_SECS)?;
            // vulcand's Burst is the bucket size; 0 (or absent) means 1: no request could
            // ever pass a bucket of 0.
            let burst = bounded("Burst", doc.burst, 0, MAX_COUNT)?.max(1);
            let variable = Variable::parse(&doc.variable)?;
            if !doc.config_var.is_empty() {
                return Err(
                    "ConfigVar (rates read from each request) is not supported; remove it"
                        .to_string(),
                );
            }
            let rate = Rate::new(requests, period, burst);
            let message = format!(
                "rate limit of frontend {frontend} exceeded ({requests} per {}, burst {burst})",
                go_duration_ms(period * 1000)
            );
            Ok(Some(Limit {
                identity: identity(
                    kind,
                    frontend,
                    middleware,
                    (requests, period, burst, &variable),
                ),
                kind: LimitKind::Rate(rate),
                variable,
                message: message.into(),
                middleware: middleware.into(),
            }))
        }
        "connlimit" => {
            let doc = ConnDoc::deserialize(config).map_err(doc_err)?;
            let n = bounded("Connections", doc.connections, 1, MAX_CONNECTIONS)? as u32;
            let variable = Variable::parse(&doc.variable)?;
            let message = format!(
                "connection limit of frontend {frontend} exceeded ({n} in flight per {variable})"
            );
            Ok(Some(Limit {
                identity: identity(kind, frontend, middleware, (n, &variable)),
                kind: LimitKind::Connections(n),
                variable,
                message: message.into(),
                middleware: middleware.into(),
            }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rate(config: serde_json::Value) -> Result<Limit, String> {
        parse("users", "rl", "ratelimit", &config).map(|l| l.expect("a throttling type"))
    }

    #[test]
    fn a_vulcand_ratelimit_parses_into_a_rate() {
        let l = rate(json!({"Requests":100,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"}))
            .unwrap();
        assert_eq!(l.kind, LimitKind::Rate(Rate::new(100, 1, 3)));
        assert_eq!(l.variable, Variable::ClientIp);
        assert_eq!(
            &*l.message,
            "rate limit of frontend users exceeded (100 per 1s, burst 3)"
        );
        let hourly =
            rate(json!({"Requests":5,"PeriodSeconds":3600,"Variable":"request.host"})).unwrap();
        assert_eq!(hourly.kind, LimitKind::Rate(Rate::new(5, 3600, 1)));
        assert!(hourly.message.contains("5 per 1h0m0s, burst 1"));
    }

    #[test]
    fn variables_are_client_ip_host_or_a_header() {
        let v = |s: &str| Variable::parse(s);
        assert_eq!(v("client.ip"), Ok(Variable::ClientIp));
        assert_eq!(v("request.host"), Ok(Variable::RequestHost));
        assert_eq!(
            v("request.header.X-Tenant"),
            Ok(Variable::Header("x-tenant".into()))
        );
        for bad in [
            "",
            "client",
            "request.header.",
            "request.header.a b",
            "request.cookie.x",
        ] {
            assert!(v(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        let cases = [
            (
                json!({"Requests":0,"PeriodSeconds":1,"Variable":"client.ip"}),
                "Requests",
            ),
            (
                json!({"Requests":1,"PeriodSeconds":0,"Variable":"client.ip"}),
                "PeriodSeconds",
            ),
            (
                json!({"Requests":1,"PeriodSeconds":1,"Burst":-1,"Variable":"client.ip"}),
                "Burst",
            ),
            (
                json!({"Requests":1,"PeriodSeconds":1,"Variable":"nope"}),
                "Variable",
            ),
            (json!({"Requests":1,"PeriodSeconds":1}), "Variable"),
            (
                json!({"Requests":"1","PeriodSeconds":1,"Variable":"client.ip"}),
                "invalid type",
            ),
            (
                json!({"Requests":1,"PeriodSeconds":1,"Burts":3,"Variable":"client.ip"}),
                "Burts",
            ),
            (
                json!({"Requests":1,"PeriodSeconds":1,"Variable":"client.ip","ConfigVar":"request.header.X"}),
                "ConfigVar",
            ),
            (json!(null), "ratelimit"),
        ];
        for (config, field) in cases {
            let err = rate(config.clone()).unwrap_err();
            assert!(err.contains(field), "{config}: {err}");
        }
        let err = parse(
            "f",
            "c",
            "connlimit",
            &json!({"Connections":0,"Variable":"client.ip"}),
        )
        .unwrap_err();
        assert!(err.contains("Connections"), "{err}");
    }

    #[test]
    fn connlimit_parses_and_other_types_are_not_limits() {
        let l = parse(
            "f",
            "c",
            "connlimit",
            &json!({"Connections":2,"Variable":"client.ip"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.kind, LimitKind::Connections(2));
        assert!(parse("f", "r", "rewrite", &json!({"Regexp":"x"}))
            .unwrap()
            .is_none());
    }

    #[test]
    fn identity_follows_frontend_middleware_and_settings_only() {
        let doc = json!({"Requests":10,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"});
        let a = parse("f", "m", "ratelimit", &doc).unwrap().unwrap();
        let again = parse("f", "m", "ratelimit", &doc).unwrap().unwrap();
        assert_eq!(a.identity, again.identity);
        let other_frontend = parse("g", "m", "ratelimit", &doc).unwrap().unwrap();
        let other_mw = parse("f", "n", "ratelimit", &doc).unwrap().unwrap();
        let changed = json!({"Requests":10,"PeriodSeconds":1,"Burst":4,"Variable":"client.ip"});
        let changed = parse("f", "m", "ratelimit", &changed).unwrap().unwrap();
        for other in [other_frontend, other_mw, changed] {
            assert_ne!(a.identity, other.identity);
        }
        // Burst 0 and 1 are the same bucket, so the same state.
        let zero = json!({"Requests":10,"PeriodSeconds":1,"Burst":0,"Variable":"client.ip"});
        let one = json!({"Requests":10,"PeriodSeconds":1,"Burst":1,"Variable":"client.ip"});
        assert_eq!(
            parse("f", "m", "ratelimit", &zero)
                .unwrap()
                .unwrap()
                .identity,
            parse("f", "m", "ratelimit", &one)
                .unwrap()
                .unwrap()
                .identity
        );
    }
}
