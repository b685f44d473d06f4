//! A table of 100,000 frontends compiles and still looks requests up by index.

use std::time::Instant;

use super::*;

#[test]
fn a_hundred_thousand_frontends_compile_and_look_up() {
    const N: usize = 100_000;
    let mut set = kv(&[]);
    for i in 0..N {
        let (key, route) = match i % 4 {
            0 => (format!("e{i:06}"), format!("Path(`/svc{i}/items`)")),
            1 => (format!("p{i:06}"), format!("PathPrefix(`/svc{i}/`)")),
            2 => (
                format!("h{i:06}"),
                format!("Host(`h{i}.mesh`) && Path(`/users/<int:id>`)"),
            ),
            _ => (
                format!("m{i:06}"),
                format!("Path(`/svc{i}/items`) && Method(`POST`)"),
            ),
        };
        set.entries.insert(
            format!("/vulcand/frontends/{key}/frontend"),
            frontend_doc(&route, 0),
        );
    }
    let started = Instant::now();
    let compiled = compile(&set, &CompileOptions::default());
    eprintln!("compiled {N} frontends in {:?}", started.elapsed());
    assert_eq!(compiled.table.frontends().len(), N);
    assert_eq!(compiled.report, Report::default());
    let started = Instant::now();
    for i in (0..N).step_by(97) {
        let (method, host, path, want) = match i % 4 {
            0 => (
                "GET",
                "x".to_string(),
                format!("/svc{i}/items"),
                format!("e{i:06}"),
            ),
            1 => (
                "GET",
                "x".to_string(),
                format!("/svc{i}/a/b"),
                format!("p{i:06}"),
            ),
            2 => (
                "GET",
                format!("H{i}.mesh"),
                "/users/12".to_string(),
                format!("h{i:06}"),
            ),
            _ => (
                "POST",
                "x".to_string(),
                format!("/svc{i}/items"),
                format!("m{i:06}"),
            ),
        };
        let req = Req {
            method,
            host: &host,
            path: &path,
            headers: &[],
        };
        assert_eq!(
            winner(&compiled, &req),
            Some(want),
            "{method} {host} {path}"
        );
    }
    eprintln!("looked up {} requests in {:?}", N / 97, started.elapsed());
    assert_eq!(winner(&compiled, &get("h2.mesh", "/users/x")), None);
    assert_eq!(winner(&compiled, &get("x", "/nothing")), None);
}
