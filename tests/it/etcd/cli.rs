//! `ringway register` and `ringway check` against a real etcd.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{await_status, PROPAGATION};
use crate::etcd_server::EtcdServer;
use crate::harness::{free_port, ringway, ringway_bin, Ringway, TempDir};
use crate::origin::Origin;

/// `ringway register` of server `i1` of backend `svc` (frontend `/svc`) at `origin`, its log
/// in `dir`/register.log.
pub(super) fn register_svc(
    dir: &TempDir,
    etcd: &str,
    origin: std::net::SocketAddr,
    extra: &[&str],
) -> std::process::Child {
    let log = std::fs::File::create(dir.0.join("register.log")).unwrap();
    Command::new(ringway_bin())
        .args(["register", "--etcd", etcd, "--backend", "svc"])
        .args(["--server-id", "i1", "--url"])
        .arg(format!("http://{origin}"))
        .args(["--frontend", "svc=PathPrefix(`/svc`)"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ringway register")
}

/// Send SIGTERM to a `ringway register` child.
pub(super) fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

#[test]
fn register_publishes_a_route_and_sigterm_revokes_the_server_at_once() {
    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    let dir = TempDir::new("register");
    let mut child = register_svc(&dir, &etcd.endpoint(), origin.addr, &["--ttl", "30s"]);
    let reg_log = || std::fs::read_to_string(dir.0.join("register.log")).unwrap_or_default();
    await_status(&rw, "/svc/a", 200, PROPAGATION, "registered route");
    assert_eq!(
        kv.get("backends/svc/backend").as_deref(),
        Some(r#"{"Type":"http"}"#)
    );

    let sent = Instant::now();
    sigterm(&child);
    let exited = super::eventually(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        exited.is_some(),
        "register did not exit on SIGTERM:\n{}",
        reg_log()
    );
    assert!(child.wait().unwrap().success(), "{}", reg_log());
    assert_eq!(
        kv.get("backends/svc/servers/i1"),
        None,
        "server key still there"
    );
    await_status(&rw, "/svc/a", 503, PROPAGATION, "deregistered server");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took longer than revoking should (TTL is 30 s)"
    );
    // The frontend stays for other instances of the service.
    assert!(kv.get("frontends/svc/frontend").is_some());
}

#[test]
fn register_publishes_again_when_its_lease_was_lost_while_etcd_was_away() {
    // etcd drops a lease that nobody could keep alive (an outage or a partition longer than
    // the TTL); the instance must come back by itself once etcd answers again.
    let origin = Origin::ok();
    let mut etcd = EtcdServer::start();
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    let dir = TempDir::new("register");
    let mut child = register_svc(
        &dir,
        &etcd.endpoint(),
        origin.addr,
        &["--ttl", "6s", "--dial-timeout", "500ms"],
    );
    let reg_log = || std::fs::read_to_string(dir.0.join("register.log")).unwrap_or_default();
    await_status(&rw, "/svc/a", 200, PROPAGATION, "registered route");

    // etcd goes away long enough for a keep-alive round (every 2 s) to fail...
    etcd.kill();
    std::thread::sleep(Duration::from_millis(3_000));
    etcd.restart();
    // ...and comes back without the lease.
    let kv = etcd.kv();
    assert!(
        kv.revoke_lease_of("backends/svc/servers/i1"),
        "{}",
        reg_log()
    );
    assert_eq!(kv.get("backends/svc/servers/i1"), None);
    let back = super::eventually(Duration::from_secs(15), || {
        kv.get("backends/svc/servers/i1").is_some()
    });
    assert!(
        back.is_some(),
        "the server key was not published again:\n{}",
        reg_log()
    );
    await_status(
        &rw,
        "/svc/a",
        200,
        PROPAGATION,
        "route after re-registering",
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn register_once_is_idempotent_and_an_unreachable_etcd_is_named() {
    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    let url = format!("http://{}", origin.addr);
    let args = [
        "register",
        "--etcd",
        &etcd.endpoint(),
        "--backend",
        "svc",
        "--server-id",
        "i1",
        "--url",
        &url,
        "--frontend",
        "svc=Path(`/svc`)",
        "--once",
    ];
    for _ in 0..2 {
        let out = ringway(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(kv.get("backends/svc/servers/i1").unwrap().contains(&url));

    // An unreachable etcd is named; with a cluster, every endpoint that failed is.
    let unreachable = |endpoints: &[&str]| {
        let mut args = vec!["register"];
        for e in endpoints {
            args.extend(["--etcd", e]);
        }
        args.extend(["--backend", "svc", "--url", &url, "--dial-timeout", "1s"]);
        let t = Instant::now();
        let out = ringway(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(t.elapsed() < Duration::from_secs(5));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = err.lines().last().unwrap_or_default().to_string();
        assert!(endpoints.iter().all(|e| last.contains(e)), "{err}");
        last
    };
    let dead = format!("http://127.0.0.1:{}", free_port());
    unreachable(&[&dead]);
    let (first, second) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let last = unreachable(&[&first, &second]);
    assert!(last.contains("no etcd endpoint answered"), "{last}");
}

fn etcd_profile(dir: &TempDir, endpoint: &str) -> String {
    let text = format!(
        "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9\"\n\n\
         [routes]\nsource = \"etcd\"\n\n[etcd]\nendpoints = [\"{endpoint}\"]\ndial_timeout_ms = 1000\n"
    );
    dir.write("profile.toml", &text).display().to_string()
}

#[test]
fn check_reads_etcd_and_fails_on_two_services_claiming_one_route() {
    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    kv.backend("b1");
    kv.server("b1", "s1", origin.addr);
    kv.backend("b2");
    kv.server("b2", "s1", origin.addr);
    kv.frontend("alpha", "b1", "PathPrefix(`/shared`)");
    let dir = TempDir::new("check");
    let profile = etcd_profile(&dir, &etcd.endpoint());

    let out = ringway(&["check", "--profile", &profile]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alpha"), "{stdout}");

    kv.frontend("beta", "b2", "PathPrefix(`/shared`)");
    let out = ringway(&["check", "--profile", &profile]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let conflicts = stdout.find("conflict").map(|i| &stdout[i..]);
    assert!(
        conflicts.is_some_and(|c| c.contains("alpha") && c.contains("beta")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 conflict"), "{stderr}");
}

#[test]
fn check_names_an_unreachable_etcd_and_fails() {
    let dir = TempDir::new("check");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let profile = etcd_profile(&dir, &dead);
    let out = ringway(&["check", "--profile", &profile]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dead), "{err}");
}

#[test]
fn register_publishes_scrolls_failover_predicate_so_a_draining_instance_costs_no_request() {
    let draining = Origin::start(|_| crate::origin::Reply::status(503, "draining"));
    let healthy = Origin::ok();
    let etcd = EtcdServer::start();
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, "");
    let settings = r#"svc={"FailoverPredicate": "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"}"#;
    for (id, origin) in [("i1", &draining), ("i2", &healthy)] {
        let out = ringway(&[
            "register",
            "--etcd",
            &etcd.endpoint(),
            "--backend",
            "svc",
            "--server-id",
            id,
            "--url",
            &format!("http://{}", origin.addr),
            "--frontend",
            "svc=PathPrefix(`/svc`)",
            "--frontend-settings",
            settings,
            "--once",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let both = super::eventually(PROPAGATION, || {
        let r = crate::harness::get(rw.addr, "/svc/a");
        r.status == 200 && !draining.seen().is_empty()
    });
    assert!(both.is_some(), "both instances in the table:\n{}", rw.log());
    for i in 0..10 {
        let r = crate::harness::get(rw.addr, "/svc/a");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert!(
        draining.seen().len() >= 2,
        "the draining instance stayed in rotation"
    );
    // A predicate that does not parse is refused with its position; nothing is written.
    let out = ringway(&[
        "register",
        "--etcd",
        &etcd.endpoint(),
        "--backend",
        "other",
        "--url",
        "http://127.0.0.1:1",
        "--frontend",
        "other=PathPrefix(`/other`)",
        "--frontend-settings",
        r#"other={"FailoverPredicate": "ResponseCode() = 503"}"#,
        "--once",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FailoverPredicate") && err.contains("at byte 15"),
        "{err}"
    );
    assert_eq!(etcd.kv().get("frontends/other/frontend"), None);
}
