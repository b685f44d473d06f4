//! Large Content-Length bodies, which ringway splices socket -> pipe -> socket: they arrive
//! byte-exact in both directions, never swallow what follows them, end cleanly when a peer
//! fails or stalls mid-body, and are logged with their real sizes; on io_uring, on epoll, and
//! with splicing turned off (the buffer path) for comparison.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{find, routes_json, Client, Ringway};
use crate::origin::{body_byte, Fnv, Origin};

/// Large enough for many pipe-fulls, and not a multiple of any buffer or pipe size.
const BIG: u64 = 5 * 1024 * 1024 + 12_345;

/// Profile fragments every test runs under: the driver, or splicing off.
const SETUPS: [(&str, &str); 3] = [
    ("io_uring", "[node]\nio_driver = \"auto\"\n"),
    ("epoll", "[node]\nio_driver = \"epoll\"\n"),
    ("buffered", "[limits]\nsplice_min_bytes = 0\n"),
];

/// Start ringway under `setup` (plus `extra` profile TOML) with `/up` going to `up` and every
/// other path to `down`.
fn start(setup: (&str, &str), up: SocketAddr, down: SocketAddr, extra: &str) -> Ringway {
    let routes = routes_json(
        &[("up", &[up]), ("down", &[down])],
        &[
            ("up", "up", "PathPrefix(`/up`)"),
            ("down", "down", "PathPrefix(`/`)"),
        ],
    );
    let rw = Ringway::start(&routes, &format!("{}{extra}", setup.1));
    if setup.0 == "epoll" {
        assert!(rw.log().contains("driver=epoll"), "{}", rw.log());
    }
    rw
}

/// `len` body bytes from position `from` on.
fn body(from: u64, len: u64) -> Vec<u8> {
    (from..from + len).map(body_byte).collect()
}

fn fingerprint(len: u64) -> String {
    let mut sum = Fnv::new();
    sum.update(&body(0, len));
    format!("{:016x} {len}", sum.0)
}

/// Write an upload of `BIG` bytes: the head with the first bytes of the body in one write (as
/// clients do), then the rest, then `after` (a pipelined request, or nothing).
fn upload(mut to: impl Write, path: &str, after: &[u8]) -> usize {
    let head = format!("PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n");
    let mut first = head.clone().into_bytes();
    first.extend_from_slice(&body(0, 1000));
    to.write_all(&first).expect("write the head");
    let mut at = 1000;
    while at < BIG {
        let n = 100_000.min(BIG - at);
        to.write_all(&body(at, n))
            .expect("ringway keeps reading the body");
        at += n;
    }
    to.write_all(after).expect("write the pipelined request");
    head.len() + BIG as usize
}

/// Read one response raw: its head as text, its Content-Length body, and its size in bytes.
fn read_raw(c: &mut Client) -> (String, Vec<u8>, usize) {
    let head = c.read_until(b"\r\n\r\n").expect("a response head");
    let text = String::from_utf8_lossy(&head).into_owned();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a Content-Length: {text}"));
    let body = c.read_bytes(len).expect("the whole body");
    (text, body, head.len() + len)
}

fn log_line(rw: &Ringway, path: &str) -> serde_json::Value {
    let file = rw.dir.path().join("access.jsonl");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["path"] == path);
        if let Some(l) = line {
            return l;
        }
        assert!(Instant::now() < deadline, "no log line for {path}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn large_bodies_arrive_byte_exact_both_ways_and_are_logged_with_their_sizes() {
    let up = Origin::counting();
    let down = Origin::streaming(BIG);
    for setup in SETUPS {
        let log = "[log]\naccess_log = \"access.jsonl\"\n";
        let rw = start(setup, up.addr, down.addr, log);
        let mut c = Client::connect(rw.addr);
        let sent = upload(&mut c.stream, "/up/big", b"");
        let (head, got, up_out) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);
        assert_eq!(
            String::from_utf8_lossy(&got),
            fingerprint(BIG),
            "{}",
            setup.0
        );

        let get = "GET /down/big HTTP/1.1\r\nHost: t\r\n\r\n";
        c.send(get.as_bytes());
        let (head, got, down_out) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);
        assert_eq!(got.len() as u64, BIG, "{}", setup.0);
        let first_wrong = got.iter().zip(body(0, BIG)).position(|(a, b)| *a != b);
        assert_eq!(first_wrong, None, "{}: download differs", setup.0);

        // The connection carries on after both.
        c.send(b"GET /down/small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (head, ..) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);

        let l = log_line(&rw, "/up/big");
        assert_eq!(l["bytes_in"], sent as u64, "{}: {l}", setup.0);
        assert_eq!(l["bytes_out"], up_out as u64, "{}: {l}", setup.0);
        let l = log_line(&rw, "/down/big");
        assert_eq!(l["bytes_in"], get.len() as u64, "{}: {l}", setup.0);
        assert_eq!(l["bytes_out"], down_out as u64, "{}: {l}", setup.0);
    }
}

#[test]
fn a_request_pipelined_behind_a_large_upload_is_answered() {
    let up = Origin::counting();
    let down = Origin::ok();
    for setup in SETUPS {
        let rw = start(setup, up.addr, down.addr, "");
        let mut c = Client::connect(rw.addr);
        let writer = c.stream.try_clone().expect("clone the client socket");
        let after = b"PUT /up/after HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let sending = std::thread::spawn(move || upload(writer, "/up/first", after));
        let (_, first, _) = read_raw(&mut c);
        assert_eq!(
            String::from_utf8_lossy(&first),
            fingerprint(BIG),
            "{}",
            setup.0
        );
        let (_, second, _) = read_raw(&mut c);
        let mut abc = Fnv::new();
        abc.update(b"abc");
        assert_eq!(
            String::from_utf8_lossy(&second),
            format!("{:016x} 3", abc.0),
            "{}: the pipelined request arrived whole and alone",
            setup.0
        );
        sending.join().expect("the upload was written");
    }
    let seen: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(seen, ["/up/first", "/up/after"].repeat(SETUPS.len()));
}

#[test]
fn an_upstream_cut_mid_body_closes_the_client_and_its_connection_is_not_reused() {
    const CUT: u64 = 300_000;
    for setup in SETUPS {
        let down = Origin::streaming_cut(BIG, Some(CUT));
        let rw = start(setup, down.addr, down.addr, "");
        let mut c = Client::connect(rw.addr);
        c.send(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\n");
        let started = Instant::now();
        let mut got = Vec::new();
        c.stream
            .read_to_end(&mut got)
            .expect("the connection closes");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: the client connection was closed, not left hanging",
            setup.0
        );
        let got = got.split_off(find(&got, b"\r\n\r\n").expect("a head") + 4);
        assert_eq!(got.len() as u64, CUT, "{}", setup.0);
        assert_eq!(got, body(0, CUT), "{}", setup.0);

        // The next request gets a new upstream connection and the whole body.
        let mut c = Client::connect(rw.addr);
        c.send(b"GET /again HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (head, got, _) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);
        assert_eq!(got.len() as u64, BIG, "{}", setup.0);
        assert_eq!(down.connections(), 2, "{}", setup.0);
    }
}

#[test]
fn a_client_stalling_mid_upload_gets_408_after_body_ms() {
    let up = Origin::counting();
    for setup in SETUPS {
        let rw = start(setup, up.addr, up.addr, "[timeouts]\nbody_ms = 300\n");
        let before = up.connections();
        let mut c = Client::connect(rw.addr);
        let mut part =
            format!("PUT /up/stall HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n")
                .into_bytes();
        part.extend_from_slice(&body(0, 200_000));
        c.send(&part);
        let started = Instant::now();
        let r = c
            .read_response(false)
            .expect("an answer to the stalled upload");
        assert_eq!(r.status, 408, "{}: {}", setup.0, r.text());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{}: answered after {:?}",
            setup.0,
            started.elapsed()
        );
        assert!(c.is_closed(Duration::from_secs(3)), "{}", setup.0);

        // The upstream connection holding half a body is never used again.
        let mut c = Client::connect(rw.addr);
        c.send(
            b"PUT /up/next HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let (head, ..) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);
        assert_eq!(up.connections(), before + 2, "{}", setup.0);
    }
}

#[test]
fn a_client_leaving_mid_download_leaves_ringway_serving() {
    let down = Origin::streaming(BIG);
    for setup in SETUPS {
        let rw = start(setup, down.addr, down.addr, "");
        let mut c = Client::connect(rw.addr);
        c.send(b"GET /leave HTTP/1.1\r\nHost: t\r\n\r\n");
        c.read_bytes(100_000).expect("the start of the download");
        // Closing with unread bytes resets the connection: ringway's next splice fails.
        drop(c);
        let mut c = Client::connect(rw.addr);
        c.send(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (head, got, _) = read_raw(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", setup.0);
        assert_eq!(got.len() as u64, BIG, "{}", setup.0);
    }
}
