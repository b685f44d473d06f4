//! Helpers that start real processes (ringway, origins) on free loopback ports and clean up.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of the `ringway` binary cargo built for these tests.
pub fn ringway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringway"))
}

/// Run `ringway` with arguments to completion.
pub fn ringway(args: &[&str]) -> Output {
    Command::new(ringway_bin())
        .args(args)
        .output()
        .expect("the ringway binary runs")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringway-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
