//! Views of a compiled table: human text for `ringway check`, JSON for the admin `/routes`
//! endpoint. Both list frontends in precedence order.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::failover::VULCAND_DEFAULT;
use super::{Report, RouteTable, Server};
use crate::resilience::breaker::{Breaker, State};
use crate::resilience::ejection::now_ms;

fn duration_ms(d: Option<std::time::Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

fn server_json(s: &Server, now: u64) -> Value {
    let h = &s.health;
    let rtt = h.rtt_estimate_us();
    json!({
        "id": &*s.id,
        "url": s.url,
        "addr": s.addr.to_string(),
        "authority": s.authority,
        "weight": s.weight,
        "ejected": h.is_ejected(),
        "ejection_left_ms": h.penalty_left(now),
        "ejections": h.ejections(),
        "latency_estimate_ms": (rtt > 0).then(|| rtt as f64 / 1000.0),
    })
}

fn breaker_json(b: &Breaker, now: u64) -> Value {
    json!({
        "state": b.state(now).label(),
        "remaining_ms": b.remaining(now),
        "condition": b.spec.condition_text,
        "tripped": b.transitions(State::Tripped),
    })
}

impl RouteTable {
    /// The table and its report as text: each frontend in precedence order with its route,
    /// backend and servers, then conflicts, then skipped values.
    pub fn render(&self, report: &Report) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "revision {}: {} frontends, {} backends",
            self.revision(),
            self.frontends().len(),
            self.backends().len()
        );
        for (i, f) in self.frontends().iter().enumerate() {
            let backend = self.backend(f.backend);
            let _ = writeln!(out, "{:>4}. {}  {}", i + 1, f.id, f.route);
            if self.priority(i) != 0 {
                let _ = writeln!(out, "      priority {}", self.priority(i));
            }
            let _ = writeln!(
                out,
                "      backend {} ({} servers)",
                backend.id,
                backend.servers.len()
            );
            for s in &backend.servers {
                let _ = writeln!(
                    out,
                    "        {} {} -> {} weight {}",
                    s.id, s.url, s.addr, s.weight
                );
            }
            match f.settings.failover.text() {
                Some(p) => {
                    let _ = writeln!(out, "      failover {p}");
                }
                None => {
                    let _ = writeln!(out, "      failover: vulcand default ({VULCAND_DEFAULT})");
                }
            }
            for m in &f.middlewares {
                let _ = writeln!(
                    out,
                    "      middleware {} ({}, priority {})",
                    m.id, m.kind, m.priority
                );
                if let Some(b) = &m.breaker {
                    let _ = writeln!(out, "        condition {}", b.spec.condition_text);
                }
            }
        }
        let used: std::collections::HashSet<usize> =
            self.frontends().iter().map(|f| f.backend).collect();
        for (i, b) in self.backends().iter().enumerate() {
            if !used.contains(&i) {
                let _ = writeln!(
                    out,
                    "backend {} ({} servers) has no frontend",
                    b.id,
                    b.servers.len()
                );
            }
        }
        if !report.conflicts.is_empty() {
            let _ = writeln!(out, "conflicts:");
            for c in &report.conflicts {
                let _ = writeln!(out, "  {} {} {}", c.loser, c.reason, c.winner);
            }
        }
        if !report.skipped.is_empty() {
            let _ = writeln!(out, "skipped:");
            for s in &report.skipped {
                let _ = writeln!(out, "  {}: {}", s.key, s.reason);
            }
        }
        if !report.unsupported.is_empty() {
            let _ = writeln!(out, "not supported (the rest of each value applies):");
            for s in &report.unsupported {
                let _ = writeln!(out, "  {}: {}", s.key, s.reason);
            }
        }
        out
    }

    /// The table and its report as JSON for the admin endpoint. `frontends` is in precedence
    /// order (`precedence` is its 1-based position); durations are in milliseconds.
    pub fn to_json(&self, report: &Report) -> Value {
        let now = now_ms(std::time::Instant::now());
        let frontends: Vec<Value> = self
            .frontends()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                json!({
                    "id": &*f.id,
                    "precedence": i + 1,
                    "route": f.route,
                    "normalized": self.expr(i).normalized(),
                    "priority": self.priority(i),
                    "backend": &*self.backend(f.backend).id,
                    "settings": {
                        "pass_host_header": f.settings.pass_host_header,
                        "trust_forward_header": f.settings.trust_forward_header,
                        "max_body_bytes": f.settings.max_body_bytes,
                        "hostname": f.settings.hostname,
                        "failover_predicate": f.settings.failover.text().unwrap_or(VULCAND_DEFAULT),
                        "failover_default": !f.settings.failover.is_explicit(),
                    },
                    "middlewares": f.middlewares.iter().map(|m| json!({
                        "id": &*m.id,
                        "priority": m.priority,
                        "type": m.kind,
                        "config": m.config,
                        "breaker": m.breaker.as_deref().map(|b| breaker_json(b, now)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let backends: Vec<Value> = self
            .backends()
            .iter()
            .map(|b| {
                json!({
                    "id": &*b.id,
                    "settings": {
                        "read_timeout_ms": duration_ms(b.settings.read_timeout),
                        "dial_timeout_ms": duration_ms(b.settings.dial_timeout),
                        "tls_handshake_timeout_ms": duration_ms(b.settings.tls_handshake_timeout),
                        "keepalive_period_ms": duration_ms(b.settings.keepalive_period),
                        "max_idle_per_host": b.settings.max_idle_per_host,
                    },
                    "servers": b.servers.iter().map(|s| server_json(s, now)).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "revision": self.revision(),
            "frontends": frontends,
            "backends": backends,
            "conflicts": report.conflicts.iter().map(|c| json!({
                "winner": c.winner,
                "loser": c.loser,
                "reason": c.reason,
            })).collect::<Vec<_>>(),
            "skipped": report.skipped.iter().map(|s| json!({
                "key": s.key,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
            "unsupported": report.unsupported.iter().map(|s| json!({
                "key": s.key,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
        })
    }
}
