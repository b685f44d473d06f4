//! The command line: version, help, and profiles refused with file, key and reason.

use crate::harness::{ringway, TempDir};

#[test]
fn version_names_the_crate_version() {
    let out = ringway(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("ringway {}", env!("CARGO_PKG_VERSION"))
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
