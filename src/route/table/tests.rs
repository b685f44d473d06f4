//! Compiling vulcand documents, precedence, conflicts and skipped values.

use std::time::Duration;

use super::*;

use crate::route::expr::tests::Req;

fn get<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    Req {
        method: "GET",
        host,
        path,
        headers: &[],
    }
}

/// A key/value set with backend `b1` (one server) plus the given entries.
fn kv(entries: &[(&str, &str)]) -> KvSet {
    let mut kv = KvSet {
        revision: 7,
        ..KvSet::default()
    };
    kv.entries.insert(
        "/vulcand/backends/b1/backend".into(),
        r#"{"Type":"http"}"#.into(),
    );
    kv.entries.insert(
        "/vulcand/backends/b1/servers/s1".into(),
        r#"{"URL":"http://127.0.0.1:5000"}"#.into(),
    );
    for (k, v) in entries {
        kv.entries.insert(k.to_string(), v.to_string());
    }
    kv
}

fn frontend_doc(route: &str, priority: i64) -> String {
    serde_json::json!({"Type":"http","BackendId":"b1","Route":route,"Priority":priority})
        .to_string()
}

/// Compile frontends `(id, route, priority)` bound to `b1`.
fn table(frontends: &[(&str, &str, i64)]) -> Compiled {
    let docs: Vec<(String, String)> = frontends
        .iter()
        .map(|(id, route, prio)| {
            (
                format!("/vulcand/frontends/{id}/frontend"),
                frontend_doc(route, *prio),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = docs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let compiled = compile(&kv(&refs), &CompileOptions::default());
    assert!(
        compiled.report.skipped.is_empty(),
        "{:?}",
        compiled.report.skipped
    );
    compiled
}

fn winner(compiled: &Compiled, req: &Req) -> Option<String> {
    compiled.table.lookup(req).map(|f| f.id.to_string())
}

fn order(compiled: &Compiled) -> Vec<&str> {
    compiled.table.frontends().iter().map(|f| &*f.id).collect()
}

#[test]
fn vulcand_sample_documents_compile_verbatim() {
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/backends/b2/backend",
                r#"{"Id":"b2","Type":"http","Settings":{"Timeouts":{"Read":"5s","Dial":"5s","TLSHandshake":"10s"},"KeepAlive":{"Period":"30s","MaxIdleConnsPerHost":12}}}"#,
            ),
            (
                "/vulcand/backends/b2/servers/srv1",
                r#"{"Id":"srv1","URL":"http://10.0.0.5:5000"}"#,
            ),
            (
                "/vulcand/backends/b2/servers/srv2",
                r#"{"URL":"http://10.0.0.6:5000","Weight":3}"#,
            ),
            (
                "/vulcand/frontends/f1/frontend",
                r#"{"Id":"f1","Type":"http","BackendId":"b2","Route":"PathRegexp(`/users/.*`)","Settings":{"PassHostHeader":true,"TrustForwardHeader":false,"Hostname":"","Limits":{"MaxMemBodyBytes":0,"MaxBodyBytes":1048576},"FailoverPredicate":"IsNetworkError() && Attempts() <= 2"}}"#,
            ),
            (
                "/vulcand/frontends/f1/middlewares/rl1",
                r#"{"Id":"rl1","Priority":1,"Type":"ratelimit","Middleware":{"Requests":100,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"}}"#,
            ),
        ]),
        &CompileOptions::default(),
    );
    assert_eq!(compiled.report, Report::default());
    let table = &compiled.table;
    assert_eq!(table.revision(), 7);
    let f = table
        .lookup(&get("any", "/users/42"))
        .expect("f1 routes /users/");
    assert_eq!(&*f.id, "f1");
    assert!(f.settings.pass_host_header);
    assert!(!f.settings.trust_forward_header);
    assert_eq!(f.settings.max_body_bytes, Some(1_048_576));
    assert_eq!(f.settings.hostname, None);
    assert_eq!(
        f.settings.failover.text(),
        Some("IsNetworkError() && Attempts() <= 2")
    );
    assert_eq!(f.middlewares.len(), 1);
    assert_eq!(f.middlewares[0].kind, "ratelimit");
    assert_eq!(f.middlewares[0].config["Requests"], 100);
    let b = table.backend(f.backend);
    assert_eq!(&*b.id, "b2");
    assert_eq!(b.settings.read_timeout, Some(Duration::from_secs(5)));
    assert_eq!(b.settings.dial_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        b.settings.tls_handshake_timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(b.settings.keepalive_period, Some(Duration::from_secs(30)));
    assert_eq!(b.settings.max_idle_per_host, Some(12));
    let servers: Vec<_> = b
        .servers
        .iter()
        .map(|s| (&*s.id, s.addr.to_string(), s.authority.as_str(), s.weight))
        .collect();
    assert_eq!(
        servers,
        [
            ("srv1", "10.0.0.5:5000".to_string(), "10.0.0.5:5000", 1),
            ("srv2", "10.0.0.6:5000".to_string(), "10.0.0.6:5000", 3)
        ]
    );
    assert!(table.lookup(&get("any", "/other")).is_none());
}

#[test]
fn an_empty_set_compiles_to_an_empty_table() {
    let compiled = compile(&KvSet::default(), &CompileOptions::default());
    assert!(compiled.table.frontends().is_empty());
    assert_eq!(compiled.report, Report::default());
    assert!(compiled.table.lookup(&get("a", "/")).is_none());
    assert!(RouteTable::empty().lookup(&get("a", "/")).is_none());
}

#[test]
fn keys_outside_the_prefix_are_ignored_and_unknown_keys_under_it_skipped() {
    let compiled = compile(
        &kv(&[
            ("/elsewhere/frontends/f1/frontend", "not json"),
            ("/vulcand/listeners/l1", "{}"),
            ("/vulcand/hosts/h1/host", "{}"),
        ]),
        &CompileOptions::default(),
    );
    let keys: Vec<_> = compiled.report.skipped.iter().map(|s| &s.key[..]).collect();
    assert_eq!(keys, ["/vulcand/hosts/h1/host", "/vulcand/listeners/l1"]);
    // A host document is read (this one is not valid); a listener key is unknown.
    assert!(compiled.report.skipped[0]
        .reason
        .contains("invalid host document"));
    assert!(compiled.report.skipped[1].reason.starts_with("unknown key"));
}

#[test]
fn a_custom_prefix_is_honoured() {
    let mut set = KvSet::default();
    set.entries.insert(
        "/mesh/backends/b/backend".into(),
        r#"{"Type":"http"}"#.into(),
    );
    set.entries.insert(
        "/mesh/frontends/f/frontend".into(),
        r#"{"Type":"http","BackendId":"b","Route":"Path(`/`)"}"#.into(),
    );
    let opts = CompileOptions {
        prefix: "/mesh/".into(),
        ..CompileOptions::default()
    };
    let compiled = compile(&set, &opts);
    assert_eq!(compiled.report, Report::default());
    assert_eq!(order(&compiled), ["f"]);
}

#[test]
fn bad_values_are_skipped_and_the_rest_still_compiles() {
    let compiled = compile(
        &kv(&[
            ("/vulcand/backends/bad/backend", "{not json"),
            ("/vulcand/backends/tcp/backend", r#"{"Type":"tcp"}"#),
            (
                "/vulcand/backends/slow/backend",
                r#"{"Type":"http","Settings":{"Timeouts":{"Read":"5 seconds"}}}"#,
            ),
            (
                "/vulcand/backends/b1/servers/ws",
                r#"{"URL":"ws://10.0.0.5:80"}"#,
            ),
            (
                "/vulcand/backends/b1/servers/path",
                r#"{"URL":"http://10.0.0.5:80/api"}"#,
            ),
            (
                "/vulcand/backends/b1/servers/zero",
                r#"{"URL":"http://10.0.0.5:80","Weight":0}"#,
            ),
            (
                "/vulcand/backends/ghost/servers/s1",
                r#"{"URL":"http://10.0.0.5:80"}"#,
            ),
            (
                "/vulcand/frontends/types/frontend",
                r#"{"Type":"http","BackendId":1}"#,
            ),
            (
                "/vulcand/frontends/orphan/frontend",
                r#"{"Type":"http","BackendId":"ghost","Route":"Path(`/o`)"}"#,
            ),
            (
                "/vulcand/frontends/expr/frontend",
                r#"{"Type":"http","BackendId":"b1","Route":"Path(`/x`) &&"}"#,
            ),
            (
                "/vulcand/frontends/ok/frontend",
                &frontend_doc("Path(`/ok`)", 0),
            ),
            (
                "/vulcand/frontends/ok/middlewares/m1",
                r#"{"Type":"ratelimit","Middleware":"#,
            ),
            (
                "/vulcand/frontends/gone/middlewares/m1",
                r#"{"Type":"ratelimit","Priority":1,"Middleware":{"Requests":1,"PeriodSeconds":1,"Variable":"client.ip"}}"#,
            ),
        ]),
        &CompileOptions::default(),
    );
    let reasons: Vec<(&str, &str)> = compiled
        .report
        .skipped
        .iter()
        .map(|s| (s.key.as_str(), s.reason.as_str()))
        .collect();
    let expect = [
        ("/vulcand/backends/b1/servers/path", "cannot have a path"),
        (
            "/vulcand/backends/b1/servers/ws",
            "scheme \"ws\" not supported",
        ),
        (
            "/vulcand/backends/b1/servers/zero",
            "Weight must be at least 1",
        ),
        (
            "/vulcand/backends/bad/backend",
            "invalid document: key must be a string",
        ),
        (
            "/vulcand/backends/ghost/servers/s1",
            "backend \"ghost\" does not exist",
        ),
        (
            "/vulcand/backends/slow/backend",
            "Settings.Timeouts.Read: invalid duration",
        ),
        (
            "/vulcand/backends/tcp/backend",
            "Type \"tcp\" is not supported",
        ),
        (
            "/vulcand/frontends/expr/frontend",
            "bad route expression \"Path(`/x`) &&\": at byte 13: expected a matcher",
        ),
        (
            "/vulcand/frontends/gone/middlewares/m1",
            "frontend \"gone\" does not exist",
        ),
        (
            "/vulcand/frontends/ok/middlewares/m1",
            "invalid document: EOF",
        ),
        (
            "/vulcand/frontends/orphan/frontend",
            "BackendId \"ghost\" does not exist",
        ),
        (
            "/vulcand/frontends/types/frontend",
            "invalid type: integer `1`, expected a string",
        ),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for ((key, reason), (want_key, want)) in reasons.iter().zip(expect) {
        assert_eq!(*key, want_key);
        assert!(reason.contains(want), "{key}: {reason}");
    }
    assert_eq!(order(&compiled), ["ok"]);
    assert_eq!(winner(&compiled, &get("h", "/ok")).as_deref(), Some("ok"));
    assert_eq!(compiled.table.backends().len(), 1);
    assert_eq!(compiled.table.backends()[0].servers.len(), 1);
}

#[test]
fn exact_path_beats_placeholders_beats_prefix_beats_regex() {
    let compiled = table(&[
        ("regex", "PathRegexp(`^/users`)", 0),
        ("prefix", "PathPrefix(`/users`)", 0),
        ("param", "Path(`/users/<id>`)", 0),
        ("int", "Path(`/users/<int:id>`)", 0),
        ("exact", "Path(`/users/me`)", 0),
    ]);
    assert_eq!(
        order(&compiled),
        ["exact", "int", "param", "prefix", "regex"]
    );
    let w = |path| winner(&compiled, &get("h", path));
    assert_eq!(w("/users/me").as_deref(), Some("exact"));
    assert_eq!(w("/users/42").as_deref(), Some("int"));
    assert_eq!(w("/users/bob").as_deref(), Some("param"));
    assert_eq!(w("/users/bob/x").as_deref(), Some("prefix"));
    assert_eq!(w("/usersx").as_deref(), Some("prefix"));
    assert_eq!(w("/v1/users").as_deref(), None);
}

#[test]
fn more_literal_segments_win_among_placeholders() {
    let compiled = table(&[
        ("tail", "Path(`/a/<path:rest>`)", 0),
        ("one", "Path(`/a/<x>/<y>`)", 0),
        ("two", "Path(`/a/<x>/c`)", 0),
    ]);
    assert_eq!(order(&compiled), ["two", "one", "tail"]);
    let w = |path| winner(&compiled, &get("h", path));
    assert_eq!(w("/a/b/c").as_deref(), Some("two"));
    assert_eq!(w("/a/b/d").as_deref(), Some("one"));
    assert_eq!(w("/a/b/c/d").as_deref(), Some("tail"));
}

#[test]
fn longer_prefix_first() {
    let compiled = table(&[
        ("root", "PathPrefix(`/`)", 0),
        ("api", "PathPrefix(`/api`)", 0),
        ("v1", "PathPrefix(`/api/v1/`)", 0),
    ]);
    assert_eq!(order(&compiled), ["v1", "api", "root"]);
    let w = |path| winner(&compiled, &get("h", path));
    assert_eq!(w("/api/v1/x").as_deref(), Some("v1"));
    assert_eq!(w("/api/v1").as_deref(), Some("api"));
    assert_eq!(w("/").as_deref(), Some("root"));
}

#[test]
fn host_specific_beats_any_host_on_the_same_path() {
    let compiled = table(&[
        ("any", "PathPrefix(`/`)", 0),
        (
            "regex",
            "HostRegexp(`^.*\\.example\\.com$`) && PathPrefix(`/`)",
            0,
        ),
        ("tenant", "Host(`<t>.example.com`) && PathPrefix(`/`)", 0),
        ("api", "Host(`api.example.com`) && PathPrefix(`/`)", 0),
    ]);
    assert_eq!(order(&compiled), ["api", "tenant", "regex", "any"]);
    let w = |host| winner(&compiled, &get(host, "/x"));
    assert_eq!(w("API.Example.com").as_deref(), Some("api"));
    assert_eq!(w("acme.example.com").as_deref(), Some("tenant"));
    assert_eq!(w("a.b.example.com").as_deref(), Some("regex"));
    assert_eq!(w("other.org").as_deref(), Some("any"));
}

#[test]
fn the_path_decides_before_the_host() {
    let compiled = table(&[
        ("host", "Host(`a.com`) && PathPrefix(`/`)", 0),
        ("path", "PathPrefix(`/api`)", 0),
    ]);
    assert_eq!(
        winner(&compiled, &get("a.com", "/api/x")).as_deref(),
        Some("path")
    );
    assert_eq!(
        winner(&compiled, &get("a.com", "/x")).as_deref(),
        Some("host")
    );
}

#[test]
fn method_specific_beats_plain_and_falls_back() {
    let compiled = table(&[
        ("plain", "Path(`/x`)", 0),
        ("post", "Path(`/x`) && Method(`POST`)", 0),
        (
            "header",
            "Path(`/x`) && Method(`POST`) && Header(`X-Canary`, `1`)",
            0,
        ),
    ]);
    assert_eq!(order(&compiled), ["header", "post", "plain"]);
    let post = Req {
        method: "POST",
        ..get("h", "/x")
    };
    assert_eq!(winner(&compiled, &post).as_deref(), Some("post"));
    let canary = Req {
        headers: &[("x-canary", "1")],
        ..post
    };
    assert_eq!(winner(&compiled, &canary).as_deref(), Some("header"));
    assert_eq!(winner(&compiled, &get("h", "/x")).as_deref(), Some("plain"));
}

#[test]
fn priority_then_id_break_ties() {
    let compiled = table(&[
        ("b", "PathRegexp(`^/a`)", 0),
        ("a", "PathRegexp(`^/a`) ", 0),
        ("c", "PathRegexp(`/a`)", 5),
        ("d", "PathRegexp(`^/zzz`)", 0),
    ]);
    assert_eq!(order(&compiled), ["c", "a", "b", "d"]);
    assert_eq!(winner(&compiled, &get("h", "/a")).as_deref(), Some("c"));
    assert_eq!(winner(&compiled, &get("h", "/zzz")).as_deref(), Some("d"));
}

#[test]
fn regex_and_host_only_frontends_are_found_when_nothing_indexed_matches() {
    let compiled = table(&[
        ("host", "Host(`a.com`)", 0),
        ("users", "PathRegexp(`^/users/[0-9]+$`)", 0),
        ("exact", "Host(`a.com`) && Path(`/x`)", 0),
    ]);
    assert_eq!(
        winner(&compiled, &get("a.com", "/x")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        winner(&compiled, &get("a.com", "/users/1")).as_deref(),
        Some("host")
    );
    assert_eq!(
        winner(&compiled, &get("b.com", "/users/1")).as_deref(),
        Some("users")
    );
    assert_eq!(winner(&compiled, &get("b.com", "/x")), None);
}

#[test]
fn the_same_route_twice_is_a_conflict_won_by_the_smaller_id() {
    let compiled = table(&[
        ("f2", "Path(\"/x\")  &&  Method(\"GET\")", 0),
        ("f1", "Method(`GET`) && Path(`/x`)", 0),
        ("f3", "Path(`/y/<a>`)", 0),
        ("f4", "Path(`/y/<b>`)", 0),
    ]);
    assert_eq!(
        compiled.report.conflicts,
        [
            Conflict {
                winner: "f1".into(),
                loser: "f2".into(),
                reason: "same route".into()
            },
            Conflict {
                winner: "f3".into(),
                loser: "f4".into(),
                reason: "same route".into()
            },
        ]
    );
    assert_eq!(winner(&compiled, &get("h", "/x")).as_deref(), Some("f1"));
    assert_eq!(compiled.table.frontends().len(), 4);
}

#[test]
fn a_frontend_whose_matchers_are_covered_is_shadowed() {
    let compiled = table(&[
        ("catchall", "PathPrefix(`/`)", 0),
        ("hostonly", "Host(`a.com`)", 0),
        ("low", "Path(`/p`)", 0),
        ("high", "Path(`/p`)", 1),
        ("get", "Path(`/p`) && Method(`GET`)", 0),
        ("regex", "PathRegexp(`/q`) && Method(`GET`)", 0),
    ]);
    let conflicts: Vec<(&str, &str, &str)> = compiled
        .report
        .conflicts
        .iter()
        .map(|c| (c.winner.as_str(), c.loser.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        conflicts,
        [
            ("high", "low", "shadowed by"),
            ("catchall", "hostonly", "shadowed by"),
            ("catchall", "regex", "shadowed by"),
        ]
    );
    let get_p = get("a.com", "/p");
    assert_eq!(winner(&compiled, &get_p).as_deref(), Some("get"));
    assert_eq!(
        winner(&compiled, &get("a.com", "/z")).as_deref(),
        Some("catchall")
    );
}

#[test]
fn middlewares_are_sorted_by_priority_then_id() {
    let mw = |prio: i64| {
        format!(
            r#"{{"Priority":{prio},"Type":"ratelimit","Middleware":{{"Requests":1,"PeriodSeconds":1,"Variable":"client.ip"}}}}"#
        )
    };
    let (m_c, m_a, m_b) = (mw(2), mw(1), mw(1));
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/frontends/f/frontend",
                &frontend_doc("Path(`/`)", 0),
            ),
            ("/vulcand/frontends/f/middlewares/c", &m_c),
            ("/vulcand/frontends/f/middlewares/b", &m_b),
            ("/vulcand/frontends/f/middlewares/a", &m_a),
        ]),
        &CompileOptions::default(),
    );
    let ids: Vec<_> = compiled.table.frontends()[0]
        .middlewares
        .iter()
        .map(|m| (&*m.id, m.priority))
        .collect();
    assert_eq!(ids, [("a", 1), ("b", 1), ("c", 2)]);
}

#[test]
fn an_invalid_throttling_middleware_is_skipped_and_the_frontend_still_routes() {
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/frontends/f/frontend",
                &frontend_doc("Path(`/`)", 0),
            ),
            (
                "/vulcand/frontends/f/middlewares/bad",
                r#"{"Type":"ratelimit","Middleware":{"Requests":0,"PeriodSeconds":1,"Variable":"client.ip"}}"#,
            ),
            (
                "/vulcand/frontends/f/middlewares/good",
                r#"{"Type":"connlimit","Middleware":{"Connections":2,"Variable":"request.header.X-Tenant"}}"#,
            ),
        ]),
        &CompileOptions::default(),
    );
    let skipped = &compiled.report.skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].key, "/vulcand/frontends/f/middlewares/bad");
    assert!(
        skipped[0].reason.contains("Requests must be between 1"),
        "{skipped:?}"
    );
    let f = compiled
        .table
        .lookup(&get("a.com", "/"))
        .expect("f still routes");
    assert_eq!(f.middlewares.len(), 1);
    let limit = f.middlewares[0].limit.as_ref().expect("a compiled limit");
    assert_eq!(limit.kind, crate::throttle::LimitKind::Connections(2));
}

#[test]
fn render_and_json_list_frontends_in_precedence_order_with_the_report() {
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/frontends/f1/frontend",
                &frontend_doc("PathPrefix(`/`)", 0),
            ),
            (
                "/vulcand/frontends/f2/frontend",
                &frontend_doc("Path(`/x`)", 3),
            ),
            (
                "/vulcand/frontends/f3/frontend",
                &frontend_doc("Path(`/x`)", 3),
            ),
            ("/vulcand/frontends/bad/frontend", "{"),
        ]),
        &CompileOptions::default(),
    );
    let text = compiled.table.render(&compiled.report);
    assert!(
        text.starts_with("revision 7: 3 frontends, 1 backends\n"),
        "{text}"
    );
    let f2 = text.find("f2  Path(`/x`)").expect(&text);
    let f1 = text.find("f1  PathPrefix(`/`)").expect(&text);
    assert!(f2 < f1, "{text}");
    assert!(text.contains("priority 3"), "{text}");
    assert!(
        text.contains("s1 http://127.0.0.1:5000 -> 127.0.0.1:5000 weight 1"),
        "{text}"
    );
    assert!(text.contains("conflicts:\n  f3 same route f2\n"), "{text}");
    assert!(
        text.contains("skipped:\n  /vulcand/frontends/bad/frontend: invalid document"),
        "{text}"
    );

    let json = compiled.table.to_json(&compiled.report);
    assert_eq!(json["revision"], 7);
    assert_eq!(json["frontends"][0]["id"], "f2");
    assert_eq!(json["frontends"][0]["precedence"], 1);
    assert_eq!(json["frontends"][0]["normalized"], "Path(\"/x\")");
    assert_eq!(json["frontends"][2]["id"], "f1");
    assert_eq!(json["backends"][0]["servers"][0]["addr"], "127.0.0.1:5000");
    assert_eq!(json["conflicts"][0]["loser"], "f3");
    assert_eq!(json["skipped"][0]["key"], "/vulcand/frontends/bad/frontend");
}

#[test]
fn the_table_is_shareable_between_workers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable>();
}

mod scale;

#[test]
fn host_aliases_let_this_node_answer_for_localhost_routes() {
    let doc = |route: &str| frontend_doc(route, 0);
    let set = kv(&[
        (
            "/vulcand/frontends/local/frontend",
            &doc("Host(`localhost`) && PathPrefix(`/users`)"),
        ),
        (
            "/vulcand/frontends/other/frontend",
            &doc("Host(`other.mesh`) && PathPrefix(`/users`)"),
        ),
    ]);
    let opts = CompileOptions {
        host_aliases: vec![("localhost".into(), "node-17.mesh".into())],
        ..CompileOptions::default()
    };
    let compiled = compile(&set, &opts);
    assert_eq!(
        winner(&compiled, &get("node-17.mesh", "/users/1")).as_deref(),
        Some("local")
    );
    assert_eq!(
        winner(&compiled, &get("NODE-17.mesh", "/users/1")).as_deref(),
        Some("local")
    );
    assert_eq!(
        winner(&compiled, &get("localhost", "/users/1")).as_deref(),
        Some("local")
    );
    assert_eq!(
        winner(&compiled, &get("other.mesh", "/users/1")).as_deref(),
        Some("other")
    );
    assert_eq!(winner(&compiled, &get("node-18.mesh", "/users/1")), None);
    let plain = compile(&set, &CompileOptions::default());
    assert_eq!(
        winner(&plain, &get("node-17.mesh", "/users/1")),
        None,
        "no alias, no match"
    );
}

#[test]
fn a_failover_predicate_that_does_not_parse_skips_its_frontend_with_the_position() {
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/frontends/bad/frontend",
                r#"{"Type":"http","BackendId":"b1","Route":"Path(`/bad`)","Settings":{"FailoverPredicate":"IsNetworkError() && Attempts() <= "}}"#,
            ),
            (
                "/vulcand/frontends/good/frontend",
                r#"{"Type":"http","BackendId":"b1","Route":"Path(`/good`)","Settings":{"FailoverPredicate":""}}"#,
            ),
        ]),
        &CompileOptions::default(),
    );
    assert_eq!(order(&compiled), ["good"]);
    let good = &compiled.table.frontends()[0];
    assert!(
        !good.settings.failover.is_explicit(),
        "empty means vulcand's default"
    );
    let skipped = &compiled.report.skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].key, "/vulcand/frontends/bad/frontend");
    assert!(
        skipped[0].reason.contains("FailoverPredicate") && skipped[0].reason.contains("at byte 34"),
        "{}",
        skipped[0].reason
    );
}

#[test]
fn unsupported_settings_are_reported_and_the_rest_applies() {
    let compiled = compile(
        &kv(&[
            (
                "/vulcand/frontends/f1/frontend",
                r#"{"Type":"http","BackendId":"b1","Route":"Path(`/a`)","Settings":{"TrustForwardHeader":true,"Limits":{"MaxMemBodyBytes":2048}}}"#,
            ),
            (
                "/vulcand/frontends/f1/middlewares/tr",
                r#"{"Type":"trace","Middleware":{"ReqHeaders":["X-A"]}}"#,
            ),
            (
                "/vulcand/frontends/f1/middlewares/rw",
                r#"{"Type":"rewrite","Middleware":{"Regexp":"/a","Replacement":"/b","RewriteBody":true}}"#,
            ),
            (
                "/vulcand/frontends/f1/middlewares/auth",
                r#"{"Type":"auth","Middleware":{}}"#,
            ),
            (
                "/vulcand/backends/b2/backend",
                r#"{"Type":"http","Settings":{"TLS":{"InsecureSkipVerify":true}}}"#,
            ),
        ]),
        &CompileOptions::default(),
    );
    assert!(
        compiled.report.skipped.is_empty(),
        "{:?}",
        compiled.report.skipped
    );
    let notes: Vec<(&str, &str)> = compiled
        .report
        .unsupported
        .iter()
        .map(|u| (u.key.as_str(), u.reason.as_str()))
        .collect();
    let has = |key: &str, needle: &str| {
        notes
            .iter()
            .any(|(k, r)| k.ends_with(key) && r.contains(needle))
    };
    assert!(has("f1/frontend", "TrustForwardHeader"), "{notes:?}");
    assert!(has("f1/frontend", "MaxMemBodyBytes"), "{notes:?}");
    assert!(has("middlewares/tr", "trace"), "{notes:?}");
    assert!(has("middlewares/rw", "RewriteBody"), "{notes:?}");
    assert!(
        has("middlewares/auth", "\"auth\" is not supported"),
        "{notes:?}"
    );
    assert!(has("b2/backend", "Settings.TLS"), "{notes:?}");
    assert_eq!(notes.len(), 6, "{notes:?}");
    // The frontend still serves, with its rewrite.
    let f = compiled.table.lookup(&get("h", "/a")).expect("f1");
    assert!(f.middlewares.iter().any(|m| m.rewrite.is_some()));
    let text = compiled.table.render(&compiled.report);
    assert!(text.contains("not supported"), "{text}");
    assert!(text.contains("failover: vulcand default"), "{text}");
    let json = compiled.table.to_json(&compiled.report);
    assert_eq!(json["unsupported"].as_array().map(Vec::len), Some(6));
    assert_eq!(json["frontends"][0]["settings"]["failover_default"], true);
}
