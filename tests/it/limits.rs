//! What a client may send and how long it may take: oversized targets, heads and bodies, and
//! clients that stall, each answered with its status and a closed connection.

use std::time::{Duration, Instant};

use crate::harness::{catch_all, get, request, Client, Ringway, DRIVERS};
use crate::origin::{Origin, Reply};

fn limited(origin: &Origin, profile: &str) -> Ringway {
    Ringway::start(&catch_all(&[origin.addr]), profile)
}

#[test]
fn target_over_max_target_bytes_is_414() {
    let origin = Origin::ok();
    let rw = limited(&origin, "[limits]\nmax_target_bytes = 100\n");
    let long = format!("/{}", "a".repeat(150));
    let r = get(rw.addr, &long);
    assert_eq!(r.status, 414, "{}", r.text());
    assert_eq!(origin.connections(), 0);
    let short = format!("/{}", "a".repeat(90));
    assert_eq!(get(rw.addr, &short).status, 200);
}

#[test]
fn an_8000_byte_target_is_served_with_default_limits() {
    let origin = Origin::echo();
    let rw = limited(&origin, "");
    let target = format!("/search?q={}", "x".repeat(8000 - "/search?q=".len()));
    assert_eq!(target.len(), 8000);
    let r = get(rw.addr, &target);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.seen()[0].target, target);
}

#[test]
fn too_many_header_fields_is_431() {
    let origin = Origin::ok();
    let rw = limited(&origin, "[limits]\nmax_headers = 10\n");
    let mut head = String::from("GET /many HTTP/1.1\r\nHost: t\r\n");
    for i in 0..12 {
        head.push_str(&format!("X-Field-{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let r = request(rw.addr, head.as_bytes()).expect("response");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(origin.connections(), 0);

    let mut ok = String::from("GET /few HTTP/1.1\r\nHost: t\r\n");
    for i in 0..9 {
        ok.push_str(&format!("X-Field-{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    assert_eq!(
        request(rw.addr, ok.as_bytes()).expect("response").status,
        200
    );
}

#[test]
fn head_over_max_head_bytes_is_431() {
    let origin = Origin::ok();
    let rw = limited(
        &origin,
        "[limits]\nmax_head_bytes = 2048\nmax_target_bytes = 1024\n",
    );
    let head = format!(
        "GET /big HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n\r\n",
        "c".repeat(3000)
    );
    let r = request(rw.addr, head.as_bytes()).expect("response");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(origin.connections(), 0);
}

#[test]
fn client_stalling_mid_head_gets_408_and_is_closed() {
    let origin = Origin::ok();
    let rw = limited(&origin, "[timeouts]\nheader_ms = 300\n");
    let mut c = Client::connect(rw.addr);
    stall_mid_head_and_expect_408(&mut c);
    assert_eq!(origin.connections(), 0);
}

/// Send half a head and stop: a 408 comes within a second or so and the connection closes.
fn stall_mid_head_and_expect_408(c: &mut Client) {
    let started = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n");
    let r = c.read_response(false).expect("408 response");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(c.is_closed(Duration::from_secs(2)));
}

/// After one request, the idle connection is closed within `window` after its response.
fn assert_idle_close_within(profile: &str, window: std::ops::Range<Duration>) {
    let origin = Origin::ok();
    let rw = limited(&origin, profile);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("response").status, 200);
    let idle_since = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "idle connection kept open"
    );
    let idle = idle_since.elapsed();
    assert!(window.contains(&idle), "closed after {idle:?}");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_ms() {
    assert_idle_close_within(
        "[timeouts]\nkeepalive_ms = 300\n",
        Duration::from_millis(250)..Duration::from_millis(1500),
    );
}

#[test]
fn the_keep_alive_timeout_counts_from_the_last_response_through_the_cold_wait() {
    // The cold wait is ringway's own future over the event loop's readiness poll: both loops.
    for (_, node) in DRIVERS {
        assert_idle_close_within(
            &format!("{node}[timeouts]\nidle_hot_ms = 100\nkeepalive_ms = 600\n"),
            Duration::from_millis(550)..Duration::from_millis(1100),
        );
    }
}

#[test]
fn a_head_started_after_the_connection_went_cold_still_has_header_ms_to_arrive() {
    for (driver, node) in DRIVERS {
        let origin = Origin::ok();
        let rw = limited(
            &origin,
            &format!("{node}[timeouts]\nidle_hot_ms = 50\nheader_ms = 300\nkeepalive_ms = 10000\n"),
        );
        let mut c = Client::connect(rw.addr);
        // The second request wakes the connection from a cold wait and is served whole ...
        for path in ["/", "/again"] {
            c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            let status = c.read_response(false).expect("response").status;
            assert_eq!(status, 200, "{driver} {path}");
            std::thread::sleep(Duration::from_millis(250));
        }
        // ... and a head begun after the next cold spell still gets `header_ms`.
        stall_mid_head_and_expect_408(&mut c);
    }
}

#[test]
fn content_length_over_max_body_bytes_is_413_without_reaching_the_origin() {
    let origin = Origin::ok();
    let rw = limited(&origin, "[limits]\nmax_body_bytes = 1000\n");
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    let r = c.read_response(false).expect("413 before the body is sent");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(origin.connections(), 0);

    let r = request(
        rw.addr,
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{}",
            "b".repeat(1000)
        )
        .as_bytes(),
    )
    .expect("response");
    assert_eq!(r.status, 200, "a body of exactly the limit is fine");
}

#[test]
fn chunked_body_growing_over_max_body_bytes_is_413() {
    let origin = Origin::start(|s| Reply::ok(&s.body.len().to_string()));
    let rw = limited(&origin, "[limits]\nmax_body_bytes = 1000\n");
    let chunk = format!("258\r\n{}\r\n", "c".repeat(0x258));
    let mut c = Client::connect(rw.addr);
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}")
            .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send(format!("{chunk}{chunk}0\r\n\r\n").as_bytes());
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(c.is_closed(Duration::from_secs(2)));
    assert!(
        origin.seen().is_empty(),
        "origin got a whole over-limit body"
    );
}

#[test]
fn client_stalling_mid_body_gets_408_and_the_origin_no_complete_request() {
    let origin = Origin::ok();
    let rw = limited(&origin, "[timeouts]\nbody_ms = 300\n");
    let mut c = Client::connect(rw.addr);
    c.send(
        format!(
            "POST /half HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{}",
            "h".repeat(500)
        )
        .as_bytes(),
    );
    let started = Instant::now();
    let r = c.read_response(false).expect("408 response");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(c.is_closed(Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(100));
    assert!(origin.seen().is_empty(), "origin saw a complete request");
}

#[test]
fn a_30000_byte_header_is_forwarded_intact_with_default_limits() {
    let origin = Origin::ok();
    let rw = limited(&origin, "");
    let cookie: String = (0..30_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut c = Client::connect(rw.addr);
    for _ in 0..2 {
        c.send(format!("GET /big HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n\r\n").as_bytes());
        assert_eq!(c.read_response(false).expect("response").status, 200);
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.header("cookie") == Some(cookie.as_str())));
}
