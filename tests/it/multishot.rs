//! Keep-alive clients on io_uring: from a connection's second request on, its requests come
//! through one multishot receive into the worker's buffer ring. Every way a request can
//! arrive on such a connection (a head in pieces, pipelined heads, a body that is still on
//! its way, a protocol switch, a pause long enough to go cold, a head over the limit) must
//! reach the origin exactly as sent, in order.

use std::time::Duration;

use crate::harness::{
    catch_all, eventually, tcp_sockets, Client, Ringway, Side, TCP_CLOSE_WAIT, TCP_ESTABLISHED,
};
use crate::origin::{Origin, Reply};

/// A worker reports whether its clients' requests come through multishot receives: on
/// io_uring exactly when the kernel has them (Linux 6.0), never on epoll.
#[test]
fn workers_use_multishot_receives_where_the_kernel_has_them() {
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let log = rw.log();
    let want = monoio::utils::detect_uring() && monoio::utils::detect_multishot_recv();
    assert!(
        log.contains(&format!("multishot_recv={want}")),
        "worker line should say multishot_recv={want}: {log}"
    );
    let epoll = epoll_log(origin.addr);
    assert!(epoll.contains("multishot_recv=false"), "{epoll}");
}

#[test]
fn kept_alive_client_requests_in_pieces_pipelined_and_with_late_bodies_arrive_in_order() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    let pause = || std::thread::sleep(Duration::from_millis(30));

    // The first request is read the ordinary way; the connection is now a keep-alive one.
    c.send(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("first").text(), "GET /one");

    // A head in three pieces.
    for piece in [&b"GET /tw"[..], b"o HTTP/1.1\r\nHo", b"st: t\r\n\r\n"] {
        c.send(piece);
        pause();
    }
    assert_eq!(c.read_response(false).expect("pieces").text(), "GET /two");

    // Two pipelined requests in one write, then a body that came whole with its head.
    c.send(b"GET /three HTTP/1.1\r\nHost: t\r\n\r\nGET /four HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("pipelined").text(),
        "GET /three"
    );
    assert_eq!(
        c.read_response(false).expect("pipelined").text(),
        "GET /four"
    );
    c.send(b"POST /five HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(
        c.read_response(false).expect("whole body").text(),
        "POST /five"
    );

    // A body that is still arriving when the head is complete: the receive is ended and the
    // rest is read from the socket (and so are this connection's later requests).
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    c.send(b"POST /six HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    c.send(&body[..10]);
    pause();
    c.send(&body[10..]);
    assert_eq!(
        c.read_response(false).expect("late body").text(),
        "POST /six"
    );
    c.send(b"POST /seven HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n");
    pause();
    c.send(b"0\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("chunked").text(),
        "POST /seven"
    );

    let seen = origin.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/one", "/two", "/three", "/four", "/five", "/six", "/seven"],
        "{}",
        rw.log()
    );
    assert_eq!(seen[4].body, b"abc");
    assert_eq!(seen[5].body, body, "the late body reached the origin whole");
    assert_eq!(seen[6].body, b"xyz");
}

#[test]
fn kept_alive_client_that_goes_cold_and_comes_back_is_served() {
    let origin = Origin::echo();
    let rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[timeouts]\nidle_hot_ms = 50\nkeepalive_ms = 5000\n",
    );
    let mut c = Client::connect(rw.addr);
    for i in 0..4 {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(
            c.read_response(false).expect("response").text(),
            format!("GET /r{i}"),
            "{}",
            rw.log()
        );
        // Longer than idle_hot_ms: the receive is ended and the connection waits cold.
        std::thread::sleep(Duration::from_millis(150));
        // A request whose head arrives just as the connection would go cold is kept too.
        c.send(format!("GET /s{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(
            c.read_response(false).expect("response").text(),
            format!("GET /s{i}")
        );
    }
    assert_eq!(origin.seen().len(), 8);
}

#[test]
fn kept_alive_client_switches_protocols_and_the_tunnel_carries_every_byte() {
    let origin = Origin::start(|s| {
        match s.target.as_str() {
        "/chat" => Reply::EchoTunnel(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        ),
        _ => Reply::ok("plain"),
    }
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    for _ in 0..2 {
        c.send(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read_response(false).expect("plain").text(), "plain");
    }
    // The switch and the first tunnel bytes in one write: they must not be lost between the
    // receive that read the head and the tunnel that reads after it.
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
          early bytes",
    );
    let r = c.read_response(false).expect("101");
    assert_eq!(r.status, 101, "{}", rw.log());
    assert_eq!(
        c.read_bytes(11).expect("early bytes echoed"),
        b"early bytes"
    );
    for msg in [&b"\x81\x05hello"[..], &[7u8; 9000]] {
        c.send(msg);
        assert_eq!(c.read_bytes(msg.len()).expect("echoed"), msg);
    }
}

#[test]
fn kept_alive_client_sending_a_head_over_the_limit_in_pieces_gets_431() {
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("first").status, 200);
    // 40 KiB of fields (the mesh's limit is 32 KiB), in 4 KiB writes, never ending the head.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let line = format!("X-Pad: {}\r\n", "a".repeat(4088));
    for _ in 0..10 {
        c.send(line.as_bytes());
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = c.read_response(false).expect("an answer, not a hang");
    assert_eq!(r.status, 431, "{}", rw.log());
    assert_eq!(
        origin.seen().len(),
        1,
        "the oversized head never reached the origin"
    );
}

/// An origin that answers a connection's requests in turn, and waits `stall` before it starts
/// reading a body: meanwhile ringway cannot hand the body on, and the client's next bytes
/// arrive at a socket that nobody but a multishot receive would be reading. Answers each
/// request with its target, its body's length and whether the body was the expected pattern.
fn stalling_origin(stall: Duration) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let (addr, _) = crate::harness::head_serving_origin(move |s, head, target, buf| {
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if len > 0 {
            std::thread::sleep(stall);
        }
        let mut tmp = vec![0u8; 64 * 1024];
        while buf.len() < len {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let whole = body.iter().enumerate().all(|(i, b)| *b == pattern(i));
        let text = format!("{target} {len} {whole}");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        s.write_all(reply.as_bytes()).is_ok()
    });
    addr
}

fn pattern(i: usize) -> u8 {
    (i * 31 % 253) as u8
}

#[test]
fn kept_alive_client_body_arriving_while_the_upstream_stalls_reaches_it_whole() {
    let origin = stalling_origin(Duration::from_millis(300));
    let rw = Ringway::start(&catch_all(&[origin]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("first").text(),
        "/first 0 true"
    );
    // 8 MiB: more than the sockets between ringway and the stalled origin hold, so ringway
    // stops reading the client while most of the body is still on its way.
    const LEN: usize = 8 << 20;
    let body: Vec<u8> = (0..LEN).map(pattern).collect();
    c.send(format!("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\n\r\n").as_bytes());
    c.send(&body[..1000]);
    std::thread::sleep(Duration::from_millis(50));
    for piece in body[1000..].chunks(256 * 1024) {
        c.send(piece);
    }
    let r = c.read_response(false).expect("an answer to the big body");
    assert_eq!(r.text(), format!("/big {LEN} true"), "{}", rw.log());
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        c.read_response(false).expect("after").text(),
        "/after 0 true"
    );
}

/// Sockets in CLOSE_WAIT (the client closed, ringway not yet) on ringway's side of `listener`.
fn close_wait_at(listener: std::net::SocketAddr) -> usize {
    tcp_sockets(listener.port(), Side::Local, TCP_CLOSE_WAIT)
}

/// Established connections to `server` (ringway's side of its upstream connections).
fn established_to(server: std::net::SocketAddr) -> usize {
    tcp_sockets(server.port(), Side::Remote, TCP_ESTABLISHED)
}

/// Long-lived sockets take slots in the worker's table of registered files (io_uring, Linux
/// 5.19), so their receives and sends skip the kernel's descriptor lookup: a client connection
/// after eight responses, a pooled upstream connection when reused. With a table of two slots,
/// more keep-alive clients than slots come and go, three times over: every request is
/// answered, and every connection a client closed is closed on ringway's side too (a slot
/// still holding the socket would keep it open, in CLOSE_WAIT); so is the pooled upstream
/// connection once it idles out.
#[test]
fn keep_alive_clients_beyond_a_small_registered_file_table_come_and_go_and_are_closed() {
    let origin = Origin::echo();
    let rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[node]\nring_registered_files = 2\n[upstream]\nidle_timeout_ms = 1500\n",
    );
    let log = rw.log();
    if monoio::utils::detect_uring() {
        assert!(
            log.contains("registered_files=2") || log.contains("no registered files"),
            "the worker line names its table: {log}"
        );
    } else {
        assert!(log.contains("registered_files=0"), "{log}");
    }
    for round in 0..3 {
        let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(rw.addr)).collect();
        for i in 0..10 {
            for (k, c) in clients.iter_mut().enumerate() {
                let path = format!("/r{round}/{k}/{i}");
                c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                let r = c
                    .read_response(false)
                    .unwrap_or_else(|| panic!("no response to {path}: {}", rw.log()));
                assert_eq!(
                    (r.status, r.text()),
                    (200, format!("GET {path}")),
                    "{}",
                    rw.log()
                );
            }
        }
        drop(clients);
        assert!(
            eventually(Duration::from_secs(5), || close_wait_at(rw.addr) == 0),
            "round {round}: {} left in CLOSE_WAIT: {}",
            close_wait_at(rw.addr),
            rw.log()
        );
    }
    assert_eq!(origin.seen().len(), 150);
    assert!(
        established_to(origin.addr) > 0,
        "a pooled upstream connection"
    );
    assert!(
        eventually(Duration::from_secs(5), || established_to(origin.addr) == 0),
        "the idle upstream connection is closed: {}",
        rw.log()
    );

    let defaults = Ringway::start(&catch_all(&[origin.addr]), "");
    if monoio::utils::detect_uring() {
        assert!(
            defaults.log().contains("registered_files=4096"),
            "{}",
            defaults.log()
        );
    }
    let epoll = epoll_log(origin.addr);
    assert!(epoll.contains("registered_files=0"), "{epoll}");
}

/// The log of a ringway on the epoll driver in front of `origin`.
fn epoll_log(origin: std::net::SocketAddr) -> String {
    Ringway::start(&catch_all(&[origin]), "[node]\nio_driver = \"epoll\"\n").log()
}
