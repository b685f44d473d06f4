//! The command line: version, help, and profiles refused with file, key and reason.

use crate::harness::{build_commit, ringway, TempDir};

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = ringway(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The build's commit (see `build_commit`), after the crate version.
    assert_eq!(
        text.trim(),
        format!("ringway {} ({})", env!("CARGO_PKG_VERSION"), build_commit())
    );
}

#[test]
fn unknown_profile_key_is_refused_naming_file_and_key() {
    let dir = TempDir::new("cli");
    let file = dir.write(
        "bad.toml",
        "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9003\"\nwrokers = 2\n\n[routes]\nsource = \"file\"\nfile = \"r.json\"\n",
    );
    let out = ringway(&["check", "--profile", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("wrokers"), "{err}");
}

#[test]
fn invalid_value_is_refused_naming_key_and_reason() {
    let dir = TempDir::new("cli");
    let file = dir.write(
        "bad.toml",
        "[node]\nring_entries = 1000\n\n[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9003\"\n\n[routes]\nsource = \"file\"\nfile = \"r.json\"\n",
    );
    let out = ringway(&["check", "--profile", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("node.ring_entries")
            && err.contains("power of two"),
        "{err}"
    );
}

#[test]
fn check_shows_each_frontends_failover_rule_and_what_is_not_supported() {
    let dir = TempDir::new("cli");
    dir.write(
        "r.json",
        r#"{
  "/vulcand/backends/b/backend": {"Type": "http"},
  "/vulcand/backends/b/servers/s": {"URL": "http://127.0.0.1:5000"},
  "/vulcand/frontends/scroll/frontend": {"Type": "http", "BackendId": "b", "Route": "PathPrefix(`/a`)",
    "Settings": {"FailoverPredicate": "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"}},
  "/vulcand/frontends/plain/frontend": {"Type": "http", "BackendId": "b", "Route": "PathPrefix(`/b`)"},
  "/vulcand/frontends/plain/middlewares/t": {"Type": "trace", "Middleware": {}}
}"#,
    );
    let file = dir.write(
        "p.toml",
        "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9003\"\n\n[routes]\nsource = \"file\"\nfile = \"r.json\"\n",
    );
    let out = ringway(&["check", "--profile", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings only: {text}");
    assert!(
        text.contains("failover (IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"),
        "{text}"
    );
    assert!(
        text.contains("failover: vulcand default (IsNetworkError() && RequestMethod() == \"GET\""),
        "{text}"
    );
    assert!(
        text.contains(
            "/vulcand/frontends/plain/middlewares/t: trace middlewares are not supported"
        ),
        "{text}"
    );
}
