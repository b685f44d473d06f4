//! The basic promise: a request to the mesh listener reaches the owning service and its answer
//! comes back; an unknown route gets 404 and reaches nobody.

use crate::harness::{catch_all, get, routes_json, Client, Ringway};
use crate::origin::Origin;

#[test]
fn a_get_is_forwarded_and_answered() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let resp = get(rw.addr, "/users/42?x=1");
    assert_eq!(resp.status, 200, "{}", rw.log());
    assert_eq!(resp.text(), "GET /users/42?x=1");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(seen[0]
        .header("x-request-id")
        .is_some_and(|v| v.len() == 32));
}

#[test]
fn unknown_route_is_404_and_reaches_no_upstream() {
    let origin = Origin::ok();
    let routes = routes_json(
        &[("b1", &[origin.addr])],
        &[("users", "b1", "PathPrefix(`/users`)")],
    );
    let rw = Ringway::start(&routes, "");
    let resp = get(rw.addr, "/orders");
    assert_eq!(resp.status, 404);
    assert!(resp.text().contains("no route"));
    assert_eq!(origin.connections(), 0);
}

#[test]
fn keep_alive_connection_serves_many_requests_over_one_upstream_connection() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    for i in 0..20 {
        c.send(format!("GET /n/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("GET /n/{i}"));
    }
    assert_eq!(origin.connections(), 1, "upstream connection reused");
}

#[test]
fn a_connection_idle_past_the_hot_window_still_serves_its_next_request() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "[timeouts]\nidle_hot_ms = 50\n");
    let mut c = Client::connect(rw.addr);
    for i in 0..3 {
        c.send(format!("GET /idle/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c
            .read_response(false)
            .expect("response after a cold idle wait");
        assert_eq!(r.text(), format!("GET /idle/{i}"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A request split around the end of the hot window is read whole.
    c.send(b"GET /split HTTP/1.1\r\n");
    std::thread::sleep(std::time::Duration::from_millis(80));
    c.send(b"Host: t\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("response").text(),
        "GET /split"
    );
}

#[test]
fn the_demo_serves_the_curl_lines_it_prints() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let hold = crate::harness::PortHold::new();
    let addr = hold.addr();
    let mut child = Command::new(crate::harness::ringway_bin())
        .args(["demo", "--addr", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut curls = Vec::new();
    let mut routes_file = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("Ctrl-C") {
            break;
        }
        if line.starts_with("routes file") {
            routes_file = line.split_whitespace().last().map(std::path::PathBuf::from);
        }
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            curls.push(url.to_string());
        }
    }
    drop(hold);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "demo never listened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(curls.len(), 3, "{curls:?}");
    let path = |u: &str| u.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let users = get(addr, &path(&curls[0]));
    assert_eq!(users.status, 200);
    assert!(
        users.text().contains("\"service\":\"users\""),
        "{}",
        users.text()
    );
    let orders = get(addr, &path(&curls[1]));
    assert!(
        orders.text().contains("\"service\":\"orders\""),
        "{}",
        orders.text()
    );
    assert_eq!(get(addr, &path(&curls[2])).status, 404);
    // Ctrl-C stops the demo cleanly and takes its routes file with it.
    let routes_file = routes_file.expect("the demo names its routes file");
    assert!(routes_file.exists(), "{}", routes_file.display());
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -INT failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop within 10 s of Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        !routes_file.parent().unwrap().exists(),
        "{} is left behind",
        routes_file.display()
    );
}

#[test]
fn host_aliases_route_this_nodes_name_to_localhost_frontends() {
    let origin = Origin::echo();
    let routes = routes_json(
        &[("b1", &[origin.addr])],
        &[("local", "b1", "Host(`localhost`) && PathPrefix(`/`)")],
    );
    let rw = Ringway::start(
        &routes,
        "[routes.host_aliases]\nlocalhost = \"node-17.mesh\"\n",
    );
    let ask = |host: &str| {
        crate::harness::request(
            rw.addr,
            format!("GET /who HTTP/1.1\r\nHost: {host}:9003\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("a response")
        .status
    };
    assert_eq!(ask("node-17.mesh"), 200);
    assert_eq!(ask("localhost"), 200);
    assert_eq!(ask("node-18.mesh"), 404);
}
