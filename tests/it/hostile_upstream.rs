//! Hostile upstream responses: conflicting framing, oversized or garbage heads, early closes
//! and bodies cut short. The client must get a clean 502 when nothing was relayed yet, or a
//! closed connection when the response had started; a connection that misbehaved must never
//! carry another request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{catch_all, find, Client, Ringway};
use crate::origin::{Origin, Reply};

/// One hostile response and what the client must see.
struct Row {
    name: &'static str,
    reply: fn() -> Reply,
    /// POST when a GET would be retried (an early close says nothing was processed).
    method: &'static str,
}

fn bytes(b: &[u8]) -> Reply {
    Reply::Bytes(b.to_vec())
}

fn get(name: &'static str, reply: fn() -> Reply) -> Row {
    Row {
        name,
        reply,
        method: "GET",
    }
}

fn rows() -> Vec<Row> {
    vec![
        get("cl_and_te", || {
            bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        }),
        get("te_and_cl", || {
            bytes(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
            )
        }),
        get("two_different_lengths", || {
            bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
        }),
        get("length_with_sign", || {
            bytes(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok")
        }),
        get("length_list", || {
            bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")
        }),
        get("te_without_final_chunked", || {
            bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx")
        }),
        get("te_on_http10", || {
            bytes(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        }),
        get("bad_chunk_size_first", || {
            bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        }),
        get("chunk_size_with_0x", || {
            bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n")
        }),
        get("chunk_size_overflow", || {
            bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
        }),
        get("head_over_64k", || {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..10 {
                raw.extend_from_slice(format!("X-Big-{i}: {}\r\n", "b".repeat(7000)).as_bytes());
            }
            raw.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            Reply::Bytes(raw)
        }),
        get("too_many_fields", || {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            raw.extend_from_slice("X-F: v\r\n".repeat(300).as_bytes());
            raw.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            Reply::Bytes(raw)
        }),
        get("garbage", || bytes(b"HELLO\r\n\r\n")),
        get("bare_lf_status_line", || {
            bytes(b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok")
        }),
        get("bare_lf_everywhere", || {
            bytes(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
        }),
        get("obs_fold", || {
            bytes(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok")
        }),
        get("nul_in_field", || {
            bytes(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok")
        }),
        get("status_out_of_range", || {
            bytes(b"HTTP/1.1 999 Nope\r\nContent-Length: 2\r\n\r\nok")
        }),
        get("two_digit_status", || {
            bytes(b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok")
        }),
        get("http2_status_line", || {
            bytes(b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }),
        get("switching_protocols_unasked", || {
            bytes(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        }),
        get("close_mid_head", || {
            Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec())
        }),
        get("close_after_status_line", || {
            Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\n".to_vec())
        }),
        Row {
            name: "close_before_any_byte",
            reply: || Reply::Close,
            method: "POST",
        },
    ]
}

fn ok_or_row(s: &crate::origin::Seen, table: &[Row]) -> Reply {
    match s.target.strip_prefix("/bad/") {
        Some(name) => match table.iter().find(|r| r.name == name) {
            Some(row) => (row.reply)(),
            None => Reply::status(500, "unknown row"),
        },
        None => Reply::ok("fine"),
    }
}

#[test]
fn hostile_upstream_responses_become_502_and_the_connection_is_dropped() {
    let origin = Origin::start(|s| ok_or_row(s, &rows()));
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let table = rows();
    let mut failures = Vec::new();
    for row in &table {
        let mut problems = Vec::new();
        // Warm the pool, so the hostile response comes on a connection that was reused.
        let warm = crate::harness::get(rw.addr, "/warm");
        if warm.status != 200 {
            problems.push(format!("warm-up got {}", warm.status));
        }
        let mut c = Client::connect(rw.addr);
        let body = if row.method == "POST" {
            "Content-Length: 2\r\n\r\nhi"
        } else {
            "\r\n"
        };
        c.send(
            format!(
                "{} /bad/{} HTTP/1.1\r\nHost: a\r\n{body}",
                row.method, row.name
            )
            .as_bytes(),
        );
        match c.read_response(false) {
            Some(r) if r.status == 502 => {}
            other => problems.push(format!(
                "client got {:?}, want 502",
                other.map(|r| (r.status, r.text()))
            )),
        }
        let next = crate::harness::get(rw.addr, "/after");
        if (next.status, next.text().as_str()) != (200, "fine") {
            problems.push(format!(
                "next request got {} {:?}",
                next.status,
                next.text()
            ));
        }
        let seen = origin.seen();
        let bad = seen
            .iter()
            .rev()
            .find(|s| s.target == format!("/bad/{}", row.name));
        let after = seen.iter().rev().find(|s| s.target == "/after");
        match (bad, after) {
            (Some(bad), Some(after)) if bad.conn != after.conn => {}
            (Some(bad), Some(_)) => problems.push(format!(
                "the next request reused upstream connection {} of the hostile response",
                bad.conn
            )),
            _ => problems.push("origin did not see both requests".to_string()),
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", row.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}\n{}",
        failures.len(),
        table.len(),
        failures.join("\n"),
        rw.log()
    );
}

#[test]
fn hostile_upstream_early_close_on_a_get_is_502() {
    let origin = Origin::start(|_| Reply::Close);
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let resp = crate::harness::get(rw.addr, "/x");
    assert_eq!(resp.status, 502, "{}", resp.text());
}

#[test]
fn hostile_upstream_surplus_after_a_response_is_never_relayed() {
    let origin = Origin::start(|s| {
        if s.target == "/split" {
            // A second, unsolicited response in the same write as the first.
            bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        } else {
            Reply::ok("fine")
        }
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /split HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(false).expect("first response");
    assert_eq!((r.status, r.text().as_str()), (200, "first"));
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).expect("second response");
    assert_eq!((r.status, r.text().as_str()), (200, "fine"));
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].conn, seen[1].conn,
        "connection with surplus bytes reused"
    );
}

/// What a scripted origin does after reading a request head (requests here have no body).
enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    Close,
}

/// An origin that plays a script per request, for timings the recording origin cannot
/// express. The script gets the connection number and the request's index on it.
struct ScriptedOrigin {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl ScriptedOrigin {
    fn start(script: fn(usize, usize) -> Vec<Step>) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let conn = counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || play(stream, conn, script));
            }
        });
        ScriptedOrigin { addr, conns }
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

fn play(mut stream: TcpStream, conn: usize, script: fn(usize, usize) -> Vec<Step>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for index in 0.. {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..end);
        for step in script(conn, index) {
            match step {
                Step::Write(b) => {
                    if stream.write_all(&b).is_err() {
                        return;
                    }
                }
                Step::Sleep(d) => std::thread::sleep(d),
                Step::Close => return,
            }
        }
    }
}

/// Read everything until EOF (or a quiet `limit`).
fn read_to_close(c: &mut Client, limit: Duration) -> (Vec<u8>, bool) {
    c.stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[test]
fn hostile_upstream_body_cut_after_the_head_closes_the_client() {
    let origin = Origin::start(|_| {
        Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part".to_vec())
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n");
    let (got, closed) = read_to_close(&mut c, Duration::from_secs(5));
    assert!(closed, "client connection left open after a truncated body");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("Content-Length: 100\r\n"), "{text:?}");
    let body_at = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert_eq!(
        &got[body_at..],
        b"only-part",
        "body shorter than advertised, then EOF"
    );
}

#[test]
fn hostile_upstream_chunked_body_broken_after_the_head_closes_the_client() {
    let origin = ScriptedOrigin::start(|_, _| {
        vec![
            Step::Write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            ),
            Step::Sleep(Duration::from_millis(50)),
            Step::Write(b"zz\r\nworld\r\n0\r\n\r\n".to_vec()),
            Step::Sleep(Duration::from_secs(2)),
        ]
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /chunks HTTP/1.1\r\nHost: a\r\n\r\n");
    let (got, closed) = read_to_close(&mut c, Duration::from_secs(5));
    assert!(
        closed,
        "client connection left open after a broken chunked body"
    );
    let body_at = find(&got, b"\r\n\r\n").expect("a head") + 4;
    let body = &got[body_at..];
    assert!(
        body.starts_with(b"5\r\nhello\r\n"),
        "{:?}",
        String::from_utf8_lossy(body)
    );
    assert!(
        find(body, b"0\r\n\r\n").is_none(),
        "the client must not see a complete chunked body: {:?}",
        String::from_utf8_lossy(body)
    );
}

#[test]
fn hostile_upstream_unsolicited_bytes_on_an_idle_connection_are_never_relayed() {
    // Each connection: answer its first request, then, while idle in ringway's pool, send a
    // response nobody asked for; any later request is answered properly.
    let origin = ScriptedOrigin::start(|_, index| {
        if index == 0 {
            vec![
                Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst".to_vec()),
                Step::Sleep(Duration::from_millis(50)),
                Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
            ]
        } else {
            vec![Step::Write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond".to_vec(),
            )]
        }
    });
    // Both event loops: io_uring learns of the bytes from a poll armed on the idle
    // connection, epoll from a peek before reuse.
    for (driver, node) in crate::harness::DRIVERS {
        let rw = Ringway::start(&catch_all(&[origin.addr]), node);
        let first = crate::harness::get(rw.addr, "/one");
        assert_eq!(
            (first.status, first.text().as_str()),
            (200, "first"),
            "{driver}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let second = crate::harness::get(rw.addr, "/two");
        assert_ne!(
            second.text(),
            "smuggled",
            "{driver}: an unsolicited response from a pooled connection was relayed as the answer"
        );
        assert_eq!(second.status, 200, "{driver}: {}", second.text());
    }
    assert!(origin.connections() >= 2);
}

#[test]
fn hostile_upstream_cut_after_the_head_in_a_later_read_closes_the_client() {
    let origin = ScriptedOrigin::start(|_, _| {
        vec![
            Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
            Step::Sleep(Duration::from_millis(50)),
            Step::Close,
        ]
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /late-cut HTTP/1.1\r\nHost: a\r\n\r\n");
    let (got, closed) = read_to_close(&mut c, Duration::from_secs(5));
    assert!(closed, "client connection left open");
    let body_at = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert_eq!(&got[body_at..], b"abc");
}

#[test]
fn hostile_upstream_repeated_identical_length_reaches_the_client_once() {
    let origin = Origin::start(|_| {
        bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
    });
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let r = crate::harness::get(rw.addr, "/twice");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.headers_named("content-length"), ["2"]);
}
