//! `/metrics` in the Prometheus text exposition format 0.0.4: every family with `# HELP` and
//! `# TYPE`, label values escaped, per-worker counters summed at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ControlStatus;
use std::sync::Arc;

use crate::dataplane::stats::{
    HandshakeEnd, NodeStats, RetryReason, WorkerShared, DURATION_BUCKETS,
};
use crate::route::RouteTable;

/// What a scrape reads.
pub struct Sources<'a> {
    /// `None` until the workers run.
    pub stats: Option<&'a NodeStats>,
    pub table: &'a RouteTable,
    pub loaded: bool,
    /// `None` for the file source: the etcd families then have no samples.
    pub control: Option<&'a dyn ControlStatus>,
    /// The certificates of the TLS listeners: (listener name, certificate).
    pub certificates: &'a [(String, crate::tls::CertificateInfo)],
}

/// A frontend's counters summed over workers.
#[derive(Clone, Debug, Default)]
pub struct FrontendTotals {
    /// Answers by status class, 1xx to 5xx.
    pub requests: [u64; 5],
    /// Duration histogram, not cumulative; the last bucket is `+Inf`.
    pub buckets: [u64; 15],
    pub sum_ns: u64,
}

/// Every frontend's counters and every throttling middleware's refusals, summed over workers.
pub fn totals(
    workers: &[Arc<WorkerShared>],
) -> (BTreeMap<String, FrontendTotals>, BTreeMap<String, u64>) {
    let mut frontends: BTreeMap<String, FrontendTotals> = BTreeMap::new();
    let mut throttled: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        for (id, c) in w.frontends.load().iter() {
            let t = frontends.entry(id.to_string()).or_default();
            for (i, r) in c.requests.iter().enumerate() {
                t.requests[i] += r.load(Relaxed);
            }
            for (i, b) in c.buckets.iter().enumerate() {
                t.buckets[i] += b.load(Relaxed);
            }
            t.sum_ns += c.duration_sum_ns.load(Relaxed);
        }
        for (id, c) in w.throttle_rejections.load().iter() {
            *throttled.entry(id.to_string()).or_default() += c.load(Relaxed);
        }
    }
    (frontends, throttled)
}

/// Writes families and samples; label values and help text are escaped here.
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write(self.out);
        self.out.push('\n');
    }
}

/// A sample value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    fn write(self, out: &mut String) {
        // Writing to a String cannot fail.
        match self {
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) => format_float(out, v),
        }
    }
}

/// Go's `strconv.ParseFloat` spellings for the special values, plain decimal otherwise.
pub fn format_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// TLS handshakes on TLS listeners: by result, and for completed ones by version and kind
/// (full or resumed); the duration of completed ones.
fn tls_families(x: &mut Exposition<'_>, workers: &[Arc<WorkerShared>]) {
    let sum = |f: &dyn Fn(&crate::dataplane::stats::WorkerCounters) -> u64| -> u64 {
        workers.iter().map(|w| f(&w.counters)).sum()
    };
    x.family(
        "ringway_tls_handshakes_total",
        "counter",
        "TLS handshakes on TLS listeners, by result (ok, timeout, closed, failed: not TLS or \
         refused, evicted: the oldest unfinished handshake closed for a newer one past \
         max_handshakes), and for result=\"ok\" by version and kind \
         (full or resumed).",
    );
    for (i, (version, kind)) in [
        ("1.2", "full"),
        ("1.2", "resumed"),
        ("1.3", "full"),
        ("1.3", "resumed"),
    ]
    .into_iter()
    .enumerate()
    {
        x.sample(
            "ringway_tls_handshakes_total",
            &[("result", "ok"), ("version", version), ("kind", kind)],
            Value::Int(sum(&|c| c.tls_handshakes_ok[i].load(Relaxed))),
        );
    }
    for (i, result) in HandshakeEnd::FAILED.into_iter().enumerate() {
        x.sample(
            "ringway_tls_handshakes_total",
            &[("result", result)],
            Value::Int(sum(&|c| c.tls_handshakes_failed[i].load(Relaxed))),
        );
    }
    x.family(
        "ringway_tls_handshake_duration_seconds",
        "histogram",
        "Time from a client's first handshake byte to an established TLS session.",
    );
    let mut cumulative = 0;
    let mut le = String::new();
    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += sum(&|c| c.tls_handshake_buckets[i].load(Relaxed));
        le.clear();
        format_float(&mut le, *bound);
        x.sample(
            "ringway_tls_handshake_duration_seconds_bucket",
            &[("le", &le)],
            Value::Int(cumulative),
        );
    }
    cumulative += sum(&|c| c.tls_handshake_buckets[DURATION_BUCKETS.len()].load(Relaxed));
    x.sample(
        "ringway_tls_handshake_duration_seconds_bucket",
        &[("le", "+Inf")],
        Value::Int(cumulative),
    );
    x.sample(
        "ringway_tls_handshake_duration_seconds_sum",
        &[],
        Value::Float(sum(&|c| c.tls_handshake_sum_ns.load(Relaxed)) as f64 / 1e9),
    );
    x.sample(
        "ringway_tls_handshake_duration_seconds_count",
        &[],
        Value::Int(cumulative),
    );
}

/// Label values: backslash, double quote and line feed are escaped (`\\`, `\"`, `\n`).
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text: backslash and line feed are escaped.
pub fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Render every family.
pub fn render(out: &mut String, src: &Sources<'_>) {
    let mut x = Exposition { out };
    let workers = src.stats.map_or(&[][..], |s| s.workers());

    let (frontends, throttled) = totals(workers);
    let total = |f: fn(&crate::dataplane::stats::WorkerCounters) -> u64| -> Value {
        Value::Int(workers.iter().map(|w| f(&w.counters)).sum())
    };

    x.family(
        "ringway_requests_total",
        "counter",
        "Requests answered, by frontend and status class; frontend=\"\" matched no route.",
    );
    for (id, t) in &frontends {
        for (class, n) in CODE_CLASSES.iter().zip(t.requests) {
            if n > 0 {
                x.sample(
                    "ringway_requests_total",
                    &[("frontend", id), ("code_class", class)],
                    Value::Int(n),
                );
            }
        }
    }

    x.family(
        "ringway_request_duration_seconds",
        "histogram",
        "Time from a request head's arrival to the end of its response, by frontend.",
    );
    for (id, t) in &frontends {
        let mut cumulative = 0;
        let mut le = String::new();
        for (bound, n) in DURATION_BUCKETS.iter().zip(t.buckets) {
            cumulative += n;
            le.clear();
            format_float(&mut le, *bound);
            x.sample(
                "ringway_request_duration_seconds_bucket",
                &[("frontend", id), ("le", &le)],
                Value::Int(cumulative),
            );
        }
        cumulative += t.buckets[DURATION_BUCKETS.len()];
        x.sample(
            "ringway_request_duration_seconds_bucket",
            &[("frontend", id), ("le", "+Inf")],
            Value::Int(cumulative),
        );
        x.sample(
            "ringway_request_duration_seconds_sum",
            &[("frontend", id)],
            Value::Float(t.sum_ns as f64 / 1e9),
        );
        x.sample(
            "ringway_request_duration_seconds_count",
            &[("frontend", id)],
            Value::Int(cumulative),
        );
    }

    x.family(
        "ringway_received_bytes_total",
        "counter",
        "Bytes read from clients.",
    );
    x.sample(
        "ringway_received_bytes_total",
        &[],
        total(|c| c.received_bytes.load(Relaxed)),
    );
    x.family(
        "ringway_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
    );
    x.sample(
        "ringway_sent_bytes_total",
        &[],
        total(|c| c.sent_bytes.load(Relaxed)),
    );

    x.family(
        "ringway_connections_active",
        "gauge",
        "Client connections open, by worker.",
    );
    let mut id = String::new();
    for (i, w) in workers.iter().enumerate() {
        id.clear();
        let _ = write!(id, "{i}");
        x.sample(
            "ringway_connections_active",
            &[("worker", &id)],
            Value::Int(w.counters.connections_active.load(Relaxed)),
        );
    }
    x.family(
        "ringway_connections_total",
        "counter",
        "Client connections accepted, by worker.",
    );
    for (i, w) in workers.iter().enumerate() {
        id.clear();
        let _ = write!(id, "{i}");
        x.sample(
            "ringway_connections_total",
            &[("worker", &id)],
            Value::Int(w.counters.connections_total.load(Relaxed)),
        );
    }

    x.family(
        "ringway_upstream_connect_errors_total",
        "counter",
        "Upstream connects that failed or timed out.",
    );
    x.sample(
        "ringway_upstream_connect_errors_total",
        &[],
        total(|c| c.upstream_connect_errors.load(Relaxed)),
    );
    x.family(
        "ringway_upstream_timeouts_total",
        "counter",
        "Upstream connect, write and read deadlines that expired.",
    );
    x.sample(
        "ringway_upstream_timeouts_total",
        &[],
        total(|c| c.upstream_timeouts.load(Relaxed)),
    );
    x.family(
        "ringway_upstream_requests_total",
        "counter",
        "Requests sent to servers, on a pooled (reused=\"true\") or a new connection.",
    );
    x.sample(
        "ringway_upstream_requests_total",
        &[("reused", "false")],
        total(|c| c.upstream_requests_fresh.load(Relaxed)),
    );
    x.sample(
        "ringway_upstream_requests_total",
        &[("reused", "true")],
        total(|c| c.upstream_requests_reused.load(Relaxed)),
    );
    x.family(
        "ringway_upstream_retries_total",
        "counter",
        "Further attempts after the first, by reason: connect (nothing was sent), reset, \
         timeout, status (the failover predicate retried a response), stale_connection (a \
         pooled connection the server had closed, retried on a new one).",
    );
    for reason in RetryReason::ALL {
        x.sample(
            "ringway_upstream_retries_total",
            &[("reason", reason.label())],
            Value::Int(
                workers
                    .iter()
                    .map(|w| w.counters.upstream_retries[reason as usize].load(Relaxed))
                    .sum(),
            ),
        );
    }
    x.family(
        "ringway_retry_budget_exhausted_total",
        "counter",
        "Retries the failover predicate asked for but the node-wide retry budget refused; \
         the attempt's answer went to the client.",
    );
    x.sample(
        "ringway_retry_budget_exhausted_total",
        &[],
        total(|c| c.retry_budget_exhausted.load(Relaxed)),
    );
    tls_families(&mut x, workers);
    x.family(
        "ringway_tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each certificate of a TLS listener expires (Unix time; the profile's files, as \
         loaded at start-up or the last SIGHUP).",
    );
    for (listener, c) in src.certificates {
        let file = c.file.display().to_string();
        let names = c.names.join(",");
        let at = c
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        x.sample(
            "ringway_tls_certificate_expiry_timestamp_seconds",
            &[("listener", listener), ("file", &file), ("names", &names)],
            Value::Int(at),
        );
    }

    x.family(
        "ringway_throttle_rejections_total",
        "counter",
        "Requests refused by a throttling middleware, by middleware id.",
    );
    for (mid, n) in &throttled {
        x.sample(
            "ringway_throttle_rejections_total",
            &[("middleware", mid)],
            Value::Int(*n),
        );
    }

    resilience_families(&mut x, src.table);

    x.family(
        "ringway_route_table_revision",
        "gauge",
        "Revision of the route table in use.",
    );
    x.sample(
        "ringway_route_table_revision",
        &[],
        Value::Float(src.table.revision() as f64),
    );
    x.family(
        "ringway_route_table_frontends",
        "gauge",
        "Frontends in the route table in use.",
    );
    x.sample(
        "ringway_route_table_frontends",
        &[],
        Value::Int(src.table.frontends().len() as u64),
    );
    x.family(
        "ringway_route_table_loaded",
        "gauge",
        "1 once a route table was loaded.",
    );
    x.sample(
        "ringway_route_table_loaded",
        &[],
        Value::Int(u64::from(src.loaded)),
    );

    x.family(
        "ringway_etcd_connected",
        "gauge",
        "1 while the etcd route source holds a working connection (no sample for a file source).",
    );
    if let Some(c) = src.control {
        x.sample(
            "ringway_etcd_connected",
            &[],
            Value::Int(u64::from(c.etcd_connected())),
        );
    }
    x.family(
        "ringway_etcd_last_sync_seconds",
        "gauge",
        "Seconds since the last successful sync with etcd; NaN before the first (no sample for a file source).",
    );
    if let Some(c) = src.control {
        let last = c.last_sync_unix();
        let age = if last == 0 {
            f64::NAN
        } else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            (now - last as f64).max(0.0)
        };
        x.sample("ringway_etcd_last_sync_seconds", &[], Value::Float(age));
    }

    x.family(
        "ringway_worker_io_driver",
        "gauge",
        "The event loop each worker runs on (always 1).",
    );
    for (i, w) in workers.iter().enumerate() {
        if let Some(d) = w.counters.driver() {
            id.clear();
            let _ = write!(id, "{i}");
            let driver = d.to_string();
            x.sample(
                "ringway_worker_io_driver",
                &[("worker", &id), ("driver", &driver)],
                Value::Int(1),
            );
        }
    }
}

/// Outlier ejection per server and circuit breakers per middleware, from the node state the
/// table in use points at.
fn resilience_families(x: &mut Exposition<'_>, table: &RouteTable) {
    use crate::resilience::breaker::State;
    let now = crate::resilience::ejection::now_ms(std::time::Instant::now());
    x.family(
        "ringway_upstream_ejections_total",
        "counter",
        "Times outlier ejection took a server out of its backend's rotation.",
    );
    for b in table.backends() {
        for s in &b.servers {
            x.sample(
                "ringway_upstream_ejections_total",
                &[("backend", &b.id), ("server", &s.url)],
                Value::Int(s.health.ejections()),
            );
        }
    }
    x.family(
        "ringway_upstream_ejected",
        "gauge",
        "Servers of the backend out of rotation now (penalty running or probe undecided).",
    );
    for b in table.backends() {
        let out = b.servers.iter().filter(|s| s.health.is_ejected()).count();
        x.sample(
            "ringway_upstream_ejected",
            &[("backend", &b.id)],
            Value::Int(out as u64),
        );
    }
    let breakers: Vec<_> = table
        .frontends()
        .iter()
        .flat_map(|f| f.middlewares.iter().filter_map(|m| m.breaker.as_ref()))
        .collect();
    x.family(
        "ringway_breaker_state",
        "gauge",
        "State of each cbreaker middleware: 0 standby, 1 tripped, 2 recovering.",
    );
    for b in &breakers {
        x.sample(
            "ringway_breaker_state",
            &[("frontend", &b.frontend), ("middleware", &b.middleware)],
            Value::Int(b.state(now) as u64),
        );
    }
    x.family(
        "ringway_breaker_transitions_total",
        "counter",
        "Transitions of each cbreaker middleware, by the state entered.",
    );
    for b in &breakers {
        for to in State::ALL {
            x.sample(
                "ringway_breaker_transitions_total",
                &[
                    ("frontend", &b.frontend),
                    ("middleware", &b.middleware),
                    ("to", to.label()),
                ],
                Value::Int(b.transitions(to)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd\té");
        assert_eq!(out, "a\\\\b\\\"c\\nd\té");
        let mut help = String::new();
        escape_help(&mut help, "x\\y\"z\n");
        assert_eq!(help, "x\\\\y\"z\\n");
    }

    #[test]
    fn samples_carry_escaped_labels_and_special_floats() {
        let mut out = String::new();
        let mut x = Exposition { out: &mut out };
        x.family("m", "gauge", "help \\ me\nplease");
        x.sample("m", &[("frontend", "a\"b"), ("le", "+Inf")], Value::Int(3));
        x.sample("m", &[], Value::Float(f64::NAN));
        x.sample("m", &[], Value::Float(0.0005));
        assert_eq!(
            out,
            "# HELP m help \\\\ me\\nplease\n# TYPE m gauge\nm{frontend=\"a\\\"b\",le=\"+Inf\"} 3\nm NaN\nm 0.0005\n"
        );
    }

    fn scrape(stats: &NodeStats, control: Option<&dyn ControlStatus>) -> String {
        let mut out = String::new();
        render(
            &mut out,
            &Sources {
                stats: Some(stats),
                table: &RouteTable::empty(),
                loaded: true,
                control,
                certificates: &[],
            },
        );
        out
    }

    #[test]
    fn histograms_are_cumulative_and_count_equals_the_inf_bucket() {
        use crate::dataplane::stats::WorkerStats;
        use std::sync::Arc;
        use std::time::Duration;
        let stats = NodeStats::new(2);
        for (i, w) in stats.workers().iter().enumerate() {
            let ws = WorkerStats::new(w.clone());
            let f = ws.frontend(&Arc::from("we\"ird"));
            ws.request(&f, 200, Duration::from_micros(300));
            ws.request(&f, 503, Duration::from_millis(30 * (i as u64 + 1)));
            ws.request(&f, 200, Duration::from_secs(20));
            ws.tick(&RouteTable::empty());
        }
        let text = scrape(&stats, None);
        let fe = "frontend=\"we\\\"ird\"";
        let want = [
            format!("ringway_requests_total{{{fe},code_class=\"2xx\"}} 4"),
            format!("ringway_requests_total{{{fe},code_class=\"5xx\"}} 2"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"0.0005\"}} 2"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"0.025\"}} 2"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"0.05\"}} 3"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"0.1\"}} 4"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"10\"}} 4"),
            format!("ringway_request_duration_seconds_bucket{{{fe},le=\"+Inf\"}} 6"),
            format!("ringway_request_duration_seconds_count{{{fe}}} 6"),
            format!("ringway_request_duration_seconds_sum{{{fe}}} 40.0906"),
        ];
        for line in want {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            !text.lines().any(|l| l.starts_with("ringway_etcd")),
            "no etcd sample for a file source"
        );
    }

    #[test]
    fn etcd_gauges_follow_the_control_status() {
        struct Fake(u64);
        impl ControlStatus for Fake {
            fn etcd_connected(&self) -> bool {
                true
            }
            fn last_sync_unix(&self) -> u64 {
                self.0
            }
        }
        let stats = NodeStats::new(1);
        let text = scrape(&stats, Some(&Fake(0)));
        assert!(text.contains("\nringway_etcd_connected 1\n"), "{text}");
        assert!(
            text.contains("\nringway_etcd_last_sync_seconds NaN\n"),
            "{text}"
        );
        let pos = |s: &str| text.find(s).unwrap();
        assert!(pos("# TYPE ringway_etcd_connected") < pos("\nringway_etcd_connected 1\n"));
        assert!(pos("\nringway_etcd_connected 1\n") < pos("# HELP ringway_etcd_last_sync"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let text = scrape(&stats, Some(&Fake(now - 5)));
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ringway_etcd_last_sync_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((4.0..60.0).contains(&age), "{age}");
    }
}
