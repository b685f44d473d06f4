//! The node's lifecycle: SIGTERM and SIGINT drain in-flight requests and exit cleanly, and the
//! routes file is reloaded live, keeping the last good table when the file is broken.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{catch_all, get, routes_json, Client, Ringway};
use crate::origin::{Origin, Reply};

fn drains_in_flight_requests_then_exits_on(signal: &str) {
    let slow = Origin::start(|_| Reply::After(Duration::from_secs(1), Box::new(Reply::ok("done"))));
    let mut rw = Ringway::start(&catch_all(&[slow.addr]), "");
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let addr = rw.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(format!("GET /work/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                c.read_response(false)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while slow.seen().len() < 10 {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the origin"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    rw.signal(signal);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(rw.addr).is_err(),
        "a new connection was accepted after SIG{signal}"
    );

    for c in clients {
        let r = c.join().unwrap().expect("in-flight request answered");
        assert_eq!((r.status, r.text().as_str()), (200, "done"));
        assert_eq!(r.header("connection"), Some("close"));
    }
    let status = rw
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIG{signal}:\n{}", rw.log()));
    assert!(status.success(), "exit status {status}:\n{}", rw.log());
}

#[test]
fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    drains_in_flight_requests_then_exits_on("TERM");
}

#[test]
fn sigint_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    drains_in_flight_requests_then_exits_on("INT");
}

#[test]
fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let origin = Origin::ok();
    let mut rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut idle = Client::connect(rw.addr);
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response(false).expect("response").status, 200);
    rw.signal("TERM");
    assert!(idle.is_closed(Duration::from_secs(2)));
    let status = rw.wait_exit(Duration::from_secs(3)).expect("exited");
    assert!(status.success());
}

/// Status of `GET path` once it equals `want`, or the last one seen after `limit`.
fn status_within(rw: &Ringway, path: &str, want: u16, limit: Duration) -> u16 {
    let deadline = Instant::now() + limit;
    loop {
        let status = get(rw.addr, path).status;
        if status == want || Instant::now() >= deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn routes_file_changes_are_applied_live() {
    let a = Origin::start(|_| Reply::ok("a"));
    let b = Origin::start(|_| Reply::ok("b"));
    let only_a = routes_json(&[("ba", &[a.addr])], &[("fa", "ba", "PathPrefix(`/a`)")]);
    let a_and_b = routes_json(
        &[("ba", &[a.addr]), ("bb", &[b.addr])],
        &[
            ("fa", "ba", "PathPrefix(`/a`)"),
            ("fb", "bb", "PathPrefix(`/b`)"),
        ],
    );
    let rw = Ringway::start(&only_a, "");
    assert_eq!(get(rw.addr, "/b").status, 404);

    rw.set_routes(&a_and_b);
    assert_eq!(status_within(&rw, "/b", 200, Duration::from_secs(1)), 200);
    assert_eq!(get(rw.addr, "/b").text(), "b");

    rw.set_routes(&only_a);
    assert_eq!(status_within(&rw, "/b", 404, Duration::from_secs(1)), 404);
    assert_eq!(get(rw.addr, "/a").text(), "a");
}

#[test]
fn a_broken_routes_file_keeps_the_previous_table_serving() {
    let a = Origin::start(|_| Reply::ok("a"));
    let rw = Ringway::start(
        &routes_json(&[("ba", &[a.addr])], &[("fa", "ba", "PathPrefix(`/a`)")]),
        "",
    );
    rw.set_routes("{\"/vulcand/backends/ba/backend\": {\"Type\": \"http\"},,, not json");
    // Several poll intervals.
    std::thread::sleep(Duration::from_millis(300));
    let r = get(rw.addr, "/a");
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{}", rw.log());

    // A good file after the broken one is applied again.
    let b = Origin::start(|_| Reply::ok("b"));
    rw.set_routes(&routes_json(
        &[("bb", &[b.addr])],
        &[("fb", "bb", "PathPrefix(`/a`)")],
    ));
    let deadline = Instant::now() + Duration::from_secs(1);
    while get(rw.addr, "/a").text() != "b" {
        assert!(
            Instant::now() < deadline,
            "good file after a broken one ignored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_route_added_while_a_keep_alive_connection_is_open_applies_to_its_next_request() {
    let a = Origin::start(|_| Reply::ok("a"));
    let only_a = routes_json(&[("ba", &[a.addr])], &[("fa", "ba", "PathPrefix(`/a`)")]);
    let rw = Ringway::start(&only_a, "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("404").status, 404);
    let b = Origin::start(|_| Reply::ok("b"));
    rw.set_routes(&routes_json(
        &[("ba", &[a.addr]), ("bb", &[b.addr])],
        &[
            ("fa", "ba", "PathPrefix(`/a`)"),
            ("fb", "bb", "PathPrefix(`/b`)"),
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        c.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c
            .read_response(false)
            .expect("response on the same connection");
        if r.status == 200 {
            assert_eq!(r.text(), "b");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new route never applied to {}",
            rw.url("/b")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
