//! Deployment files: the flake parses, the shipped profiles pass `ringway check`.

use crate::harness::ringway;
use std::path::Path;
use std::process::Command;

#[test]
fn flake_nix_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(out) = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(root.join("flake.nix"))
        .output()
    else {
        // tests/run.sh installs nix-bin; a machine without it cannot check the flake.
        eprintln!("nix-instantiate not found: flake.nix not checked");
        return;
    };
    assert!(
        out.status.success(),
        "flake.nix: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn file_source_profiles_in_the_repo_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["dev.toml", "bench.toml", "reference.toml"] {
        let p = root.join("deploy/profiles").join(name);
        let out = ringway(&["check", "--profile", p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("frontend"),
            "{name} lists its frontends"
        );
    }
}
