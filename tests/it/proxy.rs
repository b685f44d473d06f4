//! HTTP/1.1 semantics end to end through the real binary: keep-alive and pipelining, request
//! and response bodies in both framings, bodiless responses, interim responses, protocol
//! switches, hop-by-hop fields, the fields a proxy adds, and what reaches the origin byte for
//! byte.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::{catch_all, eventually, find, get, request, Client, Ringway};
use crate::origin::{Origin, Reply};

fn proxy_to(origin: &Origin) -> Ringway {
    Ringway::start(&catch_all(&[origin.addr]), "")
}

#[test]
fn keep_alive_on_both_sides_carries_many_requests_over_one_upstream_connection() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    for i in 0..30 {
        c.send(format!("GET /item/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c
            .read_response(false)
            .expect("response on the same connection");
        assert_eq!(r.status, 200, "{}", rw.log());
        assert_eq!(r.text(), format!("GET /item/{i}"));
        assert_eq!(r.header("connection"), None, "keep-alive is the default");
    }
    assert_eq!(origin.connections(), 1);
    assert!(origin.seen().iter().all(|s| s.conn == 0 && s.version == 1));
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(
        b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /third?x=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let texts: Vec<String> = (0..3)
        .map(|_| c.read_response(false).expect("pipelined response").text())
        .collect();
    assert_eq!(texts, ["GET /first", "POST /second", "GET /third?x=1"]);
    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].body, b"hello");
}

#[test]
fn content_length_request_body_reaches_the_origin_exactly() {
    let origin = Origin::start(|s| Reply::ok(&s.body.len().to_string()));
    let rw = proxy_to(&origin);
    // Larger than one buffer, sent in two writes with a pause, so most of it is streamed.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut c = Client::connect(rw.addr);
    c.send(
        format!(
            "PUT /blob HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body[..1000]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&body[1000..]);
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}", rw.log());
    assert_eq!(r.text(), "200000");
    let seen = origin.seen();
    assert_eq!(seen[0].header("content-length"), Some("200000"));
    assert!(seen[0].body == body, "origin received a different body");

    // The connection is still usable afterwards.
    c.send(b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.read_response(false).expect("response").text(), "3");
}

#[test]
fn chunked_request_body_is_streamed_to_the_origin_as_chunks_arrive() {
    let origin = Origin::start(|s| Reply::ok(&String::from_utf8_lossy(&s.body)));
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    // The first chunk reaches the origin before the client has sent the rest.
    assert!(
        eventually(Duration::from_secs(3), || find(&origin.raw(), b"hello")
            .is_some()),
        "first chunk was not forwarded before the body ended; origin got {:?}",
        String::from_utf8_lossy(&origin.raw())
    );
    c.send(b"7\r\n, world\r\n");
    std::thread::sleep(Duration::from_millis(30));
    c.send(b"0\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}", rw.log());
    assert_eq!(r.text(), "hello, world");
    let seen = origin.seen();
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[0].header("content-length"), None);
    assert!(seen[0]
        .raw
        .ends_with(b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"));
}

#[test]
fn chunked_response_is_relayed_byte_for_byte() {
    let chunked_body = b"5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\n!!!\r\n0\r\n\r\n";
    let origin = Origin::start(move |_| {
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: a\r\n\r\n".to_vec();
        bytes.extend_from_slice(chunked_body);
        Reply::Bytes(bytes)
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /chunks HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_until(b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(head.contains("x-origin: a\r\n"), "{head}");
    let body = c
        .read_bytes(chunked_body.len())
        .expect("whole chunked body");
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(chunked_body)
    );
    // Framing ended where the origin said: the next request works.
    c.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("second response");
    assert_eq!(r.text(), "helloabcdefghijklmnopqrstuvwxyz!!!");
}

#[test]
fn content_length_response_is_relayed_byte_for_byte() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    let expected = payload.clone();
    let origin = Origin::start(move |_| {
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&payload);
        Reply::Bytes(bytes)
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    for _ in 0..2 {
        c.send(b"GET /bin HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read_response(false).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("70000"));
        assert!(r.body == expected, "body differs from what the origin sent");
    }
}

#[test]
fn head_response_relays_no_body_even_with_a_content_length() {
    let origin = Origin::start(|s| {
        if s.method == "HEAD" {
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec())
        } else {
            Reply::ok("after head")
        }
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"HEAD /doc HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).expect("HEAD response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    c.send(b"GET /doc HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("GET after HEAD");
    assert_eq!(r.text(), "after head");
}

#[test]
fn no_content_and_not_modified_have_no_body_and_the_connection_goes_on() {
    let origin = Origin::start(|s| match s.target.as_str() {
        "/204" => Reply::Bytes(b"HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n".to_vec()),
        // A 304 may carry the representation's length; no body follows it.
        "/304" => Reply::Bytes(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n".to_vec(),
        ),
        _ => Reply::ok("next"),
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"DELETE /204 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("204");
    assert_eq!((r.status, r.header("x-done")), (204, Some("yes")));
    c.send(b"GET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n");
    let r = c.read_response(false).expect("304");
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("response after 204 and 304");
    assert_eq!((r.status, r.text().as_str()), (200, "next"));
}

#[test]
fn early_hints_are_relayed_before_the_final_response() {
    let origin = Origin::start(|_| {
        Reply::Bytes(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npage"
                .to_vec(),
        )
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n");
    let hints = c.read_response(false).expect("103");
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    let r = c.read_response(false).expect("final response");
    assert_eq!((r.status, r.text().as_str()), (200, "page"));
}

#[test]
fn expect_100_continue_gets_continue_then_the_body_is_forwarded_without_expect() {
    let origin = Origin::start(|s| {
        let body = String::from_utf8_lossy(&s.body);
        Reply::status(201, &format!("got {body}"))
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let cont = c.read_response(false).expect("interim response");
    assert_eq!(cont.status, 100, "{}", rw.log());
    c.send(b"hello");
    let r = c.read_response(false).expect("final response");
    assert_eq!((r.status, r.text().as_str()), (201, "got hello"));
    let seen = origin.seen();
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("expect"), None);
}

#[test]
fn close_delimited_response_is_relayed_whole_and_the_client_connection_closes() {
    let origin = Origin::start(|_| {
        Reply::BytesThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body ends when the origin closes"
                .to_vec(),
        )
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /legacy HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "the body ends when the origin closes");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(Duration::from_secs(2)));
}

#[test]
fn websocket_upgrade_switches_to_a_byte_tunnel() {
    let origin = Origin::start(|_| {
        Reply::EchoTunnel(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec(),
        )
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let r = c.read_response(false).expect("101");
    assert_eq!(r.status, 101, "{}", rw.log());
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    let seen = origin.seen();
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert!(seen[0]
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    assert_eq!(
        seen[0].header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );

    for msg in [
        &b"\x81\x05hello"[..],
        b"not http at all\r\n\r\n",
        &[0u8; 3000],
    ] {
        c.send(msg);
        assert_eq!(c.read_bytes(msg.len()).expect("echoed bytes"), msg);
    }
}

#[test]
fn upgrade_answered_without_a_switch_stays_plain_http() {
    let origin = Origin::start(|s| match s.target.as_str() {
        "/chat" => Reply::ok("no switch"),
        t => Reply::ok(&format!("plain {t}")),
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response(false).expect("200");
    assert_eq!((r.status, r.text().as_str()), (200, "no switch"));
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("next response");
    assert_eq!((r.status, r.text().as_str()), (200, "plain /next"));
}

#[test]
fn hop_by_hop_fields_and_fields_named_in_connection_never_reach_the_origin() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    let r = request(
        rw.addr,
        b"GET /h HTTP/1.1\r\nHost: t\r\nConnection: close, X-Secret\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nProxy-Connection: keep-alive\r\nX-Secret: s3cret\r\nX-Visible: yes\r\n\r\n",
    )
    .expect("response");
    assert_eq!(r.status, 200, "{}", rw.log());
    let seen = &origin.seen()[0];
    for name in ["keep-alive", "te", "proxy-connection", "x-secret"] {
        assert_eq!(seen.header(name), None, "{name} reached the origin");
    }
    for value in seen.headers_named("connection") {
        let v = value.to_ascii_lowercase();
        assert!(
            !v.contains("close") && !v.contains("x-secret"),
            "client's Connection reached the origin: {value}"
        );
    }
    assert_eq!(seen.header("x-visible"), Some("yes"));
}

#[test]
fn forwarding_fields_are_added_for_the_origin() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    request(
        rw.addr,
        b"GET /f HTTP/1.1\r\nHost: api.example:8080\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    )
    .expect("response");
    let seen = &origin.seen()[0];
    assert_eq!(
        seen.headers_named("x-forwarded-for"),
        ["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(seen.headers_named("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.headers_named("x-forwarded-host"), ["api.example:8080"]);
}

#[test]
fn previous_hops_forwarded_proto_and_host_are_kept() {
    // A mesh hop behind the edge: the origin sees what the first hop observed, once.
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    request(
        rw.addr,
        b"GET /f HTTP/1.1\r\nHost: mesh.local\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: api.example\r\n\r\n",
    )
    .expect("response");
    let seen = &origin.seen()[0];
    assert_eq!(seen.headers_named("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.headers_named("x-forwarded-host"), ["api.example"]);
}

#[test]
fn forwarding_fields_named_in_connection_are_hop_by_hop_too() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    request(
        rw.addr,
        b"GET /f HTTP/1.1\r\nHost: api.example\r\nConnection: X-Forwarded-Host, X-Request-Id\r\n\
          X-Forwarded-Host: hop.internal\r\nX-Request-Id: hop-only\r\n\r\n",
    )
    .expect("response");
    let seen = &origin.seen()[0];
    assert_eq!(seen.headers_named("x-forwarded-host"), ["api.example"]);
    let ids = seen.headers_named("x-request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], "hop-only");
}

#[test]
fn request_id_is_generated_when_absent_and_unique() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    for _ in 0..20 {
        c.send(b"GET /id HTTP/1.1\r\nHost: t\r\n\r\n");
        c.read_response(false).expect("response");
    }
    get(rw.addr, "/id");
    let ids: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| {
            assert_eq!(s.headers_named("x-request-id").len(), 1);
            s.header("x-request-id").unwrap().to_string()
        })
        .collect();
    for id in &ids {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "not 32 hex digits: {id}"
        );
    }
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
}

#[test]
fn request_id_sent_by_the_client_is_preserved() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    request(
        rw.addr,
        b"GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123-from-client\r\n\r\n",
    )
    .expect("response");
    assert_eq!(
        origin.seen()[0].headers_named("x-request-id"),
        ["abc-123-from-client"]
    );
}

#[test]
fn host_sent_upstream_is_the_servers_by_default() {
    let origin = Origin::ok();
    let rw = proxy_to(&origin);
    request(rw.addr, b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n").expect("response");
    let seen = &origin.seen()[0];
    assert_eq!(seen.headers_named("host"), [origin.addr.to_string()]);
}

#[test]
fn host_sent_upstream_is_the_clients_with_pass_host_header() {
    let origin = Origin::ok();
    let routes = serde_json::json!({
        "/vulcand/backends/b1/backend": {"Type": "http"},
        "/vulcand/backends/b1/servers/s1": {"URL": format!("http://{}", origin.addr)},
        "/vulcand/frontends/f1/frontend": {
            "Type": "http",
            "BackendId": "b1",
            "Route": "PathPrefix(`/`)",
            "Settings": {"PassHostHeader": true}
        }
    })
    .to_string();
    let rw = Ringway::start(&routes, "");
    let r = request(rw.addr, b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n").expect("response");
    assert_eq!(r.status, 200, "{}", rw.log());
    assert_eq!(origin.seen()[0].headers_named("host"), ["api.example"]);
}

#[test]
fn http10_client_gets_a_readable_response_and_the_connection_closes() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}", rw.log());
    assert_eq!(r.text(), "GET /old");
    assert!(
        c.is_closed(Duration::from_secs(2)),
        "HTTP/1.0 closes by default"
    );
}

#[test]
fn http10_client_asking_for_keep_alive_keeps_its_connection() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    for path in ["/one", "/two"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        );
        let r = c.read_response(false).expect("response");
        assert_eq!(r.text(), format!("GET {path}"));
        assert!(r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
    }
}

#[test]
fn origin_form_request_line_is_forwarded_byte_for_byte() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let targets = [
        "/a%2Fb/%7Euser/caf%C3%A9?q=%20x+y&empty=&&z=%2F",
        "//double//slash/./dot/../x",
        "/path;matrix=1?x=1&x=2",
        "/?",
        "/UPPER/MiXeD?Key=Value",
    ];
    let mut c = Client::connect(rw.addr);
    for t in targets {
        c.send(format!("GET {t} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(c.read_response(false).expect("response").status, 200);
    }
    let seen = origin.seen();
    for (s, t) in seen.iter().zip(targets) {
        assert_eq!(s.target, t);
        assert!(
            s.raw
                .starts_with(format!("GET {t} HTTP/1.1\r\n").as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&s.raw)
        );
    }
}

#[test]
fn absolute_form_target_is_forwarded_in_origin_form() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    let r = request(
        rw.addr,
        b"GET http://api.example/users/7?full=1 HTTP/1.1\r\nHost: api.example\r\n\r\n",
    )
    .expect("response");
    assert_eq!(r.text(), "GET /users/7?full=1");
}

#[test]
fn client_asking_to_close_gets_connection_close_and_the_upstream_stays_pooled() {
    let origin = Origin::echo();
    let rw = proxy_to(&origin);
    for path in ["/bye/1", "/bye/2"] {
        let mut c = Client::connect(rw.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("response");
        assert_eq!(r.text(), format!("GET {path}"));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed(Duration::from_secs(2)));
    }
    assert_eq!(origin.connections(), 1);
}

#[test]
fn hop_by_hop_fields_of_the_response_never_reach_the_client() {
    // The origin also closes its connection; the client's keep-alive connection is unaffected.
    let origin = Origin::start(|s| {
        Reply::BytesThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nKeep-Alive: timeout=5\r\n\
                 X-Internal: secret\r\nX-Public: yes\r\nContent-Length: {}\r\n\r\n{}",
                s.target.len(),
                s.target
            )
            .into_bytes(),
        )
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    for path in ["/one", "/two"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c
            .read_response(false)
            .expect("response on the same connection");
        assert_eq!(r.text(), path);
        assert_eq!(r.header("x-public"), Some("yes"));
        assert!(r.headers_named("x-internal").is_empty());
        assert_eq!(r.header("keep-alive"), None);
        assert_eq!(
            r.header("connection"),
            None,
            "origin's Connection was relayed"
        );
    }
    assert_eq!(
        origin.connections(),
        2,
        "a closed upstream connection is not reused"
    );
}

#[test]
fn pipelined_request_after_a_refused_one_is_still_served() {
    let origin = Origin::echo();
    let routes = crate::harness::routes_json(
        &[("b1", &[origin.addr])],
        &[("api", "b1", "PathPrefix(`/api`)")],
    );
    let rw = Ringway::start(&routes, "");
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\nGET /api/x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("404").status, 404);
    let r = c
        .read_response(false)
        .expect("pipelined response after the 404");
    assert_eq!((r.status, r.text().as_str()), (200, "GET /api/x"));
}

#[test]
fn chunked_request_trailers_reach_the_origin() {
    let origin = Origin::start(|s| Reply::ok(&String::from_utf8_lossy(&s.body)));
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(
        b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
          4\r\nbody\r\n0\r\nX-Checksum: abc\r\n\r\n",
    );
    let r = c.read_response(false).expect("response");
    assert_eq!((r.status, r.text().as_str()), (200, "body"));
    assert!(origin.seen()[0]
        .raw
        .ends_with(b"4\r\nbody\r\n0\r\nX-Checksum: abc\r\n\r\n"));
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("next").status, 200);
}

#[test]
fn client_that_half_closes_after_its_request_still_gets_the_response() {
    let origin =
        Origin::start(|_| Reply::After(Duration::from_millis(100), Box::new(Reply::ok("late"))));
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.read_response(false).expect("response after half-close");
    assert_eq!((r.status, r.text().as_str()), (200, "late"));
}

#[test]
fn websocket_tunnel_closes_when_the_client_closes() {
    let origin = Origin::start(|_| {
        Reply::EchoTunnel(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        )
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_response(false).expect("101").status, 101);
    c.send(b"bye");
    assert_eq!(c.read_bytes(3).expect("echo"), b"bye");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed(Duration::from_secs(2)), "tunnel stayed open");
}

#[test]
fn idle_websocket_tunnel_is_closed_after_tunnel_idle_ms() {
    let origin = Origin::start(|_| {
        Reply::EchoTunnel(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        )
    });
    let rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[timeouts]\ntunnel_idle_ms = 300\n",
    );
    let mut c = Client::connect(rw.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.read_response(false).expect("101").status, 101);
    let since = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "idle tunnel stayed open"
    );
    assert!(since.elapsed() >= Duration::from_millis(250));
}

#[test]
fn request_pipelined_behind_a_streamed_chunked_body_is_served() {
    let origin = Origin::start(|s| {
        Reply::ok(&format!(
            "{} {}",
            s.target,
            String::from_utf8_lossy(&s.body)
        ))
    });
    let rw = proxy_to(&origin);
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"0\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).expect("first").text(), "/up abc");
    assert_eq!(c.read_response(false).expect("pipelined").text(), "/next ");
}

#[test]
fn expect_100_continue_over_the_body_limit_gets_413_instead_of_continue() {
    let origin = Origin::ok();
    let rw = Ringway::start(
        &catch_all(&[origin.addr]),
        "[limits]\nmax_body_bytes = 100\n",
    );
    let mut c = Client::connect(rw.addr);
    c.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 413);
    assert_eq!(origin.connections(), 0);
}
