//! Names the commit a binary was built from, for `ringway --version` (and so for bug reports,
//! the status page and A/B benchmark reports): `RINGWAY_COMMIT` when the build sets it (the
//! Nix flake passes its revision), else `git rev-parse --short HEAD` when this source tree is
//! a git checkout of its own, else `unknown` (a source archive, or sources vendored into some
//! other repository).

use std::path::{Path, PathBuf};
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

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_commit() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // Only a checkout whose top is this crate names it: a source archive unpacked inside some
    // other repository would otherwise take that repository's commit.
    let top = PathBuf::from(git(&manifest, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest.canonicalize().ok()? {
        return None;
    }
    let commit = git(&manifest, &["rev-parse", "--short", "HEAD"])?;
    // Run again when HEAD moves. HEAD's reflog gets a line on every commit, checkout and reset
    // (in a worktree too, and whether the branch's ref is loose or packed); HEAD itself and
    // packed-refs cover a repository without reflogs. Only existing files are named: Cargo
    // reruns a build script on every build for a path that does not exist.
    for name in ["HEAD", "logs/HEAD", "packed-refs"] {
        if let Some(path) = git(&manifest, &["rev-parse", "--git-path", name]) {
            let path = manifest.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(commit)
}
