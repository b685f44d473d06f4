//! Routes from a real etcd: initial load, live changes, bad values, leases, outages, start-up
//! without etcd, compaction, and route churn. Each test runs its own etcd and ringway.

mod churn;
mod cli;
mod members;
mod tls;

use std::time::{Duration, Instant};

use crate::etcd_server::{frontend_doc, server_doc, EtcdServer, Kv};
use crate::harness::{get, routes_json, Ringway, TempDir};
use crate::origin::Origin;

/// Poll `cond` every 10 ms until it holds or `limit` passes; how long it took, if it held.
pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn status(rw: &Ringway, path: &str) -> u16 {
    get(rw.addr, path).status
}

/// Wait until `path` answers `want`; panic with the node's log otherwise. Prints the time.
pub(crate) fn await_status(rw: &Ringway, path: &str, want: u16, limit: Duration, what: &str) {
    match eventually(limit, || status(rw, path) == want) {
        Some(t) => println!("{what}: took effect after {t:?}"),
        None => panic!(
            "{what}: {path} did not answer {want} within {limit:?} (last {}):\n{}",
            status(rw, path),
            rw.log()
        ),
    }
}

/// etcd with backend `b1` = `origin` and frontend `users` → `PathPrefix("/users")`, and a node
/// reading it.
fn etcd_with_users(origin: &Origin) -> (EtcdServer, Kv) {
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    kv.backend("b1");
    kv.server("b1", "s1", origin.addr);
    kv.frontend("users", "b1", "PathPrefix(`/users`)");
    (etcd, kv)
}

const PROPAGATION: Duration = Duration::from_secs(3);

#[test]
fn keys_present_before_start_are_served() {
    let origin = Origin::echo();
    let (etcd, _kv) = etcd_with_users(&origin);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    let resp = get(rw.addr, "/users/7");
    assert_eq!(resp.status, 200, "{}", rw.log());
    assert_eq!(resp.text(), "GET /users/7");
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(status(&rw, "/orders"), 404);
}

#[test]
fn frontends_and_servers_added_updated_and_deleted_take_effect() {
    let o1 = Origin::ok();
    let o2 = Origin::ok();
    let (etcd, kv) = etcd_with_users(&o1);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");

    kv.frontend("orders", "b1", "PathPrefix(`/orders`)");
    await_status(&rw, "/orders/1", 200, PROPAGATION, "frontend added");

    kv.frontend("orders", "b1", "PathPrefix(`/v2/orders`)");
    await_status(&rw, "/orders/1", 404, PROPAGATION, "frontend updated");
    assert_eq!(status(&rw, "/v2/orders/1"), 200);

    kv.server("b1", "s2", o2.addr);
    let added = eventually(PROPAGATION, || {
        get(rw.addr, "/users/x");
        !o2.seen().is_empty()
    });
    println!("server added: took effect after {added:?}");
    assert!(added.is_some(), "the new server never got a request");

    kv.delete("backends/b1/servers/s1");
    let removed = eventually(PROPAGATION, || {
        let before = o1.seen().len();
        (0..4).all(|_| status(&rw, "/users/x") == 200) && o1.seen().len() == before
    });
    println!("server deleted: took effect after {removed:?}");
    assert!(removed.is_some(), "the deleted server still gets requests");

    kv.delete("frontends/orders/frontend");
    await_status(&rw, "/v2/orders/1", 404, PROPAGATION, "frontend deleted");
    assert_eq!(status(&rw, "/users/1"), 200);
}

#[test]
fn bad_values_are_skipped_and_logged_while_good_ones_in_the_same_txn_apply() {
    let origin = Origin::ok();
    let (etcd, kv) = etcd_with_users(&origin);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    let good = frontend_doc("b1", "PathPrefix(`/good`)");
    let unknown_type = r#"{"Type":"ftp","BackendId":"b1","Route":"PathPrefix(`/ftp`)"}"#;
    let bad_route = frontend_doc("b1", "Nonsense(`/x`) &&");
    kv.txn(&[
        ("frontends/notjson/frontend", "{\"Type\": \"http\", oops"),
        ("frontends/ftp/frontend", unknown_type),
        ("frontends/badroute/frontend", &bad_route),
        ("frontends/good/frontend", &good),
    ]);
    await_status(&rw, "/good/1", 200, PROPAGATION, "good value in a bad txn");
    assert_eq!(status(&rw, "/users/1"), 200);
    assert_eq!(status(&rw, "/ftp"), 404);
    let log = rw.log();
    for key in ["notjson", "ftp", "badroute"] {
        let line = log
            .lines()
            .find(|l| l.contains("skipped") && l.contains(&format!("/frontends/{key}/")));
        assert!(line.is_some(), "{key} not reported as skipped:\n{log}");
    }
}

#[test]
fn an_expired_server_lease_removes_the_server_and_the_route_answers_503() {
    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    kv.backend("b1");
    kv.put_on_lease("backends/b1/servers/s1", &server_doc(origin.addr), 2);
    kv.frontend("svc", "b1", "PathPrefix(`/svc`)");
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    assert_eq!(status(&rw, "/svc"), 200, "{}", rw.log());
    let gone = eventually(Duration::from_secs(10), || {
        let t = Instant::now();
        let s = status(&rw, "/svc");
        assert!(t.elapsed() < Duration::from_secs(2), "a request hung");
        s == 503
    });
    println!("lease expired: 503 after {gone:?}");
    assert!(
        gone.is_some(),
        "still served after the lease expired:\n{}",
        rw.log()
    );
    assert_eq!(kv.get("backends/b1/servers/s1"), None);
}

#[test]
fn an_etcd_outage_keeps_the_routes_and_a_restart_resynchronises() {
    let origin = Origin::ok();
    let (mut etcd, _kv) = etcd_with_users(&origin);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    assert_eq!(status(&rw, "/users/1"), 200);

    etcd.kill();
    for _ in 0..15 {
        assert_eq!(status(&rw, "/users/1"), 200, "{}", rw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd.restart();
    let kv = etcd.kv();
    kv.frontend("after", "b1", "PathPrefix(`/after`)");
    await_status(
        &rw,
        "/after",
        200,
        Duration::from_secs(12),
        "change after an etcd restart",
    );
    assert_eq!(status(&rw, "/users/1"), 200);
    assert!(rw.log().contains("etcd watch lost"), "{}", rw.log());
}

#[test]
fn with_etcd_down_the_snapshot_is_served() {
    let origin = Origin::ok();
    let etcd = EtcdServer::stopped();
    let dir = TempDir::new("node");
    dir.write(
        "snapshot.json",
        &routes_json(
            &[("b1", &[origin.addr])],
            &[("users", "b1", "PathPrefix(`/users`)")],
        ),
    );
    let rw = Ringway::start_etcd(dir, &etcd.endpoint(), true, "");
    assert_eq!(status(&rw, "/users/1"), 200, "{}", rw.log());
    assert_eq!(status(&rw, "/other"), 404);
    assert!(rw.log().contains("snapshot"), "{}", rw.log());
}

#[test]
fn with_etcd_down_and_no_snapshot_nothing_routes_until_etcd_starts() {
    let origin = Origin::ok();
    let mut etcd = EtcdServer::stopped();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port()));
    let rw = Ringway::start_etcd(
        TempDir::new("node"),
        &etcd.endpoint(),
        false,
        &format!("[admin]\naddr = \"{admin}\"\n"),
    );
    assert_eq!(status(&rw, "/users/1"), 404);
    let ready = get(admin, "/readyz");
    assert_eq!(ready.status, 503, "not ready without any route table");
    assert!(ready.text().contains("no route table"), "{}", ready.text());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&rw, "/users/1"), 404, "{}", rw.log());

    etcd.restart();
    let kv = etcd.kv();
    kv.backend("b1");
    kv.server("b1", "s1", origin.addr);
    kv.frontend("users", "b1", "PathPrefix(`/users`)");
    await_status(
        &rw,
        "/users/1",
        200,
        Duration::from_secs(12),
        "routes once etcd started",
    );
    assert_eq!(
        get(admin, "/readyz").status,
        200,
        "ready once etcd answered"
    );
}

#[test]
fn a_full_read_written_snapshot_survives_a_restart_without_etcd() {
    let origin = Origin::ok();
    let (mut etcd, _kv) = etcd_with_users(&origin);
    let dir = TempDir::new("node");
    let snapshot = dir.0.join("snapshot.json");
    let mut rw = Ringway::start_etcd(dir, &etcd.endpoint(), true, "");
    assert!(
        eventually(PROPAGATION, || snapshot.exists()).is_some(),
        "no snapshot written:\n{}",
        rw.log()
    );
    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(text.contains("/vulcand/frontends/users/frontend"), "{text}");
    rw.signal("TERM");
    assert!(rw.wait_exit(Duration::from_secs(15)).is_some());

    etcd.kill();
    let dir = TempDir::new("node");
    std::fs::copy(&snapshot, dir.0.join("snapshot.json")).unwrap();
    let rw = Ringway::start_etcd(dir, &etcd.endpoint(), true, "");
    assert_eq!(status(&rw, "/users/1"), 200, "{}", rw.log());
}

#[test]
fn a_compacted_watch_is_followed_by_a_full_read() {
    let origin = Origin::ok();
    let (etcd, kv) = etcd_with_users(&origin);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    assert_eq!(status(&rw, "/users/1"), 200);

    // Freeze the node so its watch falls behind: etcd's send buffers fill up and the watcher
    // becomes "unsynced"; compacting past it then forces etcd to answer the watch with a
    // compact revision once the node reads again.
    rw.signal("STOP");
    let padding = "x".repeat(64 * 1024);
    let bulk: Vec<(String, String)> = (0..500)
        .map(|i| {
            let doc = serde_json::json!({
                "Type": "http", "BackendId": "b1", "Route": "Path(`/bulk`)",
                "Padding": format!("{i}{padding}"),
            });
            ("frontends/bulk/frontend".to_string(), doc.to_string())
        })
        .collect();
    kv.put_many(bulk, 16);
    kv.delete("frontends/bulk/frontend");
    kv.frontend("late", "b1", "PathPrefix(`/late`)");
    kv.compact(kv.revision());
    rw.signal("CONT");

    await_status(
        &rw,
        "/late",
        200,
        Duration::from_secs(10),
        "change behind a compaction",
    );
    assert_eq!(status(&rw, "/bulk"), 404);
    let log = rw.log();
    assert!(log.contains("etcd watch compacted"), "{log}");
}
