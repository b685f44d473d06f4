//! `/status.json`, what the status page (`/`) shows: the node, the frontends with their rates,
//! latencies and breakers, the backends with their servers' state, and the problems first.
//! Rates come from ringway's own counters: a sampler thread adds a sample of every frontend's
//! totals once a second to a ring of the last five minutes, so no monitoring stack is needed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::metrics::{totals, FrontendTotals};
use super::AdminState;
use crate::dataplane::stats::DURATION_BUCKETS;
use crate::resilience::breaker::State;
use crate::resilience::ejection::now_ms;

/// Samples kept: one a second for five minutes.
const KEEP: usize = 301;
/// Seconds of history in each frontend's sparkline.
const SPARK_SECS: usize = 120;
/// Seconds over which requests/s and error rates are averaged.
const RATE_SECS: usize = 10;
/// Seconds over which p50/p99 are taken.
const LATENCY_SECS: usize = 60;

struct Sample {
    at: Instant,
    frontends: BTreeMap<String, FrontendTotals>,
    throttled: BTreeMap<String, u64>,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Add a sample of `state`'s counters (once a second, from the sampler thread).
    pub fn sample(&self, state: &AdminState) {
        let Some(stats) = state.stats.get() else {
            return;
        };
        let (frontends, throttled) = totals(stats.workers());
        if let Ok(mut s) = self.samples.lock() {
            if s.len() == KEEP {
                s.pop_front();
            }
            s.push_back(Sample {
                at: Instant::now(),
                frontends,
                throttled,
            });
        }
    }
}

/// Answers (all classes) and answers by class between two samples of one frontend.
fn delta(a: Option<&FrontendTotals>, b: &FrontendTotals) -> FrontendTotals {
    let mut d = FrontendTotals::default();
    for i in 0..5 {
        d.requests[i] = b.requests[i].saturating_sub(a.map_or(0, |a| a.requests[i]));
    }
    for i in 0..15 {
        d.buckets[i] = b.buckets[i].saturating_sub(a.map_or(0, |a| a.buckets[i]));
    }
    d
}

/// The bucket bound (ms) under which `q` of the answers in `buckets` fell; `None` without
/// answers. The last bucket has no bound: it reads as the largest one.
fn quantile_ms(buckets: &[u64; 15], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            let bound = DURATION_BUCKETS
                .get(i)
                .copied()
                .unwrap_or(DURATION_BUCKETS[13]);
            return Some(bound * 1000.0);
        }
    }
    None
}

/// The status document.
pub fn render(state: &AdminState) -> Value {
    let table = state.routes.load();
    let report = state.routes.report();
    let now = now_ms(Instant::now());
    let samples = state.history.samples.lock();
    let samples: Vec<&Sample> = samples
        .as_ref()
        .map_or_else(|_| Vec::new(), |s| s.iter().collect());
    let last = samples.last().copied();
    // The sample `secs` seconds before the last one (or the oldest).
    let back = |secs: usize| -> Option<&Sample> {
        let last = last?;
        samples
            .iter()
            .copied()
            .find(|s| last.at.duration_since(s.at) <= Duration::from_secs(secs as u64))
    };
    let workers: Vec<Value> = state.stats.get().map_or_else(Vec::new, |s| {
        s.workers()
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({
                    "id": i,
                    "driver": w.counters.driver().map(|d| d.to_string()),
                    "connections": w.counters.connections_active.load(Relaxed),
                })
            })
            .collect()
    });
    let connections: u64 = workers
        .iter()
        .filter_map(|w| w["connections"].as_u64())
        .sum();
    let (fresh, reused) = state.stats.get().map_or((0, 0), |s| {
        s.workers().iter().fold((0, 0), |(f, r), w| {
            (
                f + w.counters.upstream_requests_fresh.load(Relaxed),
                r + w.counters.upstream_requests_reused.load(Relaxed),
            )
        })
    });

    let mut problems: Vec<Value> = Vec::new();
    if let Err(why) = state.readiness() {
        problems.push(json!({"kind": "not ready", "what": why}));
    }
    if let Some(c) = &state.control {
        if !c.etcd_connected() {
            problems.push(
                json!({"kind": "etcd", "what": "not connected to etcd: serving the last table"}),
            );
        }
    }
    for c in &report.conflicts {
        problems.push(
            json!({"kind": "conflict", "what": format!("{} {} {}", c.loser, c.reason, c.winner)}),
        );
    }
    for s in &report.skipped {
        problems.push(json!({"kind": "skipped", "what": format!("{}: {}", s.key, s.reason)}));
    }

    let frontends: Vec<Value> = table
        .frontends()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let id = &*f.id;
            let now_t = last.and_then(|s| s.frontends.get(id));
            let rate = |secs: usize| -> Option<(f64, FrontendTotals)> {
                let (last, first, now_t) = (last?, back(secs)?, now_t?);
                let span = last.at.duration_since(first.at).as_secs_f64();
                (span > 0.0).then(|| (span, delta(first.frontends.get(id), now_t)))
            };
            let (rps, r4, r5) = rate(RATE_SECS).map_or((0.0, 0.0, 0.0), |(span, d)| {
                let all: u64 = d.requests.iter().sum();
                (all as f64 / span, d.requests[3] as f64 / span, d.requests[4] as f64 / span)
            });
            let lat = rate(LATENCY_SECS).map(|(_, d)| d.buckets);
            let mut spark_rps = Vec::new();
            let mut spark_err = Vec::new();
            let start = samples.len().saturating_sub(SPARK_SECS + 1);
            for pair in samples[start..].windows(2) {
                let secs = pair[1].at.duration_since(pair[0].at).as_secs_f64().max(0.001);
                let d = match pair[1].frontends.get(id) {
                    Some(b) => delta(pair[0].frontends.get(id), b),
                    None => FrontendTotals::default(),
                };
                let all: u64 = d.requests.iter().sum();
                spark_rps.push((all as f64 / secs * 10.0).round() / 10.0);
                spark_err.push(((d.requests[3] + d.requests[4]) as f64 / secs * 10.0).round() / 10.0);
            }
            let throttled: u64 = f
                .middlewares
                .iter()
                .filter(|m| m.limit.is_some())
                .map(|m| last.and_then(|s| s.throttled.get(&*m.id)).copied().unwrap_or(0))
                .sum();
            let breakers: Vec<Value> = f
                .middlewares
                .iter()
                .filter_map(|m| m.breaker.as_ref())
                .map(|b| {
                    let st = b.state(now);
                    if st != State::Standby {
                        problems.push(json!({"kind": "breaker", "what": format!("frontend {} breaker {} is {}", b.frontend, b.middleware, st.label())}));
                    }
                    json!({"id": &*b.middleware, "state": st.label(), "remaining_ms": b.remaining(now)})
                })
                .collect();
            json!({
                "id": id,
                "precedence": i + 1,
                "route": f.route,
                "backend": &*table.backend(f.backend).id,
                "rps": (rps * 10.0).round() / 10.0,
                "errors_4xx_per_s": (r4 * 10.0).round() / 10.0,
                "errors_5xx_per_s": (r5 * 10.0).round() / 10.0,
                "p50_ms": lat.as_ref().and_then(|b| quantile_ms(b, 0.5)),
                "p99_ms": lat.as_ref().and_then(|b| quantile_ms(b, 0.99)),
                "requests_total": now_t.map_or(0, |t| t.requests.iter().sum::<u64>()),
                "throttled_total": throttled,
                "breakers": breakers,
                "spark_rps": spark_rps,
                "spark_errors": spark_err,
            })
        })
        .collect();

    let backends: Vec<Value> = table
        .backends()
        .iter()
        .map(|b| {
            let servers: Vec<Value> = b
                .servers
                .iter()
                .map(|s| {
                    let h = &s.health;
                    let st = if !h.is_ejected() {
                        "up"
                    } else if h.penalty_left(now) > 0 {
                        "ejected"
                    } else {
                        "probing"
                    };
                    if st != "up" {
                        problems.push(json!({"kind": "server", "what": format!("backend {} server {} is {st}", b.id, s.url)}));
                    }
                    let rtt = h.rtt_estimate_us();
                    json!({
                        "id": &*s.id,
                        "url": s.url,
                        "addr": s.addr.to_string(),
                        "state": st,
                        "ejection_left_ms": h.penalty_left(now),
                        "ejections": h.ejections(),
                        "latency_ms": (rtt > 0).then(|| rtt as f64 / 1000.0),
                        "inflight": h.inflight(),
                        "pool_reuse": h.pool_reuse(),
                        "weight": s.weight,
                    })
                })
                .collect();
            if b.servers.is_empty() {
                problems.push(json!({"kind": "backend", "what": format!("backend {} has no server", b.id)}));
            }
            json!({"id": &*b.id, "servers": servers})
        })
        .collect();

    json!({
        "node": {
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("RINGWAY_COMMIT"),
            "uptime_s": state.started.elapsed().as_secs(),
            "workers": workers,
            "connections": connections,
            "ready": state.readiness().is_ok(),
            "source": if state.control.is_some() { "etcd" } else { "file" },
            "revision": table.revision(),
            "etcd_connected": state.control.as_ref().map(|c| c.etcd_connected()),
            "etcd_last_sync_unix": state.control.as_ref().map(|c| c.last_sync_unix()),
            "pool_reuse": if fresh + reused == 0 { Value::Null } else { json!(reused as f64 / (fresh + reused) as f64) },
        },
        "problems": problems,
        "frontends": frontends,
        "backends": backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_read_the_bucket_bounds() {
        let mut b = [0u64; 15];
        assert_eq!(quantile_ms(&b, 0.5), None);
        b[1] = 90; // up to 1 ms
        b[6] = 10; // up to 50 ms
        assert_eq!(quantile_ms(&b, 0.5), Some(1.0));
        assert_eq!(quantile_ms(&b, 0.99), Some(50.0));
    }
}
