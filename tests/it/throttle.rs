//! `ratelimit` and `connlimit` middlewares against the real binary with two workers: the rate
//! and the in-flight cap hold node-wide whichever core a connection lands on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{request, routes_json, Client, Ringway};
use crate::origin::{Origin, Reply};

/// Routes with one frontend `f` on `PathPrefix("/")` to `origin`, plus `middlewares`
/// (id, vulcand document) and extra frontends routed the same way.
fn routes(origin: SocketAddr, middlewares: &[(&str, serde_json::Value)], extra: &[&str]) -> String {
    let mut frontends = vec![("f", "b1", "PathPrefix(`/`)")];
    let paths: Vec<String> = extra.iter().map(|p| format!("Path(`/{p}`)")).collect();
    for (id, path) in extra.iter().zip(&paths) {
        frontends.push((id, "b1", path));
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&routes_json(&[("b1", &[origin])], &frontends)).unwrap();
    for (mid, doc) in middlewares {
        map.insert(
            format!("/vulcand/frontends/f/middlewares/{mid}"),
            doc.clone(),
        );
    }
    serde_json::Value::Object(map).to_string()
}

fn ratelimit(requests: u64, period: u64, burst: u64, variable: &str) -> serde_json::Value {
    json!({"Id": "rl", "Priority": 1, "Type": "ratelimit", "Middleware":
        {"Requests": requests, "PeriodSeconds": period, "Burst": burst, "Variable": variable}})
}

fn status(addr: SocketAddr, path: &str, tenant: Option<&str>) -> u16 {
    let tenant = tenant.map_or(String::new(), |t| format!("X-Tenant: {t}\r\n"));
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{tenant}Connection: close\r\n\r\n");
    request(addr, raw.as_bytes()).expect("a response").status
}

/// Wait until the node serves the routes file that added frontend path `/{marker}`.
fn wait_for_route(node: &Ringway, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(node.addr, &format!("/{marker}"), None) != 200 {
        assert!(Instant::now() < deadline, "routes never reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_key_hammered_over_many_connections_gets_the_node_wide_rate() {
    const RATE: u64 = 200;
    const BURST: u64 = 20;
    let origin = Origin::ok();
    let node = Ringway::start_with_workers(
        &routes(
            origin.addr,
            &[("rl", ratelimit(RATE, 1, BURST, "client.ip"))],
            &[],
        ),
        "",
        2,
    );
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let bad_headers = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(3);
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (ok, refused, bad) = (ok.clone(), refused.clone(), bad_headers.clone());
            let addr = node.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..100_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
                    let r = c.read_response(false).expect("a response");
                    match r.status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => {
                            let retry_after =
                                r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
                            let retry_in = r.header("x-retry-in").unwrap_or("");
                            if retry_after.is_none()
                                || !retry_in.ends_with('s')
                                || !r.text().contains("rate limit of frontend f")
                            {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("unexpected status {other}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed) as f64;
    let expected = RATE as f64 * elapsed + BURST as f64;
    assert!(
        (ok - expected).abs() <= expected * 0.10,
        "admitted {ok}, expected {expected:.0} ± 10% over {elapsed:.2}s"
    );
    assert!(
        refused.load(Ordering::Relaxed) > ok as usize,
        "the key was not hammered"
    );
    assert_eq!(
        bad_headers.load(Ordering::Relaxed),
        0,
        "429 without Retry-After/X-Retry-In"
    );
    assert_eq!(
        origin.seen().len(),
        ok as usize,
        "origin saw exactly the admitted requests"
    );
}

#[test]
fn header_keys_are_isolated_and_a_missing_header_shares_one_bucket() {
    let origin = Origin::ok();
    let mw = ratelimit(1, 3600, 2, "request.header.X-Tenant");
    let node = Ringway::start_with_workers(&routes(origin.addr, &[("rl", mw)], &[]), "", 2);
    // New connections each time: they land on either worker.
    for tenant in [Some("a"), Some("b"), None] {
        let got: Vec<u16> = (0..3).map(|_| status(node.addr, "/x", tenant)).collect();
        assert_eq!(got, [200, 200, 429], "tenant {tenant:?}");
    }
    assert_eq!(status(node.addr, "/x", Some("c")), 200);
}

#[test]
fn connlimit_caps_requests_in_flight_and_releases_slots_however_exchanges_end() {
    const N: usize = 3;
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    let origin = Origin::start(move |_| {
        let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(cur, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        n.fetch_sub(1, Ordering::SeqCst);
        Reply::ok("slow")
    });
    let mw =
        json!({"Type": "connlimit", "Middleware": {"Connections": N, "Variable": "client.ip"}});
    let node = Ringway::start_with_workers(&routes(origin.addr, &[("cl", mw)], &[]), "", 2);

    let barrier = Arc::new(Barrier::new(12));
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let (b, addr) = (barrier.clone(), node.addr);
            std::thread::spawn(move || {
                b.wait();
                let r = request(addr, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").expect("a response");
                if r.status == 429 {
                    assert_eq!(r.header("retry-after"), Some("1"));
                    assert!(
                        r.text().contains("connection limit of frontend f"),
                        "{}",
                        r.text()
                    );
                }
                r.status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert!((N..12).contains(&admitted), "{statuses:?}");
    assert!(
        peak.load(Ordering::SeqCst) <= N,
        "peak {} in flight",
        peak.load(Ordering::SeqCst)
    );

    // Clients that give up mid-exchange still release their slots.
    for _ in 0..N {
        let mut c = Client::connect(node.addr);
        c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(900));
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let (b, addr) = (barrier.clone(), node.addr);
            std::thread::spawn(move || {
                b.wait();
                request(addr, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").map(|r| r.status)
            })
        })
        .collect();
    let after: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(after, vec![Some(200); N], "slots were not released");
    assert!(peak.load(Ordering::SeqCst) <= N);
}

#[test]
fn failed_exchanges_release_connection_slots() {
    let dead = crate::harness::PortHold::new();
    let mw =
        json!({"Type": "connlimit", "Middleware": {"Connections": 1, "Variable": "client.ip"}});
    let node = Ringway::start_with_workers(&routes(dead.addr(), &[("cl", mw)], &[]), "", 2);
    for _ in 0..4 {
        assert_eq!(status(node.addr, "/x", None), 502);
        // A slot is released once the worker has finished writing the response, which can be
        // a moment after the client read it; a new connection may land on the other worker.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_route_refresh_keeps_bucket_state_and_changed_settings_apply_on_the_next_request() {
    let origin = Origin::ok();
    let mw = ratelimit(1, 3600, 2, "client.ip");
    let node = Ringway::start_with_workers(&routes(origin.addr, &[("rl", mw.clone())], &[]), "", 2);
    let got: Vec<u16> = (0..3).map(|_| status(node.addr, "/x", None)).collect();
    assert_eq!(got, [200, 200, 429]);

    // Same middleware, another frontend added: the spent burst is not given back.
    node.set_routes(&routes(origin.addr, &[("rl", mw)], &["v2"]));
    wait_for_route(&node, "v2");
    for _ in 0..4 {
        assert_eq!(status(node.addr, "/x", None), 429);
    }

    // Changed settings: a new bucket from the next request on.
    node.set_routes(&routes(
        origin.addr,
        &[("rl", ratelimit(1, 3600, 3, "client.ip"))],
        &["v3"],
    ));
    wait_for_route(&node, "v3");
    let got: Vec<u16> = (0..4).map(|_| status(node.addr, "/x", None)).collect();
    assert_eq!(got, [200, 200, 200, 429]);
}

#[test]
fn reject_status_503_from_the_profile_and_bad_middlewares_do_not_block_routing() {
    let origin = Origin::ok();
    let bad = json!({"Type": "ratelimit", "Middleware": {"Requests": 0, "PeriodSeconds": 1, "Variable": "client.ip"}});
    let node = Ringway::start_with_workers(
        &routes(
            origin.addr,
            &[("rl", ratelimit(1, 60, 1, "client.ip")), ("zz", bad)],
            &[],
        ),
        "[throttle]\nreject_status = 503\n",
        2,
    );
    assert_eq!(status(node.addr, "/x", None), 200);
    let r = request(
        node.addr,
        b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 503);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.header("x-retry-in").is_some());
    assert!(
        r.text()
            .contains("rate limit of frontend f exceeded (1 per 1m0s, burst 1)"),
        "{}",
        r.text()
    );
}
