//! vulcand's `rewrite` middleware against the real binary: the new path and query go upstream
//! without routing again, redirects answer 302, and edge prefix rewrites come first.

use std::net::SocketAddr;

use crate::harness::{get, request, Ringway};
use crate::origin::Origin;

/// Backends `a` and `b` behind frontends `/v1/` (with `middlewares`, JSON `Middleware` docs
/// of type rewrite with priorities in order) and `/api/`.
fn routes(a: SocketAddr, b: SocketAddr, middlewares: &[serde_json::Value]) -> String {
    let mut map = serde_json::Map::new();
    for (id, addr) in [("a", a), ("b", b)] {
        map.insert(
            format!("/vulcand/backends/{id}/backend"),
            serde_json::json!({"Type": "http"}),
        );
        map.insert(
            format!("/vulcand/backends/{id}/servers/s"),
            serde_json::json!({"URL": format!("http://{addr}")}),
        );
    }
    map.insert(
        "/vulcand/frontends/v1/frontend".into(),
        serde_json::json!({"Type": "http", "BackendId": "a", "Route": "PathPrefix(`/v1/`)"}),
    );
    map.insert(
        "/vulcand/frontends/api/frontend".into(),
        serde_json::json!({"Type": "http", "BackendId": "b", "Route": "PathPrefix(`/api/`)"}),
    );
    for (i, m) in middlewares.iter().enumerate() {
        map.insert(
            format!("/vulcand/frontends/v1/middlewares/rw{i}"),
            serde_json::json!({"Type": "rewrite", "Priority": i, "Middleware": m}),
        );
    }
    serde_json::Value::Object(map).to_string()
}

#[test]
fn the_rewritten_path_and_query_go_upstream_without_routing_again() {
    let (a, b) = (Origin::echo(), Origin::echo());
    let rw = Ringway::start(
        &routes(
            a.addr,
            b.addr,
            &[
                serde_json::json!({"Regexp": "^http://([^/]+)/v1/(.*)$", "Replacement": "http://$1/api/$2"}),
            ],
        ),
        "",
    );
    let r = get(rw.addr, "/v1/users/7?fields=name%2Cid");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "GET /api/users/7?fields=name%2Cid")
    );
    assert!(
        b.seen().is_empty(),
        "the /api/ frontend was not chosen again"
    );
    // A request the regexp does not change is forwarded as received.
    let r = get(rw.addr, "/v1");
    assert_eq!(r.status, 404);
    // Absolute-form targets rewrite the same way (the Host is the target's authority).
    let r = request(
        rw.addr,
        b"GET http://svc.local/v1/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    .expect("a response");
    assert_eq!(r.text(), "GET /api/x");
}

#[test]
fn a_redirect_rewrite_answers_302_only_when_the_url_changed() {
    let (a, b) = (Origin::echo(), Origin::echo());
    let rw = Ringway::start(
        &routes(
            a.addr,
            b.addr,
            &[
                serde_json::json!({"Regexp": "^http://old\\.example\\.com/(.*)", "Replacement": "https://new.example.com/$1", "Redirect": true}),
            ],
        ),
        "",
    );
    let r = request(
        rw.addr,
        b"GET /v1/docs?page=2 HTTP/1.1\r\nHost: old.example.com\r\nConnection: close\r\n\r\n",
    )
    .expect("a response");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/v1/docs?page=2")
    );
    assert!(a.seen().is_empty());
    // Another host: unchanged, so forwarded.
    let r = get(rw.addr, "/v1/docs");
    assert_eq!((r.status, r.text().as_str()), (200, "GET /v1/docs"));
}

#[test]
fn rewrites_chain_in_priority_order_after_the_edge_prefix_rewrite() {
    let (a, b) = (Origin::echo(), Origin::echo());
    let middlewares = [
        serde_json::json!({"Regexp": "/v1/(.*)", "Replacement": "/v2/$1"}),
        serde_json::json!({"Regexp": "/v2/users", "Replacement": "/v2/people"}),
    ];
    let edge = "[[listener.expose]]\nprefix = \"/public/\"\nrewrite = \"/v1/\"\n";
    let rw = Ringway::start_edge(&routes(a.addr, b.addr, &middlewares), edge, "");
    let r = get(rw.edge(), "/public/users?id=1");
    assert_eq!((r.status, r.text().as_str()), (200, "GET /v2/people?id=1"));
    let r = get(rw.addr, "/v1/users");
    assert_eq!(r.text(), "GET /v2/people");
}

#[test]
fn a_rewrite_that_makes_an_invalid_target_is_a_500_and_reaches_no_upstream() {
    let (a, b) = (Origin::echo(), Origin::echo());
    let rw = Ringway::start(
        &routes(
            a.addr,
            b.addr,
            &[serde_json::json!({"Regexp": "/v1/(.*)", "Replacement": "/v1/a b/$1"})],
        ),
        "",
    );
    let r = get(rw.addr, "/v1/x");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(a.seen().is_empty());
}
