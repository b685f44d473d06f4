//! Edge cases of the exchange: lengths that cannot fit, upstreams that answer before the body
//! was sent, connection limits held by tunnels, and one request id across retries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::harness::{get, routes_json, Client, Ringway};
use crate::origin::{Origin, Reply};

#[test]
fn a_content_length_that_overflows_never_splits_a_refused_request() {
    let origin = Origin::echo();
    let routes = routes_json(&[("b", &[origin.addr])], &[("a", "b", "PathPrefix(`/a`)")]);
    let rw = Ringway::start(&routes, "");
    // Chosen so head_len + N wraps around to the offset of the request hidden in `X:`.
    let template = |n: u64| {
        format!("GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nX: GET /a/smuggled HTTP/1.0\r\n\r\n")
    };
    let probe = template(u64::MAX);
    let head_len = probe.len() as u64;
    let inner = probe.find("GET /a/").unwrap() as u64;
    let n = u64::MAX - head_len + 1 + inner;
    let raw = template(n);
    assert_eq!(raw.len() as u64, head_len, "same digit count");
    let mut c = Client::connect(rw.addr);
    c.send(raw.as_bytes());
    assert_eq!(c.read_response(false).expect("404").status, 404);
    assert!(
        c.read_response(false).is_none(),
        "nothing after the 404: the connection closes"
    );
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}

/// An origin that answers a POST with 413 as soon as it has the head, without reading the
/// body, and closes; anything else gets 200. Counts requests per method.
fn early_413_origin() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if buf.starts_with(b"POST") {
                        let _ = s.write_all(
                            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
                        );
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, gets)
}

#[test]
fn an_upstream_answering_an_upload_early_is_relayed_and_not_marked_down() {
    let (early, early_gets) = early_413_origin();
    let other = Origin::ok();
    let routes = routes_json(
        &[("b", &[early, other.addr])],
        &[("f", "b", "PathPrefix(`/`)")],
    );
    let rw = Ringway::start(&routes, "[upstream]\nbalancer = \"round_robin\"\n");
    // Uploads until one lands on the early-answering server (round-robin: within two).
    let mut saw_413 = false;
    for _ in 0..2 {
        let mut c = Client::connect(rw.addr);
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if c.stream.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        let r = c.read_response(false).expect("an answer to the upload");
        assert!(
            r.status == 413 || r.status == 200,
            "{} {}",
            r.status,
            r.text()
        );
        if r.status == 413 {
            saw_413 = true;
            assert_eq!(r.text(), "too large");
            break;
        }
    }
    assert!(
        saw_413,
        "the upstream's own 413 reached the client:\n{}",
        rw.log()
    );
    // The early answer did not take the server out of rotation.
    for _ in 0..6 {
        assert_eq!(get(rw.addr, "/x").status, 200);
    }
    assert!(
        early_gets.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the server that answered early still gets requests:\n{}",
        rw.log()
    );
}

#[test]
fn a_tunnel_holds_its_connlimit_slot_until_it_closes() {
    let origin = Origin::start(|_| {
        Reply::EchoTunnel(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        )
    });
    let mut routes: serde_json::Value = serde_json::from_str(&routes_json(
        &[("b", &[origin.addr])],
        &[("ws", "b", "PathPrefix(`/`)")],
    ))
    .unwrap();
    routes["/vulcand/frontends/ws/middlewares/cl"] = serde_json::json!({
        "Id": "cl", "Priority": 1, "Type": "connlimit",
        "Middleware": {"Connections": 1, "Variable": "client.ip"}
    });
    let rw = Ringway::start(&routes.to_string(), "");
    let upgrade =
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut first = Client::connect(rw.addr);
    first.send(upgrade);
    assert_eq!(first.read_response(false).expect("101").status, 101);
    let mut second = Client::connect(rw.addr);
    second.send(upgrade);
    assert_eq!(second.read_response(false).expect("refusal").status, 429);
    drop(first);
    // Once the first tunnel is gone, its slot is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(rw.addr);
        c.send(upgrade);
        if c.read_response(false).expect("a response").status == 101 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_retried_request_carries_the_same_request_id_to_every_server() {
    let closer = Origin::start(|_| Reply::Close);
    let answerer = Origin::ok();
    let routes = routes_json(
        &[("b", &[closer.addr, answerer.addr])],
        &[("f", "b", "PathPrefix(`/`)")],
    );
    let rw = Ringway::start(&routes, "[upstream]\nbalancer = \"round_robin\"\n");
    // Round-robin: one of the first two requests meets the closing server first and is retried.
    for _ in 0..2 {
        assert_eq!(get(rw.addr, "/x").status, 200);
    }
    let closed = closer.seen();
    assert!(!closed.is_empty(), "the closing server was tried");
    let id = closed[0].header("x-request-id").expect("an id").to_string();
    assert!(
        answerer
            .seen()
            .iter()
            .any(|s| s.header("x-request-id") == Some(&id)),
        "the retry reused {id}: {:?}",
        answerer
            .seen()
            .iter()
            .map(|s| s.header("x-request-id"))
            .collect::<Vec<_>>()
    );
}
