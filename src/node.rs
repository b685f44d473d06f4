//! Starting a node from a profile: logging, route source, workers, signals, shutdown.
use std::path::Path;
use std::process::ExitCode;

pub fn run_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let _ = crate::config::Profile::load(path)?;
    anyhow::bail!("node not built yet")
}

pub fn check_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let _ = crate::config::Profile::load(path)?;
    Ok(ExitCode::SUCCESS)
}
