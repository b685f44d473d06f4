//! Names the commit a binary was built from, for `ringway --version` (and so for bug reports,
//! the status page and A/B benchmark reports): `RINGWAY_COMMIT` when the build sets it (the
//! Nix flake passes its revision), else `git rev-parse --short HEAD` in the source tree, else
//! `unknown` (a source archive without git).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RINGWAY_COMMIT");
    let commit = std::env::var("RINGWAY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RINGWAY_COMMIT={}", commit.trim());
}

fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // Run again when HEAD moves: a checkout changes HEAD, a commit the branch it names (a
    // loose ref, or packed-refs once git packed it). Only existing files are named: Cargo
    // reruns a build script every time for a path that does not exist.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(branch));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}
