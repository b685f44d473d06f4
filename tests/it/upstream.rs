//! The upstream side: round-robin across a backend's servers, retries and passive failure
//! marking, the statuses a client sees when no server can answer, timeouts, stale pooled
//! connections, and the bound on pooled connections.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{
    catch_all, get, routes_json, tcp_sockets, with_backend_settings, Client, PortHold, Ringway,
    Side, DRIVERS, TCP_CLOSE_WAIT,
};
use crate::origin::{Origin, Reply};

/// A loopback port with nothing listening (connecting is refused), reserved for the test.
fn dead_server() -> PortHold {
    PortHold::new()
}

/// A listener whose accept queue is full and never drained: connecting hangs until the
/// connecting side gives up. The returned sockets must stay alive for the test.
fn black_hole() -> (SocketAddr, Vec<TcpStream>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    s.listen(0).expect("listen");
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    while let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        fillers.push(c);
        assert!(fillers.len() < 16, "accept queue never filled up");
    }
    (addr, fillers, s)
}

#[test]
fn requests_are_spread_round_robin_over_the_servers() {
    let origins = [Origin::ok(), Origin::ok(), Origin::ok()];
    let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
    let rw = Ringway::start(
        &catch_all(&addrs),
        "[upstream]\nbalancer = \"round_robin\"\n",
    );
    let mut c = Client::connect(rw.addr);
    for _ in 0..30 {
        c.send(b"GET /rr HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read_response(false).expect("response").status, 200);
    }
    let shares: Vec<usize> = origins.iter().map(|o| o.seen().len()).collect();
    assert_eq!(shares, [10, 10, 10]);
}

#[test]
fn a_refusing_server_is_retried_on_another_and_then_ejected() {
    let live = Origin::ok();
    let dead = dead_server();
    let rw = Ringway::start(
        &catch_all(&[dead.addr(), live.addr]),
        "[upstream]\nbalancer = \"round_robin\"\n",
    );
    // Round-robin sends every other request to the refusing server first; each is retried
    // on the live one, and the fifth refusal in a row ejects it (the default).
    for _ in 0..10 {
        let r = get(rw.addr, "/retry");
        assert_eq!(r.status, 200, "{}", rw.log());
    }
    assert_eq!(live.seen().len(), 10);
    assert!(rw.log().contains("upstream ejected"), "{}", rw.log());

    // Ejected: even once it listens again, it gets nothing until its penalty (10 s) is over.
    let revived = Origin::start_on(dead.release(), |_| Reply::ok("revived"));
    for _ in 0..6 {
        assert_eq!(get(rw.addr, "/retry").text(), "ok");
    }
    assert_eq!(revived.seen().len(), 0, "an ejected server got traffic");
    assert_eq!(live.seen().len(), 16);
}

#[test]
fn an_ejected_server_is_probed_after_its_penalty_and_returns() {
    // nginx's spelling: one failure ejects for 300 ms.
    let live = Origin::ok();
    let dead = dead_server();
    let rw = Ringway::start(
        &catch_all(&[dead.addr(), live.addr]),
        "[upstream]\nmax_fails = 1\nfail_timeout_ms = 300\nbalancer = \"round_robin\"\n",
    );
    assert_eq!(get(rw.addr, "/").status, 200);
    let revived = Origin::start_on(dead.release(), |_| Reply::ok("revived"));
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..4 {
        assert_eq!(get(rw.addr, "/").status, 200);
    }
    assert_eq!(
        revived.seen().len(),
        2,
        "one probe readmitted it, then round-robin resumed"
    );
    assert!(rw.log().contains("back in rotation"), "{}", rw.log());
}

#[test]
fn backend_without_servers_answers_503_naming_the_reason() {
    let routes = routes_json(&[("empty", &[])], &[("f", "empty", "PathPrefix(`/`)")]);
    let rw = Ringway::start(&routes, "");
    let r = get(rw.addr, "/nobody");
    assert_eq!(r.status, 503, "{}", rw.log());
    assert!(r.text().contains("no live server"), "{}", r.text());
}

#[test]
fn all_servers_refusing_answers_502() {
    let (a, b) = (dead_server(), dead_server());
    let rw = Ringway::start(&catch_all(&[a.addr(), b.addr()]), "");
    let r = get(rw.addr, "/down");
    assert_eq!(r.status, 502, "{}: {}", r.text(), rw.log());
    assert!(r.text().contains("upstream"), "{}", r.text());
}

#[test]
fn the_only_server_refusing_answers_502() {
    let dead = dead_server();
    let rw = Ringway::start(&catch_all(&[dead.addr()]), "");
    let r = get(rw.addr, "/down");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn slow_origin_answers_504_after_upstream_read_ms() {
    let slow = Origin::start(|_| Reply::After(Duration::from_secs(2), Box::new(Reply::ok("late"))));
    let rw = Ringway::start(
        &catch_all(&[slow.addr]),
        "[timeouts]\nupstream_read_ms = 300\n",
    );
    let started = Instant::now();
    let r = get(rw.addr, "/slow");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[test]
fn unreachable_origin_answers_504_after_connect_ms() {
    let (hole, _fillers, _listener) = black_hole();
    let rw = Ringway::start(&catch_all(&[hole]), "[timeouts]\nconnect_ms = 300\n");
    let started = Instant::now();
    let r = get(rw.addr, "/hole");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{} after {took:?}: {}", r.text(), rw.log());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

/// An origin that closes its side after every response without saying `Connection: close`
/// (its body is the request's target), so each pooled connection is stale by the time the
/// next request would use it.
fn origin_closing_after_each_response() -> Origin {
    Origin::start(|s| {
        Reply::BytesThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                s.target.len(),
                s.target
            )
            .into_bytes(),
        )
    })
}

/// Ten requests on one keep-alive client connection, `pause` apart, each answered with its own
/// target.
fn ten_requests_on_one_connection(rw: &Ringway, pause: Duration, label: &str) {
    let mut c = Client::connect(rw.addr);
    for i in 0..10 {
        let path = format!("/n/{i}");
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("response");
        assert_eq!((r.status, r.text()), (200, path), "{label}: {}", rw.log());
        std::thread::sleep(pause);
    }
}

#[test]
fn origin_closing_after_each_response_does_not_fail_keep_alive_clients() {
    let origin = origin_closing_after_each_response();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    ten_requests_on_one_connection(&rw, Duration::from_millis(20), "default loop");
    assert_eq!(
        origin.seen().len(),
        10,
        "each request reached the origin once"
    );
}

/// The origin closes its side after every response without saying so. Pooled connections are
/// checked before reuse (io_uring: a poll kept armed on each idle connection; epoll: a peek),
/// so no request is written to one the origin closed. One that slipped through would still be
/// answered, by the stale-connection retry, so that retry's counter is what tells.
#[test]
fn pooled_connections_the_origin_closed_are_never_reused() {
    for (driver, node) in DRIVERS {
        let origin = origin_closing_after_each_response();
        let (admin, extra) = crate::admin::with_admin(node);
        let rw = Ringway::start(&catch_all(&[origin.addr]), &extra);
        ten_requests_on_one_connection(&rw, Duration::from_millis(30), driver);
        let metrics = crate::admin::scrape(admin);
        let counter = |prefix: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        assert_eq!(
            counter("ringway_upstream_retries_total{reason=\"stale_connection\"} "),
            Some(0.0),
            "{driver}: a closed pooled connection was used"
        );
        assert_eq!(
            counter("ringway_upstream_requests_total{reused=\"true\"} "),
            Some(0.0),
            "{driver}"
        );
        assert_eq!(origin.seen().len(), 10, "{driver}: each request once");
        // On io_uring the watch also lets the worker's once-a-second sweep close a pooled
        // connection the origin closed, instead of leaving it in CLOSE_WAIT until reused or
        // timed out (epoll would need a peek per idle connection for that).
        if driver == "io_uring" {
            let deadline = Instant::now() + Duration::from_secs(5);
            while close_wait_to(origin.addr) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(close_wait_to(origin.addr), 0, "{}", rw.log());
        }
    }
}

/// Sockets in CLOSE_WAIT (the peer closed, this side not yet) connected to `peer`, from
/// `/proc/net/tcp`, as `ss -tan state close-wait` shows them.
fn close_wait_to(peer: SocketAddr) -> usize {
    tcp_sockets(peer.port(), Side::Remote, TCP_CLOSE_WAIT)
}

#[test]
fn streamed_post_is_not_replayed_when_the_upstream_dies() {
    let a = Origin::start(|_| Reply::Close);
    let b = Origin::start(|_| Reply::Close);
    let rw = Ringway::start(&catch_all(&[a.addr, b.addr]), "");
    let body = vec![b'x'; 100_000];
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    c.send(&body[..10]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&body[10..]);
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 502, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.seen().len() + b.seen().len(), 1, "POST was replayed");
}

#[test]
fn post_on_a_pooled_connection_is_not_replayed_when_the_upstream_dies() {
    // The origin takes the POST, then dies without answering. It did receive it, so sending
    // it again (on a fresh connection, or to another server) could run it twice.
    let origin = Origin::start(|s| {
        if s.method == "POST" {
            Reply::Close
        } else {
            Reply::ok("warm")
        }
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("warm-up").text(), "warm");
    c.send(b"POST /charge HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\namount=10");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 502, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    let posts = origin.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "POST was replayed");
}

#[test]
fn one_pooled_connection_timing_out_closes_the_servers_other_idle_ones() {
    // A firewall dropped the idle flows (or the host went silent): the connections ringway
    // pooled earlier take requests and never answer, while new connections work. The first
    // request sent on one of them can only time out; the next must not be sent on another.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    for (driver, profile) in DRIVERS {
        let cut = Arc::new(AtomicUsize::new(usize::MAX));
        let seen_cut = cut.clone();
        let origin = Origin::start(move |s| {
            let cut = seen_cut.load(Ordering::SeqCst);
            if s.conn < cut && cut != usize::MAX {
                Reply::After(Duration::from_secs(3), Box::new(Reply::ok("too late")))
            } else if cut == usize::MAX {
                // Slow enough that concurrent requests each need a connection of their own.
                Reply::After(Duration::from_millis(400), Box::new(Reply::ok("warm")))
            } else {
                Reply::ok("fresh")
            }
        });
        // Long enough that a fresh answer on a busy machine is never late.
        let profile = format!("{profile}[timeouts]\nupstream_read_ms = 1000\n");
        let rw = Ringway::start(&catch_all(&[origin.addr]), &profile);
        let warm: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || get(rw.addr, "/warm").text()))
            .collect();
        for w in warm {
            assert_eq!(w.join().unwrap(), "warm", "{driver}");
        }
        assert_eq!(
            origin.connections(),
            3,
            "{driver}: three pooled connections"
        );
        cut.store(3, Ordering::SeqCst);
        let post = |path: &str| {
            let raw = format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\nConnection: close\r\n\r\namount=10"
            );
            crate::harness::request(rw.addr, raw.as_bytes()).expect("a response")
        };
        let first = post("/first");
        assert_eq!(first.status, 504, "{driver}: {}", first.text());
        let second = post("/second");
        assert_eq!(
            (second.status, second.text().as_str()),
            (200, "fresh"),
            "{driver}: the second POST went to another silent pooled connection\n{}",
            rw.log()
        );
        let on = |path: &str| {
            let seen = origin.seen();
            seen.iter()
                .filter(|s| s.target == path)
                .map(|s| s.conn)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            on("/first").len(),
            1,
            "{driver}: the POST that timed out was not repeated"
        );
        assert!(on("/second")[0] >= 3, "{driver}: {:?}", on("/second"));
    }
}

#[test]
fn a_backends_keepalive_period_turns_on_tcp_keep_alive_probes_on_its_connections() {
    // vulcand's dialer sends TCP keep-alive probes every `KeepAlive.Period`; ringway's
    // connections to such a backend's servers carry the same timer, and those of a backend
    // without the setting none.
    let probed = Origin::ok();
    let plain = Origin::ok();
    let routes = routes_json(
        &[("ka", &[probed.addr]), ("plain", &[plain.addr])],
        &[
            ("ka", "ka", "PathPrefix(`/ka`)"),
            ("plain", "plain", "PathPrefix(`/plain`)"),
        ],
    );
    let routes = with_backend_settings(
        &routes,
        "ka",
        serde_json::json!({"KeepAlive": {"Period": "7s"}}),
    );
    let rw = Ringway::start(&routes, "");
    assert_eq!(get(rw.addr, "/ka").status, 200);
    assert_eq!(get(rw.addr, "/plain").status, 200);
    // The timer on ringway's end of its pooled connection to `server`, from the kernel's
    // socket table: (kind, seconds left); kind 2 is the keep-alive timer, 0 none. The time is
    // in clock ticks, 100 a second (USER_HZ).
    let timer_to = |server: SocketAddr| -> Option<(u8, f64)> {
        let remote = format!("0100007F:{:04X}", server.port());
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: slot, local, remote, state (01: established), queues, timer:when.
            if f.len() < 6 || f[2] != remote || f[3] != "01" {
                return None;
            }
            let (kind, when) = f[5].split_once(':')?;
            let ticks = u64::from_str_radix(when, 16).ok()?;
            Some((u8::from_str_radix(kind, 16).ok()?, ticks as f64 / 100.0))
        })
    };
    let probing = timer_to(probed.addr);
    assert!(
        probing.is_some_and(|(kind, left)| kind == 2 && left > 0.0 && left <= 7.0),
        "no keep-alive timer of at most 7 s: {probing:?}"
    );
    let quiet = timer_to(plain.addr);
    assert_eq!(quiet.map(|(kind, _)| kind), Some(0), "{quiet:?}");
}

#[test]
fn zero_backend_timeouts_mean_no_limit_of_their_own_as_in_go() {
    // vulcand's settings are Go durations, where zero means "no limit": the profile's
    // deadlines apply, not a deadline that has already passed.
    let origin =
        Origin::start(|_| Reply::After(Duration::from_millis(50), Box::new(Reply::ok("ok"))));
    let settings = serde_json::json!({
        "Timeouts": {"Read": "0s", "Dial": "0s", "TLSHandshake": "0s"},
        "KeepAlive": {"Period": "0s"},
    });
    let routes = with_backend_settings(&catch_all(&[origin.addr]), "b1", settings);
    let rw = Ringway::start(&routes, "");
    for _ in 0..3 {
        let r = get(rw.addr, "/x");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", rw.log());
    }
    assert_eq!(origin.connections(), 1, "the pooled connection was reused");
}

#[test]
fn sequential_requests_use_at_most_one_upstream_connection_per_worker() {
    let origin = Origin::ok();
    let rw = Ringway::start_with_workers(&catch_all(&[origin.addr]), "", 2);
    for _ in 0..40 {
        assert_eq!(get(rw.addr, "/pool").status, 200);
    }
    assert_eq!(origin.seen().len(), 40);
    assert!(
        origin.connections() <= 2,
        "{} upstream connections for 40 sequential requests",
        origin.connections()
    );
}

#[test]
fn origin_stalling_mid_body_gets_the_client_connection_closed_after_upstream_read_ms() {
    let origin = Origin::start(|_| {
        Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it".to_vec())
    });
    let rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[timeouts]\nupstream_read_ms = 300\n",
    );
    let mut c = Client::connect(rw.addr);
    let started = Instant::now();
    c.send(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        c.read_response(false).is_none(),
        "a truncated body was passed off as whole"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_backend_moved_to_another_server_is_not_served_from_the_old_pool() {
    let old = Origin::start(|_| Reply::ok("old"));
    let new = Origin::start(|_| Reply::ok("new"));
    let rw = Ringway::start(&catch_all(&[old.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("response").text(), "old");
    rw.set_routes(&catch_all(&[new.addr]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        if c.read_response(false).expect("response").text() == "new" {
            break;
        }
        assert!(Instant::now() < deadline, "still served by the old server");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = old.seen().len();
    for _ in 0..5 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read_response(false).expect("response").text(), "new");
    }
    assert_eq!(old.seen().len(), before);
}

/// An origin that answers each GET on a connection with the pieces `script` gives for its
/// target, written 40 ms apart (so ringway has read one before the next arrives); a piece
/// `<close>` closes the connection. Counts the connections it accepted.
fn piecewise_origin(
    script: fn(&str) -> Vec<Vec<u8>>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::Write;
    crate::harness::head_serving_origin(move |s, _, target, _| {
        for (i, piece) in script(target).iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(40));
            }
            if piece == b"<close>" || s.write_all(piece).is_err() {
                return false;
            }
        }
        true
    })
}

fn big_body() -> Vec<u8> {
    (0..(8usize << 20)).map(|i| (i * 31 % 253) as u8).collect()
}

fn answers(target: &str) -> Vec<Vec<u8>> {
    let v = |s: &[u8]| s.to_vec();
    match target {
        // Head alone, then the body in two pieces.
        "/trickle" => vec![
            v(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
            v(b"01234"),
            v(b"56789"),
        ],
        "/chunked" => vec![
            v(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"),
            v(b"cd\r\n3\r\nefg\r\n"),
            v(b"0\r\n\r\n"),
        ],
        "/big" => {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n".to_vec();
            let body = big_body();
            head.extend_from_slice(&body[..100]);
            vec![head, body[100..].to_vec()]
        }
        "/until-close" => vec![
            v(b"HTTP/1.1 200 OK\r\n\r\nfirst "),
            v(b"second"),
            v(b"<close>"),
        ],
        "/switch" => vec![
            v(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi"),
            v(b" there"),
            v(b"<close>"),
        ],
        _ => vec![v(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")],
    }
}

#[test]
fn pooled_upstream_answers_in_pieces_of_every_framing_reach_the_client_whole() {
    use std::sync::atomic::Ordering;
    let (origin, accepted) = piecewise_origin(answers);
    let rw = Ringway::start(&catch_all(&[origin]), "");
    let mut c = Client::connect(rw.addr);
    let mut get = |path: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c.read_response(false).expect("a response")
    };
    // From the second request on, the upstream connection is a pooled one, whose answer
    // arrives through the receive armed while it was idle.
    assert_eq!(get("/small").text(), "small");
    assert_eq!(get("/trickle").text(), "0123456789", "{}", rw.log());
    assert_eq!(get("/small").text(), "small");
    assert_eq!(get("/chunked").text(), "abcdefg");
    assert_eq!(get("/small").text(), "small");
    let big = get("/big");
    assert!(
        big.body == big_body(),
        "the 8 MiB body arrived whole and in order"
    );
    assert_eq!(get("/small").text(), "small");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection carried all"
    );
    let r = get("/until-close");
    assert_eq!(r.text(), "first second");
}

#[test]
fn pooled_upstream_connection_switching_protocols_loses_no_byte() {
    let (origin, _) = piecewise_origin(answers);
    let rw = Ringway::start(&catch_all(&[origin]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("small").text(), "small");
    c.send(b"GET /switch HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response(false).expect("101");
    assert_eq!(r.status, 101, "{}", rw.log());
    assert_eq!(c.read_bytes(8).expect("tunnel bytes"), b"hi there");
}
