//! The admin endpoint and the access log, against the real binary: exact counters after a
//! known mix of requests, a `/metrics` text that strict and real Prometheus parsers accept,
//! `/routes` following a route change, health and readiness, one JSON line per request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{free_port, get, ringway, routes_json, PortHold, Ringway, TempDir};
use crate::origin::Origin;

/// A free loopback address for the admin listener and the profile text that enables it.
pub fn with_admin(extra: &str) -> (SocketAddr, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    (addr, format!("[admin]\naddr = \"{addr}\"\n\n{extra}"))
}

/// Send `req` on a new connection and read until the server closes it: the exact bytes.
fn exchange(addr: SocketAddr, req: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

pub fn scrape(admin: SocketAddr) -> String {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// One sample of an exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ if v.contains("inf") || v.contains("nan") => Err(format!("bad value {v:?}")),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parse `{a="x",b="y\"z"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = &s[1..];
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// A strict reader of the text format 0.0.4: every sample belongs to a family declared with
/// HELP and TYPE before it, families are contiguous, histograms are cumulative, end with
/// `+Inf` and their `_count` equals the `+Inf` bucket.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let body = text.strip_suffix('\n').ok_or("must end with a line feed")?;
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in body.split('\n') {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().ok_or("short comment")?);
            let arg = parts.next().ok_or("comment without text")?;
            if !is_metric_name(name) {
                return Err(format!("bad family name {name:?}"));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.push(c);
                }
                if finished.iter().any(|f| f == name) {
                    return Err(format!("family {name} is not contiguous"));
                }
                current = Some(name.to_string());
            }
            match kw {
                "HELP" => helped.push(name.to_string()),
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(format!("bad type {arg:?}"));
                    }
                    if types.insert(name.to_string(), arg.to_string()).is_some() {
                        return Err(format!("{name} typed twice"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value: {line}"))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(|e| format!("{e}: {line}"))?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before the value: {line}"))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or(""))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp: {line}"))?;
        }
        let family = current
            .clone()
            .ok_or_else(|| format!("sample before any family: {line}"))?;
        let ok = match types.get(&family).map(String::as_str) {
            Some("histogram") => {
                (name == format!("{family}_bucket") && labels.contains_key("le"))
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            Some(_) => name == family,
            None => false,
        };
        if !ok || !helped.contains(&family) {
            return Err(format!("sample of an undeclared family: {line}"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per label set without `le`, cumulative buckets ending in +Inf = _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut key = s.labels.clone();
            let le = parse_value(&key.remove("le").unwrap())?;
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in series {
            for pair in buckets.windows(2) {
                if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                    return Err(format!("{family}{key:?}: buckets not cumulative"));
                }
            }
            let last = buckets.last().unwrap();
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{key:?}: no +Inf bucket"));
            }
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == key)
                .ok_or_else(|| format!("{family}{key:?}: no _count"))?;
            if count.value != last.1 {
                return Err(format!("{family}{key:?}: _count != +Inf bucket"));
            }
        }
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_count_every_request_exactly_across_workers() {
    let origin = Origin::ok();
    let dead = PortHold::new();
    let routes = routes_json(
        &[("ba", &[origin.addr]), ("bb", &[dead.addr()])],
        &[
            ("a", "ba", "PathPrefix(`/a`)"),
            ("b", "bb", "PathPrefix(`/b`)"),
        ],
    );
    let (admin, extra) = with_admin("");
    let rw = Ringway::start_with_workers(&routes, &extra, 2);

    let (mut client_sent, mut client_received) = (0usize, 0usize);
    for (path, n, status) in [
        ("/a/x", 7, "200"),
        ("/nowhere", 3, "404"),
        ("/b/y", 2, "502"),
    ] {
        for _ in 0..n {
            let req = get_req(path);
            let resp = exchange(rw.addr, &req);
            assert!(
                resp.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
                "{path}: {}",
                String::from_utf8_lossy(&resp)
            );
            client_sent += req.len();
            client_received += resp.len();
        }
    }
    // New series become visible at the workers' next 50 ms tick.
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(admin);
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let requests: Vec<_> = m
        .iter()
        .filter(|s| s.name == "ringway_requests_total")
        .collect();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let req = |fe: &str, class: &str| {
        value(
            &m,
            "ringway_requests_total",
            &[("frontend", fe), ("code_class", class)],
        )
    };
    assert_eq!(req("a", "2xx"), Some(7.0));
    assert_eq!(req("", "4xx"), Some(3.0));
    assert_eq!(req("b", "5xx"), Some(2.0));
    for (fe, n) in [("a", 7.0), ("", 3.0), ("b", 2.0)] {
        let count = value(
            &m,
            "ringway_request_duration_seconds_count",
            &[("frontend", fe)],
        );
        assert_eq!(count, Some(n), "frontend {fe:?}");
    }
    assert_eq!(sum(&m, "ringway_received_bytes_total"), client_sent as f64);
    assert_eq!(sum(&m, "ringway_sent_bytes_total"), client_received as f64);
    assert_eq!(sum(&m, "ringway_upstream_connect_errors_total"), 2.0);
    assert_eq!(sum(&m, "ringway_upstream_retries_total"), 0.0);
    assert_eq!(sum(&m, "ringway_upstream_timeouts_total"), 0.0);
    assert_eq!(sum(&m, "ringway_upstream_requests_total"), 7.0);
    assert!(value(&m, "ringway_upstream_requests_total", &[("reused", "true")]).unwrap() >= 5.0);
    assert!(sum(&m, "ringway_connections_total") >= 12.0);
    assert_eq!(sum(&m, "ringway_connections_active"), 0.0);
    assert_eq!(
        m.iter()
            .filter(|s| s.name == "ringway_connections_total")
            .count(),
        2,
        "one series per worker"
    );
    assert_eq!(value(&m, "ringway_route_table_loaded", &[]), Some(1.0));
    assert_eq!(value(&m, "ringway_route_table_frontends", &[]), Some(2.0));
    let drivers: Vec<_> = m
        .iter()
        .filter(|s| s.name == "ringway_worker_io_driver")
        .collect();
    assert_eq!(drivers.len(), 2);
    for d in drivers {
        assert!(["io_uring", "epoll"].contains(&d.labels["driver"].as_str()));
        assert_eq!(d.value, 1.0);
    }
    assert!(text.contains("# TYPE ringway_throttle_rejections_total counter\n"));
    assert!(
        !m.iter().any(|s| s.name.starts_with("ringway_etcd")),
        "a file source has no etcd samples"
    );

    // The same text through a real Prometheus text-format parser.
    let scraped = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse accepts the text");
    assert_eq!(scraped.docs.len(), 25, "{:?}", scraped.docs.keys());
    let a_2xx = scraped.samples.iter().find(|s| {
        s.metric == "ringway_requests_total"
            && s.labels.get("frontend") == Some("a")
            && s.labels.get("code_class") == Some("2xx")
    });
    assert_eq!(
        a_2xx.map(|s| &s.value),
        Some(&prometheus_parse::Value::Counter(7.0))
    );
    let hist = scraped
        .samples
        .iter()
        .find(|s| {
            s.metric == "ringway_request_duration_seconds" && s.labels.get("frontend") == Some("b")
        })
        .expect("histogram of frontend b");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.len(), 15);
            assert_eq!(buckets.last().unwrap().less_than, f64::INFINITY);
            assert_eq!(buckets.last().unwrap().count, 2.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

#[test]
fn routes_endpoint_follows_a_route_file_change() {
    let origin = Origin::ok();
    let (admin, extra) = with_admin("");
    let rw = Ringway::start(
        &routes_json(&[("b1", &[origin.addr])], &[("one", "b1", "Path(`/one`)")]),
        &extra,
    );
    let routes = |admin| -> serde_json::Value {
        let r = get(admin, "/routes");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_slice(&r.body).expect("JSON")
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = routes(admin);
    assert_eq!(ids(&before), ["one"]);
    let settings = &before["frontends"][0]["settings"];
    assert_eq!(settings["failover_default"], true, "{settings}");
    assert_eq!(
        settings["failover_predicate"],
        "IsNetworkError() && RequestMethod() == \"GET\" && Attempts() < 20"
    );
    assert_eq!(before["unsupported"], serde_json::json!([]));
    assert_eq!(
        before["backends"][0]["servers"][0]["addr"],
        origin.addr.to_string()
    );

    rw.set_routes(&routes_json(
        &[("b1", &[origin.addr])],
        &[
            ("one", "b1", "Path(`/one`)"),
            ("two", "b1", "PathPrefix(`/two`)"),
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = routes(admin);
        if ids(&now).len() == 2 {
            assert!(ids(&now).contains(&"two".to_string()));
            break;
        }
        assert!(Instant::now() < deadline, "/routes still {now}");
        std::thread::sleep(Duration::from_millis(25));
    }
    let text = scrape(admin);
    assert!(
        text.contains("\nringway_route_table_frontends 2\n"),
        "{text}"
    );
}

#[test]
fn health_readiness_and_unknown_requests() {
    let origin = Origin::ok();
    let (admin, extra) = with_admin("");
    let _rw = Ringway::start(
        &routes_json(&[("b1", &[origin.addr])], &[("one", "b1", "Path(`/one`)")]),
        &extra,
    );
    let h = get(admin, "/healthz");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let r = get(admin, "/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(admin, "/nope").status, 404);
    let post = exchange(
        admin,
        "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with(b"HTTP/1.1 405 "), "{post:?}");
}

#[test]
fn a_busy_admin_address_is_a_start_up_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("admin-busy");
    dir.write("routes.json", "{}");
    let mesh = PortHold::new();
    let profile = dir.write(
        "p.toml",
        &format!(
            "[[listener]]\nname = \"mesh\"\naddr = \"{}\"\n[routes]\nsource = \"file\"\nfile = \"routes.json\"\n[admin]\naddr = \"{addr}\"\n",
            mesh.addr()
        ),
    );
    let out = ringway(&["run", "--profile", profile.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin") && err.contains(&addr.to_string()),
        "{err}"
    );
}

#[test]
fn access_log_writes_one_json_line_per_request() {
    let origin = Origin::echo();
    let routes = routes_json(
        &[("b1", &[origin.addr])],
        &[("a", "b1", "PathPrefix(`/a`)")],
    );
    let rw = Ringway::start_with_workers(&routes, "[log]\naccess_log = \"access.jsonl\"\n", 2);

    // (request bytes, response bytes) in the order sent.
    let mut sent: Vec<(String, usize)> = Vec::new();
    for req in [
        get_req("/a/1"),
        get_req("/a/2?x=%22y%22"),
        "GET /a/3 HTTP/1.1\r\nHost: t\r\nX-Request-Id: client-id-1\r\nConnection: close\r\n\r\n"
            .to_string(),
        get_req("/nowhere"),
        "POST /a/4 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_string(),
        get_req("/nowhere/else"),
    ] {
        let resp = exchange(rw.addr, &req);
        sent.push((req, resp.len()));
    }
    // Two pipelined requests on one connection: each line counts its own bytes.
    let first = "GET /a/p1 HTTP/1.1\r\nHost: t\r\n\r\n";
    let second = "GET /a/p2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    exchange(rw.addr, &format!("{first}{second}"));
    std::thread::sleep(Duration::from_millis(300));

    let text = std::fs::read_to_string(rw.dir.path().join("access.jsonl")).expect("access log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(text.ends_with('\n'));
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}:\n{text}"))
    };
    for (req, resp_len) in &sent {
        let path = req.split(' ').nth(1).unwrap();
        let l = by_path(path);
        assert_eq!(l["method"], req.split(' ').next().unwrap());
        assert_eq!(l["bytes_in"], req.len() as u64, "{l}");
        assert_eq!(l["bytes_out"], *resp_len as u64, "{l}");
        let time = l["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
        assert!(l["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        if path.starts_with("/a") {
            assert_eq!(l["status"], 200);
            assert_eq!(l["frontend"], "a");
            assert_eq!(l["upstream"], origin.addr.to_string());
            assert!(l["upstream_ms"].as_f64().is_some());
        } else {
            assert_eq!(l["status"], 404);
            assert!(l["frontend"].is_null() && l["upstream"].is_null());
            assert!(l["request_id"].is_null());
        }
    }
    assert_eq!(by_path("/a/3")["request_id"], "client-id-1");
    let seen = origin.seen();
    let generated = seen
        .iter()
        .find(|s| s.target == "/a/1")
        .and_then(|s| s.header("x-request-id"))
        .expect("the origin saw an id");
    assert_eq!(by_path("/a/1")["request_id"], generated);
    assert_eq!(by_path("/a/p1")["bytes_in"], first.len() as u64);
    assert_eq!(by_path("/a/p2")["bytes_in"], second.len() as u64);
}

#[test]
fn throttle_rejections_are_counted_by_middleware() {
    let origin = Origin::ok();
    let mut routes: serde_json::Value = serde_json::from_str(&routes_json(
        &[("b", &[origin.addr])],
        &[("f", "b", "PathPrefix(`/`)")],
    ))
    .unwrap();
    routes["/vulcand/frontends/f/middlewares/rl"] = serde_json::json!({
        "Id": "rl", "Priority": 1, "Type": "ratelimit",
        "Middleware": {"Requests": 1, "PeriodSeconds": 3600, "Burst": 2, "Variable": "client.ip"}
    });
    let (admin, extra) = with_admin("");
    let rw = Ringway::start(&routes.to_string(), &extra);
    let statuses: Vec<u16> = (0..5).map(|_| get(rw.addr, "/x").status).collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let m = parse_exposition(&scrape(admin)).expect("valid exposition");
        let got = value(
            &m,
            "ringway_throttle_rejections_total",
            &[("middleware", "rl")],
        );
        if got == Some(3.0) {
            break;
        }
        assert!(Instant::now() < deadline, "rejections of rl: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_grafana_dashboard_queries_only_families_a_node_exports() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/ringway.json"),
    )
    .expect("deploy/grafana/ringway.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("an expr").to_string());
        }
    }
    assert!(exprs.len() >= 9);
    let origin = Origin::ok();
    let (admin, extra) = with_admin("");
    let rw = Ringway::start(
        &routes_json(&[("b1", &[origin.addr])], &[("one", "b1", "Path(`/one`)")]),
        &extra,
    );
    assert_eq!(get(rw.addr, "/one").status, 200);
    std::thread::sleep(Duration::from_millis(120));
    let scrape = scrape(admin);
    let families: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("ringway_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = name.trim_end_matches("_bucket");
            assert!(
                families.contains(family),
                "{family} (in {e}) is not exported: {families:?}"
            );
            rest = &rest[i + name.len()..];
        }
    }
}

#[test]
fn a_deferring_listener_takes_a_connection_once_it_speaks() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("a", "b", "PathPrefix(`/`)")]);
    let (admin, extra) = with_admin("");
    // The mesh listener defers accepts (the default); the edge listener is told not to.
    let rw = Ringway::start_edge(
        &routes,
        "defer_accept = false\n\n[[listener.expose]]\nprefix = \"/\"\n",
        &extra,
    );
    let open = || {
        let text = scrape(admin);
        let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        sum(&m, "ringway_connections_active")
    };
    let open_becomes = |want: f64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while open() != want {
            assert!(
                Instant::now() < deadline,
                "open connections never became {want}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Without deferral a silent client is a worker's connection at once.
    let _silent = TcpStream::connect(rw.edge()).unwrap();
    open_becomes(1.0);
    // With it, a silent client is not handed over before its first bytes (or before the
    // handshake's first retransmission, a second later: attempts that took that long on a
    // busy machine are repeated).
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = open();
        let start = Instant::now();
        let mut client = TcpStream::connect(rw.addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let seen = open();
        if start.elapsed() >= Duration::from_millis(800) {
            assert!(attempts < 5, "every attempt took over 800 ms");
            drop(client);
            // Its close hands it over and ends it: let that pass before the next attempt.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        assert!(
            seen <= before,
            "a silent connection was taken before it sent anything ({before} -> {seen})"
        );
        // Once it speaks it is served like any other.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(get_req("/x").as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out);
        assert!(
            out.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
        break;
    }
}
