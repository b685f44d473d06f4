//! vulcand's `FailoverPredicate` against the real binary and origins with scripted behaviour:
//! which attempts are made, on which servers, with which body, and the retry budget.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::{scrape, with_admin};
use crate::harness::{find, Client, Response, Ringway};
use crate::origin::{Origin, Reply, Seen};

/// What Mailgun's scroll registers every frontend with.
const SCROLL: &str = "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2";

/// Routes: backend `b` with `servers` (in this order, ids s0, s1, ...) behind one catch-all
/// frontend with `predicate` (none when empty) and `PassHostHeader`.
fn routes(servers: &[SocketAddr], predicate: &str) -> String {
    let mut map = crate::harness::backend_entries("b", servers);
    let mut settings = serde_json::json!({"PassHostHeader": true});
    if !predicate.is_empty() {
        settings["FailoverPredicate"] = predicate.into();
    }
    map.insert(
        "/vulcand/frontends/f/frontend".into(),
        serde_json::json!({"Type": "http", "BackendId": "b", "Route": "PathPrefix(`/`)", "Settings": settings}),
    );
    serde_json::Value::Object(map).to_string()
}

/// An instance that is shutting down: 503 to everything.
fn draining() -> Origin {
    Origin::start(|_| Reply::status(503, "draining"))
}

/// A healthy instance: 200 with "<method> <body length> <FNV of the body>".
fn healthy() -> Origin {
    Origin::start(|s| {
        Reply::ok(&format!(
            "{} {} {:016x}",
            s.method,
            s.body.len(),
            fnv(&s.body)
        ))
    })
}

/// Reads the whole request, body included, then resets without answering.
fn resetting() -> Origin {
    Origin::start(|_| Reply::Close)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = crate::origin::Fnv::new();
    h.update(bytes);
    h.0
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len as u64).map(crate::origin::body_byte).collect()
}

/// A POST of `body`; when `streamed`, the body follows the head after a pause, so it is not
/// in the read that brought the head.
fn post(addr: SocketAddr, body: &[u8], streamed: bool) -> Response {
    let mut c = Client::connect(addr);
    let head = format!(
        "POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if streamed {
        c.send(head.as_bytes());
        std::thread::sleep(Duration::from_millis(30));
        c.send(body);
    } else {
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        c.send(&raw);
    }
    c.read_response(false).expect("a response")
}

fn get(addr: SocketAddr) -> Response {
    crate::harness::get(addr, "/x")
}

fn hits(origins: &[&Origin]) -> usize {
    origins.iter().map(|o| o.seen().len()).sum()
}

#[test]
fn scrolls_predicate_hides_a_draining_instance_from_gets_and_posts() {
    let (sick, well) = (draining(), healthy());
    // Round-robin without ejection: the draining one keeps getting every other request.
    let rr = "[upstream]\nbalancer = \"round_robin\"\nconsecutive_failures = 0\n";
    let rw = Ringway::start(&routes(&[sick.addr, well.addr], SCROLL), rr);
    for i in 0..6 {
        let r = get(rw.addr);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "GET 0 cbf29ce484222325"),
            "GET {i}"
        );
        let small = body_of(300 + i);
        let r = post(rw.addr, &small, false);
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        assert_eq!(
            r.text(),
            format!("POST {} {:016x}", small.len(), fnv(&small))
        );
        // Streamed: the body is kept while it goes to the first server, then replayed.
        let big = body_of(200_000 + i);
        let r = post(rw.addr, &big, true);
        assert_eq!(r.text(), format!("POST {} {:016x}", big.len(), fnv(&big)));
    }
    assert!(
        !sick.seen().is_empty(),
        "round-robin reached the draining one"
    );
    for s in well.seen().iter().filter(|s| s.method == "POST") {
        assert!(
            s.body == body_of(s.body.len()),
            "a replayed body arrived intact"
        );
    }

    // The same instances with vulcand's default predicate: the 503s reach the clients.
    let (sick, well) = (draining(), healthy());
    let rw = Ringway::start(&routes(&[sick.addr, well.addr], ""), rr);
    let statuses: Vec<u16> = (0..4).map(|_| get(rw.addr).status).collect();
    assert!(statuses.contains(&503), "{statuses:?}");
}

#[test]
fn attempts_at_most_two_means_exactly_three_tries_on_three_servers() {
    let servers: Vec<Origin> = (0..5).map(|_| draining()).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|o| o.addr).collect();
    let refs: Vec<&Origin> = servers.iter().collect();
    let predicate = "ResponseCode() == 503 && Attempts() <= 2";
    // max_retries allows more: the predicate is what stops at three.
    let rw = Ringway::start(&routes(&addrs, predicate), "[upstream]\nmax_retries = 6\n");
    for round in 1..=4 {
        let r = get(rw.addr);
        // The last attempt's response goes to the client unchanged.
        assert_eq!((r.status, r.text().as_str()), (503, "draining"));
        assert_eq!(hits(&refs), 3 * round, "round {round}");
        let per_server: Vec<usize> = servers.iter().map(|o| o.seen().len()).collect();
        assert!(
            per_server.iter().all(|&n| n <= round),
            "a request never tried a server twice: {per_server:?}"
        );
    }
    // Every request carried one id to each of its three servers.
    let ids: Vec<String> = servers
        .iter()
        .flat_map(|o| o.seen())
        .filter_map(|s| s.header("x-request-id").map(str::to_string))
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((ids.len(), distinct.len()), (12, 4));
}

#[test]
fn a_post_without_a_predicate_is_never_sent_twice() {
    let (a, b) = (resetting(), resetting());
    let rw = Ringway::start(&routes(&[a.addr, b.addr], ""), "");
    for streamed in [false, true] {
        let before = hits(&[&a, &b]);
        let r = post(rw.addr, &body_of(5_000), streamed);
        assert_eq!(r.status, 502, "{}", r.text());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(hits(&[&a, &b]) - before, 1, "streamed: {streamed}");
    }
    // A GET is retried by vulcand's default, even on a 502 the upstream answered itself.
    let bad_gateway = Origin::start(|_| Reply::status(502, "upstream of the upstream is down"));
    let well = healthy();
    // Round-robin without ejection: every other request meets the 502 first.
    let rw = Ringway::start(
        &routes(&[bad_gateway.addr, well.addr], ""),
        "[upstream]\nbalancer = \"round_robin\"\nconsecutive_failures = 0\n",
    );
    for _ in 0..4 {
        assert_eq!(get(rw.addr).status, 200);
    }
    assert!(!bad_gateway.seen().is_empty());
    // ...but not a POST.
    let statuses: Vec<u16> = (0..4)
        .map(|_| post(rw.addr, b"x=1", false).status)
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    let posts = bad_gateway
        .seen()
        .iter()
        .filter(|s| s.method == "POST")
        .count()
        + well.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 4, "each POST sent once");
}

#[test]
fn a_post_reset_after_its_body_is_replayed_under_scroll_but_not_past_retry_body_bytes() {
    let (reset, well) = (resetting(), healthy());
    // The resetting server stays in rotation (ejection off), so with round-robin every
    // request meets it first: each one that fails there moves the cursor past the healthy one.
    let rw = Ringway::start(
        &routes(&[reset.addr, well.addr], SCROLL),
        "[upstream]\nretry_body_bytes = 4096\nconsecutive_failures = 0\nbalancer = \"round_robin\"\n",
    );
    // Every POST ends at the healthy server with its body intact.
    for len in [100, 4_000] {
        for _ in 0..2 {
            let body = body_of(len);
            let r = post(rw.addr, &body, true);
            assert_eq!(r.status, 200, "{len}: {}", r.text());
            assert_eq!(r.text(), format!("POST {len} {:016x}", fnv(&body)));
        }
    }
    assert_eq!(reset.seen().len(), 4, "{}", rw.log());
    // Larger than retry_body_bytes and streamed: not kept, so not sent again. The failed
    // one moves the cursor by one, so the next one starts at the healthy server.
    let r = post(rw.addr, &body_of(10_000), true);
    assert_eq!(r.status, 502, "{}", rw.log());
    assert_eq!(
        (reset.seen().len(), well.seen().len()),
        (5, 4),
        "never replayed"
    );
    let r = post(rw.addr, &body_of(10_000), true);
    assert_eq!(r.status, 200);
    assert_eq!((reset.seen().len(), well.seen().len()), (5, 5));
}

#[test]
fn a_chunked_body_is_replayed_byte_for_byte() {
    let (reset, well) = (resetting(), healthy());
    let rw = Ringway::start(
        &routes(&[reset.addr, well.addr], SCROLL),
        "[upstream]\nbalancer = \"round_robin\"\n",
    );
    let chunked: &[u8] = b"5;ext=\"a b\"\r\nhello\r\n0006\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    for _ in 0..2 {
        let mut c = Client::connect(rw.addr);
        c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        std::thread::sleep(Duration::from_millis(30));
        c.send(&chunked[..9]);
        std::thread::sleep(Duration::from_millis(30));
        c.send(&chunked[9..]);
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let tried: Vec<Seen> = reset.seen().into_iter().chain(well.seen()).collect();
    assert!(tried.len() >= 3, "the reset one was tried first once");
    for s in &tried {
        let at = find(&s.raw, b"\r\n\r\n").expect("a head") + 4;
        assert_eq!(&s.raw[at..], chunked, "{}", String::from_utf8_lossy(&s.raw));
    }
}

#[test]
fn a_timeout_is_a_network_error_for_the_predicate() {
    let slow = Origin::start(|_| Reply::After(Duration::from_secs(2), Box::new(Reply::ok("late"))));
    let well = healthy();
    let profile = "[timeouts]\nupstream_read_ms = 300\n[upstream]\nbalancer = \"round_robin\"\n";
    let rw = Ringway::start(&routes(&[slow.addr, well.addr], SCROLL), profile);
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(post(rw.addr, b"a=1", false).status, 200);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    let rw = Ringway::start(&routes(&[slow.addr, well.addr], ""), profile);
    let statuses: Vec<u16> = (0..2)
        .map(|_| post(rw.addr, b"a=1", false).status)
        .collect();
    assert!(
        statuses.contains(&504),
        "without a predicate a timed-out POST is not resent"
    );
}

#[test]
fn the_retry_budget_holds_origin_hits_near_the_ratio_against_an_all_failing_backend() {
    let servers: Vec<Origin> = (0..3).map(|_| draining()).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|o| o.addr).collect();
    let refs: Vec<&Origin> = servers.iter().collect();
    let predicate = "ResponseCode() == 503 && Attempts() <= 2";
    let (admin, extra) =
        with_admin("[upstream]\nretry_budget_ratio = 0.2\nretry_budget_min_per_sec = 2\n");
    let rw = Ringway::start_with_workers(&routes(&addrs, predicate), &extra, 2);
    // Four clients for at most 3 s or 3000 requests, whichever comes first.
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let answered = answered.clone();
            let addr = rw.addr;
            s.spawn(move || {
                let mut c = Client::connect(addr);
                while Instant::now() < deadline && answered.load(Ordering::SeqCst) < 3000 {
                    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
                    let r = c.read_response(false).expect("a response");
                    assert_eq!(r.status, 503);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let requests = answered.load(Ordering::SeqCst);
    let hits = hits(&refs);
    // At most 20% more, plus the 2/s minimum over the 10 s window, plus one per worker for
    // the race between two workers taking the last retry.
    let cap = (requests as f64 * 1.2) as usize + 20 + 2;
    assert!(
        hits <= cap,
        "{hits} origin hits for {requests} requests (cap {cap})"
    );
    assert!(
        hits > requests,
        "some retries happened: {hits} for {requests}"
    );
    let m = scrape(admin);
    let exhausted = m
        .lines()
        .find_map(|l| l.strip_prefix("ringway_retry_budget_exhausted_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the budget counter");
    assert!(exhausted > 0.0, "{m}");
    let status_retries = m
        .lines()
        .find_map(|l| l.strip_prefix("ringway_upstream_retries_total{reason=\"status\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the retries counter");
    assert_eq!(status_retries as usize, hits - requests, "{m}");
}

#[test]
fn a_body_whose_last_write_failed_is_replayed_and_a_pipelined_request_kept() {
    // The first server reads the head and resets, so writing the body to it fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let resetter = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut s, &mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    });
    let well = healthy();
    let rw = Ringway::start(
        &routes(&[resetter, well.addr], SCROLL),
        "[upstream]\nbalancer = \"round_robin\"\n",
    );
    let body = body_of(1_000);
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    std::thread::sleep(Duration::from_millis(150));
    let mut rest = body.clone();
    rest.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&rest);
    let r = c.read_response(false).expect("an answer to the POST");
    assert_eq!(r.status, 200, "{}", rw.log());
    assert_eq!(r.text(), format!("POST 1000 {:016x}", fnv(&body)));
    let next = c
        .read_response(false)
        .expect("an answer to the pipelined GET");
    assert_eq!(next.status, 200);
}
