//! The built-in demo: two small HTTP services on loopback and a node routing to them.
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo not built yet")
}
