//! Edge listeners against the real binary: only exposed paths reach a service, prefixes are
//! rewritten byte for byte, nginx-style `limit_req` throttling, and forwarding fields from
//! clients replaced at the trust boundary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::{get, request, routes_json, Client, Ringway};
use crate::origin::Origin;

/// `users` behind `/user-service/`, `api` behind `/api/`, `internal` behind `/internal`.
fn three_services(users: &Origin, api: &Origin, internal: &Origin) -> String {
    routes_json(
        &[
            ("users", &[users.addr]),
            ("api", &[api.addr]),
            ("internal", &[internal.addr]),
        ],
        &[
            ("users", "users", "PathPrefix(`/user-service/`)"),
            ("api", "api", "PathPrefix(`/api/`)"),
            ("internal", "internal", "PathPrefix(`/internal`)"),
        ],
    )
}

const USERS_AND_API: &str = "\
[[listener.expose]]
prefix = \"/users/\"
methods = [\"GET\", \"POST\"]
rewrite = \"/user-service/users/\"

[[listener.expose]]
regex = \"^/api/v[12]/\"
";

fn send(addr: SocketAddr, raw: &str) -> crate::harness::Response {
    request(addr, raw.as_bytes()).expect("a response")
}

#[test]
fn only_exposed_paths_and_methods_reach_a_service() {
    let (users, api, internal) = (Origin::echo(), Origin::echo(), Origin::echo());
    let rw = Ringway::start_edge(&three_services(&users, &api, &internal), USERS_AND_API, "");
    let edge = rw.edge();

    let r = get(edge, "/internal/secret");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.text(), "no route matches this request\n");
    let r = get(edge, "/api/v3/x");
    assert_eq!(r.status, 404);
    assert!(internal.seen().is_empty() && api.seen().is_empty());
    // The mesh listener of the same node serves every route.
    assert_eq!(get(rw.addr, "/internal/secret").status, 200);
    assert_eq!(internal.seen().len(), 1);

    let r = get(edge, "/users/1");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "GET /user-service/users/1")
    );
    let r = send(
        edge,
        "HEAD /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "GET allows HEAD");
    let r = send(
        edge,
        "DELETE /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD"));
    let r = get(edge, "/api/v2/orders?id=3");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "GET /api/v2/orders?id=3")
    );
    let r = send(
        edge,
        "PATCH /api/v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(r.status, 200, "a rule without methods allows any method");
    assert_eq!(users.seen().len(), 2);
    assert_eq!(api.seen().len(), 2);
}

#[test]
fn trace_is_refused_on_edge_listeners_and_forwarded_on_the_mesh() {
    let (users, api, internal) = (Origin::echo(), Origin::echo(), Origin::echo());
    let rw = Ringway::start_edge(&three_services(&users, &api, &internal), USERS_AND_API, "");
    let trace = |addr, path: &str| {
        send(
            addr,
            &format!("TRACE {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
    };
    let r = trace(rw.edge(), "/users/1");
    assert_eq!(
        (r.status, r.header("allow")),
        (405, Some("GET, POST, HEAD"))
    );
    let r = trace(rw.edge(), "/api/v1/x");
    assert_eq!(r.status, 405);
    assert!(!r.header("allow").unwrap_or("").contains("TRACE"));
    let r = trace(rw.edge(), "/internal/x");
    assert_eq!((r.status, r.header("allow")), (405, Some("")));
    assert!(users.seen().is_empty() && api.seen().is_empty() && internal.seen().is_empty());

    let r = trace(rw.addr, "/internal/x");
    assert_eq!((r.status, r.text().as_str()), (200, "TRACE /internal/x"));
}

#[test]
fn prefix_rewrites_keep_the_rest_of_the_target_byte_for_byte() {
    let (users, api, internal) = (Origin::echo(), Origin::echo(), Origin::echo());
    let rw = Ringway::start_edge(&three_services(&users, &api, &internal), USERS_AND_API, "");
    let edge = rw.edge();
    for (sent, forwarded) in [
        ("/users/42?x=1&y=%2F", "/user-service/users/42?x=1&y=%2F"),
        (
            "/users/a%2Fb/c%20d;p=1",
            "/user-service/users/a%2Fb/c%20d;p=1",
        ),
        ("/users/", "/user-service/users/"),
        ("/users/?", "/user-service/users/?"),
        (
            "/users/%7Euser?q=%C3%A9&&",
            "/user-service/users/%7Euser?q=%C3%A9&&",
        ),
    ] {
        let r = get(edge, sent);
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.text(), format!("GET {forwarded}"), "{sent}");
    }
    // The origin received exactly that request line.
    let raw = String::from_utf8_lossy(&users.seen()[0].raw).into_owned();
    assert!(
        raw.starts_with("GET /user-service/users/42?x=1&y=%2F HTTP/1.1\r\n"),
        "{raw}"
    );
    // Absolute-form and HTTP/1.0 requests are rewritten the same way.
    let r = send(
        edge,
        "GET http://shop.example/users/7?q HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.text(), "GET /user-service/users/7?q");
    let r = send(edge, "GET /users/8 HTTP/1.0\r\nHost: t\r\n\r\n");
    assert_eq!(r.text(), "GET /user-service/users/8");
    assert_eq!(users.seen().last().unwrap().version, 0);

    // The prefix is matched as received: no boundary guessing, no decoding.
    for hidden in ["/users", "/usersX/1", "/%75sers/1", "/Users/1"] {
        assert_eq!(get(edge, hidden).status, 404, "{hidden}");
    }
    // Dot segments could walk out of the exposed prefix behind a normalising server.
    for dotted in [
        "/users/../internal/x",
        "/users/%2e%2e/internal/x",
        "/users/./1",
        // ...and behind one that reads `\`, `%2F` or `%5C` as a slash.
        "/users/..\\internal/x",
        "/users/..%2Finternal/x",
        "/users/%2e%2e%5cinternal/x",
    ] {
        assert_eq!(get(edge, dotted).status, 400, "{dotted}");
    }
    assert!(internal.seen().is_empty());
}

#[test]
fn routing_sees_the_rewritten_path() {
    // Only the rewritten path has a route: without the rewrite this would be a 404.
    let origin = Origin::echo();
    let routes = routes_json(
        &[("b", &[origin.addr])],
        &[("f", "b", "Path(`/svc/items/<int:id>`)")],
    );
    let rw = Ringway::start_edge(
        &routes,
        "[[listener.expose]]\nprefix = \"/items/\"\nrewrite = \"/svc/items/\"\n",
        "",
    );
    assert_eq!(get(rw.edge(), "/items/12").text(), "GET /svc/items/12");
    assert_eq!(get(rw.edge(), "/items/x").status, 404);
    assert_eq!(get(rw.addr, "/items/12").status, 404);
}

#[test]
fn nginx_limit_req_burst_nodelay_admits_the_burst_then_the_rate() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(
        &routes,
        "[[listener.expose]]\nprefix = \"/\"\nrate = \"10r/s\"\nburst = 5\nnodelay = true\n",
        "",
    );
    let mut c = Client::connect(rw.edge());
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read_response(false).expect("a response");
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            assert!(r.text().contains("10r/s, burst 5"), "{}", r.text());
        }
        statuses.push(r.status);
    }
    let took = started.elapsed();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    // nginx: burst=5 nodelay lets the served request plus 5 excess ones through back to back.
    // One more token arrives every 100 ms while the burst is sent.
    let refill = (took.as_millis() / 100) as usize;
    assert!(
        (6..=6 + refill).contains(&admitted),
        "{admitted} admitted in {took:?}: {statuses:?}"
    );
    assert!(statuses[..6].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );

    // Then the rate: about ten a second.
    let until = Instant::now() + Duration::from_secs(1);
    let mut later = 0;
    while Instant::now() < until {
        c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        if c.read_response(false).expect("a response").status == 200 {
            later += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        (8..=12).contains(&later),
        "{later} admitted in the next second"
    );
    assert_eq!(origin.seen().len(), admitted + later);
}

#[test]
fn throttle_refusals_use_the_profiles_status() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(
        &routes,
        "[[listener.expose]]\nprefix = \"/\"\nrate = \"1r/m\"\n",
        "[throttle]\nreject_status = 503\n",
    );
    assert_eq!(get(rw.edge(), "/").status, 200);
    assert_eq!(get(rw.edge(), "/").status, 503);
    // The mesh listener has no such limit.
    assert_eq!(get(rw.addr, "/").status, 200);
}

const SPOOFED: &str = "GET /users/1 HTTP/1.1\r\nHost: shop.example\r\n\
    X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
    X-Forwarded-Port: 1\r\nForwarded: for=1.2.3.4\r\nX-Request-Id: abc\r\nConnection: close\r\n\r\n";

#[test]
fn client_forwarding_fields_are_replaced_at_the_edge() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(&routes, "[[listener.expose]]\nprefix = \"/users/\"\n", "");
    assert_eq!(send(rw.edge(), SPOOFED).status, 200);
    let seen = origin.seen().pop().unwrap();
    let one = |name: &str| {
        let v = seen.headers_named(name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        v[0].to_string()
    };
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "http");
    assert_eq!(one("x-forwarded-host"), "shop.example");
    assert_eq!(one("x-forwarded-port"), rw.edge().port().to_string());
    assert_eq!(one("forwarded"), "for=127.0.0.1;proto=http");
    let id = one("x-request-id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );

    // The mesh listener keeps the previous hop's fields, as before.
    let mesh = SPOOFED.replace("/users/1", "/x");
    assert_eq!(send(rw.addr, &mesh).status, 200);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    assert_eq!(seen.header("x-request-id"), Some("abc"));
}

#[test]
fn trusted_proxies_keep_and_extend_forwarding_fields() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(
        &routes,
        "trusted_proxies = [\"127.0.0.0/8\"]\n[[listener.expose]]\nprefix = \"/users/\"\n",
        "",
    );
    assert_eq!(send(rw.edge(), SPOOFED).status, 200);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(
        seen.headers_named("x-forwarded-for"),
        ["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(seen.headers_named("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.headers_named("x-forwarded-host"), ["evil.example"]);
    assert_eq!(seen.headers_named("x-forwarded-port"), ["1"]);
    assert_eq!(seen.headers_named("forwarded"), ["for=1.2.3.4"]);
    assert_eq!(seen.headers_named("x-request-id"), ["abc"]);
}

#[test]
fn edge_listeners_hold_heads_to_stricter_limits() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(&routes, "[[listener.expose]]\nprefix = \"/\"\n", "");
    // 20 KiB of fields: over the edge's 16 KiB, under the mesh's 32 KiB.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(send(rw.edge(), &big).status, 431);
    assert_eq!(send(rw.addr, &big).status, 200);
    let fields: String = (0..70).map(|i| format!("X-F{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}Connection: close\r\n\r\n");
    assert_eq!(send(rw.edge(), &many).status, 431);
    assert_eq!(send(rw.addr, &many).status, 200);
}

#[test]
fn bad_expose_rules_stop_the_node_at_start_up_with_file_and_key() {
    let dir = crate::harness::TempDir::new("edge-bad");
    dir.write("routes.json", "{}");
    let profile = dir.write(
        "p.toml",
        "[[listener]]\nname = \"public\"\naddr = \"127.0.0.1:1\"\nrole = \"edge\"\n\
         [[listener.expose]]\nregex = \"^/api/(\"\n\
         [routes]\nsource = \"file\"\nfile = \"routes.json\"\n",
    );
    let out = crate::harness::ringway(&["run", "--profile", profile.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("p.toml") && err.contains("listener[0].expose[0].regex"),
        "{err}"
    );
}

#[test]
fn nginx_limit_req_without_nodelay_paces_the_burst_and_refuses_beyond_it() {
    let origin = Origin::ok();
    let routes = routes_json(&[("b", &[origin.addr])], &[("f", "b", "PathPrefix(`/`)")]);
    let rw = Ringway::start_edge(
        &routes,
        "[[listener.expose]]\nprefix = \"/\"\nrate = \"10r/s\"\nburst = 5\n",
        "",
    );
    // Ten clients at once: the first goes through, five wait their turn at 10 r/s (nginx's
    // delayed excess), the other four are refused at once.
    let edge = rw.edge();
    let started = Instant::now();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let r = get(edge, "/x");
                (r.status, started.elapsed())
            })
        })
        .collect();
    let mut results: Vec<(u16, Duration)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    results.sort_by_key(|r| r.1);
    let ok: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let refused = results.iter().filter(|r| r.0 == 429).count();
    assert_eq!((ok.len(), refused), (6, 4), "{results:?}");
    // The sixth admitted request waited for five intervals of 100 ms.
    let last = *ok.last().unwrap();
    assert!(
        last >= Duration::from_millis(450) && last < Duration::from_millis(1500),
        "the paced burst took {last:?}: {results:?}"
    );
    assert!(
        ok[0] < Duration::from_millis(200),
        "the first one is not delayed: {results:?}"
    );
    assert_eq!(origin.seen().len(), 6);
}
