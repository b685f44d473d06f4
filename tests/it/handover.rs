//! Upgrades and reloads of a running node: a second `ringway run` takes the listeners over
//! through the handover socket without failing a single request, and SIGHUP re-reads the
//! profile's reloadable keys.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{catch_all, get, routes_json, Client, Ringway};
use crate::origin::Origin;

/// What a load thread saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// One request on `conn` (a new connection when `None`); the connection is kept only when
/// the response allows it. Every request must get its 200: nothing is retried.
fn one_request(
    addr: SocketAddr,
    conn: &mut Option<(Client, Instant)>,
    keep_alive: bool,
    tally: &Tally,
) {
    // For a failure report: a reused connection, and how long it had been idle.
    let reused = conn.as_ref().map(|(_, since)| since.elapsed());
    let mut c = match conn.take() {
        Some((c, _)) => c,
        None => match std::net::TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_nodelay(true).unwrap();
                Client::from_stream(s)
            }
            Err(e) => {
                tally.failures.lock().unwrap().push(format!("connect: {e}"));
                return;
            }
        },
    };
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    if let Err(e) = std::io::Write::write_all(
        &mut c.stream,
        format!("GET /load HTTP/1.1\r\nHost: t\r\n{close}\r\n").as_bytes(),
    ) {
        tally.failures.lock().unwrap().push(format!("write: {e}"));
        return;
    }
    match c.read_response(false) {
        Some(r) if r.status == 200 => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            if keep_alive && r.header("connection") != Some("close") {
                *conn = Some((c, Instant::now()));
            }
        }
        Some(r) => {
            tally
                .failures
                .lock()
                .unwrap()
                .push(format!("status {}: {}", r.status, r.text()))
        }
        None => tally.failures.lock().unwrap().push(match reused {
            Some(idle) => format!(
                "connection closed without a response (kept-alive connection idle {idle:?})"
            ),
            None => "connection closed without a response (new connection)".into(),
        }),
    }
}

#[test]
fn a_new_process_takes_over_the_listeners_without_failing_a_request() {
    let origin = Origin::ok();
    let admin: SocketAddr = format!("127.0.0.1:{}", crate::harness::free_port())
        .parse()
        .unwrap();
    // The old node closes connections that sent nothing within the linger (as nginx closes
    // idle ones on a graceful stop); 3 s leaves a load thread that the test machine stalls
    // for a moment (other tests run a browser alongside) time to send its request and hear
    // `Connection: close`.
    let mut a = Ringway::start_with_workers(
        &catch_all(&[origin.addr]),
        &format!(
            "[node]\nhandover_socket = \"handover.sock\"\nhandover_linger_ms = 3000\n\
             [admin]\naddr = \"{admin}\"\n"
        ),
        2,
    );
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (tally, done, addr) = (tally.clone(), done.clone(), a.addr);
            std::thread::spawn(move || {
                // Half the threads reuse connections, half open one per request.
                let keep_alive = t % 2 == 0;
                let mut conn = None;
                // Until the test says done (half a second after the old node exits); the
                // bound only stops a test that went wrong.
                let until = Instant::now() + Duration::from_secs(20);
                for _ in 0..200_000 {
                    if done.load(Ordering::Relaxed) || Instant::now() >= until {
                        break;
                    }
                    one_request(addr, &mut conn, keep_alive, &tally);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(700));
    let before = tally.ok.load(Ordering::Relaxed);
    let b = a.successor();
    let status = a
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the old node did not exit:\n{}", a.log()));
    assert!(status.success(), "old node exit {status}:\n{}", a.log());
    let at_exit = tally.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap();
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        a.log(),
        b.log()
    );
    assert!(
        before > 50,
        "load was running before the handover ({before})"
    );
    assert!(
        ok > at_exit,
        "requests were served after the old node exited\nold:\n{}\nnew:\n{}",
        a.log(),
        b.log()
    );
    assert!(a.log().contains("handed over"), "{}", a.log());
    assert!(b.log().contains("took the listeners over"), "{}", b.log());
    assert_eq!(get(b.addr, "/after").status, 200);
    // The admin endpoint's socket went along too.
    assert_eq!(get(admin, "/healthz").status, 200);
}

#[test]
fn without_a_running_node_the_handover_socket_is_simply_created() {
    let origin = Origin::ok();
    let mut rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[node]\nhandover_socket = \"handover.sock\"\n",
    );
    let sock = rw.dir.0.join("handover.sock");
    assert!(sock.exists(), "{}", rw.log());
    assert_eq!(get(rw.addr, "/").status, 200);
    rw.signal("TERM");
    assert!(rw
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    assert!(
        !sock.exists(),
        "a stopping node removes its own handover socket"
    );
}

/// Rewrite the node's profile file with `edit` applied.
fn edit_profile(rw: &Ringway, edit: impl Fn(&str) -> String) {
    let path = rw.profile_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

#[test]
fn sighup_switches_to_a_new_routes_file() {
    let a = Origin::start(|_| crate::origin::Reply::ok("a"));
    let b = Origin::start(|_| crate::origin::Reply::ok("b"));
    let rw = Ringway::start(
        &routes_json(&[("ba", &[a.addr])], &[("fa", "ba", "PathPrefix(`/`)")]),
        "",
    );
    rw.dir.write(
        "other.json",
        &routes_json(&[("bb", &[b.addr])], &[("fb", "bb", "PathPrefix(`/`)")]),
    );
    assert_eq!(get(rw.addr, "/").text(), "a");
    edit_profile(&rw, |t| {
        t.replace("file = \"routes.json\"", "file = \"other.json\"")
    });
    rw.signal("HUP");
    assert!(
        rw.wait_log("profile reloaded", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    assert_eq!(get(rw.addr, "/").text(), "b", "{}", rw.log());
    // The new file is watched: changes to it apply live.
    rw.dir.write(
        "other.json",
        &routes_json(&[("ba", &[a.addr])], &[("fa", "ba", "PathPrefix(`/`)")]),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while get(rw.addr, "/").text() != "a" {
        assert!(
            Instant::now() < deadline,
            "the new routes file is not watched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_applies_a_new_log_level() {
    let origin = Origin::ok();
    let rw =
        Ringway::start_profile_log_level(&catch_all(&[origin.addr]), "[log]\nlevel = \"info\"\n");
    let noisy = || {
        // A refused request is logged at debug level.
        let r = crate::harness::request(rw.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        assert_eq!(r.expect("a response").status, 400);
    };
    noisy();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!rw.log().contains("bad request"), "{}", rw.log());
    edit_profile(&rw, |t| t.replace("level = \"info\"", "level = \"debug\""));
    rw.signal("HUP");
    assert!(
        rw.wait_log("log.level info -> debug", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    noisy();
    assert!(
        rw.wait_log("bad request", Duration::from_secs(2)),
        "{}",
        rw.log()
    );
}

#[test]
fn sighup_with_a_broken_profile_keeps_the_node_serving() {
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    edit_profile(&rw, |t| format!("{t}\n[limits]\nmax_headers = \"many\"\n"));
    rw.signal("HUP");
    assert!(
        rw.wait_log("reload refused", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    assert!(rw.log().contains("profile.toml"), "{}", rw.log());
    assert_eq!(get(rw.addr, "/").status, 200);
    // A change that needs a restart is reported, not applied.
    edit_profile(&rw, |t| {
        t.replace(
            "\n[limits]\nmax_headers = \"many\"\n",
            "\n[limits]\nmax_headers = 10\n",
        )
    });
    rw.signal("HUP");
    assert!(
        rw.wait_log("profile reloaded", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    assert!(rw.log().contains("key=\"limits\""), "{}", rw.log());
    let fields: String = (0..20).map(|i| format!("X-F{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}Connection: close\r\n\r\n");
    let r = crate::harness::request(rw.addr, raw.as_bytes()).expect("a response");
    assert_eq!(r.status, 200, "limits apply only after a restart");
}
