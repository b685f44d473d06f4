//! Protocol upgrades against the real binary and an origin that switches to whatever it is
//! asked for (as an h2c-speaking server does): h2c is never forwarded, an edge rule forwards
//! only the upgrades it lists, and a 101 to a protocol the client did not offer is a 502.

use std::time::{Duration, Instant};

use crate::harness::{catch_all, Client, Response, Ringway};
use crate::origin::{Origin, Seen};

/// What an h2c smuggling client sends: an exposed path, asking to switch to cleartext HTTP/2.
const H2C_UPGRADE: &[u8] = b"GET /public/x HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\n\
    HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\
    X-Forwarded-For: 10.9.9.9\r\n\r\n";

/// The HTTP/2 preface and a HEADERS-looking frame for a path no rule exposes, as the client
/// would send them once the tunnel is open.
const H2_AFTER_SWITCH: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\
    \x00\x00\x0c\x01\x05\x00\x00\x00\x01DELETE /admin/users/1";

/// `/public/` for GET (no upgrades) and `/ws/` allowing WebSocket.
const EDGE_RULES: &str = "\
[[listener.expose]]
prefix = \"/public/\"
methods = [\"GET\"]

[[listener.expose]]
prefix = \"/ws/\"
upgrade = [\"websocket\"]
";

fn websocket(path: &str, upgrade: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-Forwarded-For: 10.9.9.9\r\n\r\n"
    )
    .into_bytes()
}

/// The request the origin received last.
fn last(origin: &Origin) -> Seen {
    origin.seen().pop().expect("the origin got a request")
}

/// The upstream saw a plain HTTP/1.1 request: no upgrade offer and no h2c settings.
fn assert_plain(s: &Seen) {
    for name in ["upgrade", "http2-settings"] {
        assert_eq!(s.header(name), None, "{name} reached the origin: {s:?}");
    }
    let connection = s.header("connection").unwrap_or("").to_ascii_lowercase();
    assert!(!connection.contains("upgrade"), "{s:?}");
}

/// Send `raw` on a fresh connection and read the answer.
fn ask(addr: std::net::SocketAddr, raw: &[u8]) -> (Client, Response) {
    let mut c = Client::connect(addr);
    c.send(raw);
    let r = c.read_response(false).expect("a response");
    (c, r)
}

#[test]
fn h2c_smuggling_through_an_edge_meets_plain_http_and_its_rules() {
    let origin = Origin::switching(None);
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), EDGE_RULES, "");

    let (mut c, r) = ask(rw.edge(), H2C_UPGRADE);
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_eq!(r.header("upgrade"), None);
    let s = last(&origin);
    assert_plain(&s);
    // The request itself crossed the trust boundary like any other.
    assert_eq!(s.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.header("x-request-id").map(str::len), Some(32));

    // The client goes on as if the switch had happened: ringway reads HTTP/1.1, refuses the
    // preface and closes; nothing of it reaches the origin.
    c.send(H2_AFTER_SWITCH);
    let refused = c.read_response(false).expect("an answer to the preface");
    assert!(
        (400..500).contains(&refused.status) || refused.status == 505,
        "{}",
        refused.status
    );
    assert!(c.is_closed(Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(origin.seen().len(), 1);
    assert!(origin.tunnelled().is_empty());
    let raw = String::from_utf8_lossy(&origin.raw()).into_owned();
    assert!(!raw.contains("PRI *") && !raw.contains("/admin"), "{raw}");
}

#[test]
fn h2c_is_never_forwarded_on_a_mesh_listener_while_websocket_still_is() {
    let origin = Origin::switching(None);
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");

    let (_, r) = ask(rw.addr, H2C_UPGRADE);
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_plain(&last(&origin));
    // Offered together with h2c, only the other protocol goes on.
    let (_, r) = ask(rw.addr, &websocket("/a", "h2c, websocket"));
    assert_eq!(r.status, 101);
    assert_eq!(last(&origin).header("upgrade"), Some("websocket"));

    let (mut c, r) = ask(rw.addr, &websocket("/chat", "websocket"));
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    c.send(b"frame-1");
    assert_eq!(c.read_bytes(7).as_deref(), Some(&b"frame-1"[..]));
    assert_eq!(origin.tunnelled(), b"frame-1");
}

#[test]
fn an_edge_rule_forwards_only_the_upgrades_it_lists() {
    let origin = Origin::switching(None);
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), EDGE_RULES, "");
    let edge = rw.edge();

    // A rule without `upgrade`: the request is served as plain HTTP/1.1.
    let (_, r) = ask(edge, &websocket("/public/chat", "websocket"));
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_plain(&last(&origin));

    // The rule that lists websocket: the switch happens, after the edge's own rules ran on
    // the request that asked for it.
    let (mut c, r) = ask(edge, &websocket("/ws/chat", "websocket"));
    assert_eq!(r.status, 101);
    let s = last(&origin);
    assert_eq!(s.header("upgrade"), Some("websocket"));
    assert_eq!(s.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.header("x-request-id").map(str::len), Some(32));
    c.send(b"hello through the edge");
    assert_eq!(
        c.read_bytes(22).as_deref(),
        Some(&b"hello through the edge"[..])
    );
    assert_eq!(origin.tunnelled(), b"hello through the edge");

    // Other protocols on that rule are removed, h2c included.
    let (_, r) = ask(edge, &websocket("/ws/chat", "h2c"));
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_plain(&last(&origin));
    let (_, r) = ask(edge, &websocket("/ws/chat", "foo/1, WebSocket"));
    assert_eq!(r.status, 101);
    assert_eq!(last(&origin).header("upgrade"), Some("WebSocket"));
    // A refused method or hidden path is refused before any switch.
    let (_, r) = ask(edge, &websocket("/internal/ws", "websocket"));
    assert_eq!(r.status, 404);
}

/// Wait until the origin has seen `n` connections end.
fn wait_ended(origin: &Origin, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if origin.ended() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_101_to_a_protocol_the_client_did_not_offer_is_a_502_and_closes_the_upstream() {
    // Switches to h2c whatever it is asked, and even when not asked.
    let origin = Origin::switching(Some("h2c"));
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), EDGE_RULES, "");

    let cases: [(std::net::SocketAddr, Vec<u8>); 4] = [
        (rw.addr, websocket("/chat", "websocket")),
        // The client offered h2c; ringway removed it, so the switch was not asked for.
        (rw.addr, H2C_UPGRADE.to_vec()),
        (rw.edge(), websocket("/public/chat", "websocket")),
        (
            rw.edge(),
            b"GET /public/x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
    ];
    for (i, (addr, raw)) in cases.iter().enumerate() {
        let (mut c, r) = ask(*addr, raw);
        assert_eq!(r.status, 502, "case {i}: {}", r.text());
        assert_eq!(r.text(), "invalid response from upstream\n");
        assert!(
            wait_ended(&origin, i + 1),
            "case {i}: the upstream connection stays open"
        );
        c.send(b"anything");
        assert!(origin.tunnelled().is_empty(), "case {i}");
    }
    let raw = String::from_utf8_lossy(&origin.raw()).into_owned();
    assert!(!raw.contains("anything"), "{raw}");
}
