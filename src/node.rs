//! Running a node from a profile: logging, the route source, the workers, signals and a
//! graceful stop; and `check`, which validates a profile and its routes without serving.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::{AdminServer, AdminState, ControlStatus, SourceStatus};
use crate::config::{Profile, RouteSourceKind};
use crate::control::etcd::{self, EtcdSource, Startup};
use crate::control::{file, TableHandle};
use crate::dataplane::{self, DataPlaneConfig};
use crate::route::{compile, CompileOptions};

/// Set up `tracing` once: the profile's level unless `RUST_LOG` says otherwise.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub fn compile_options(profile: &Profile) -> CompileOptions {
    CompileOptions {
        prefix: profile.etcd.prefix.clone(),
    }
}

/// `ringway run --profile FILE`.
pub fn run_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let profile = Profile::load(path)?;
    init_logging(&profile.log.level);
    run(profile)
}

/// The running route source, stopped after the workers drained.
enum RouteSource {
    File(std::thread::JoinHandle<()>),
    Etcd(EtcdSource),
}

/// What the route source reports for the `ringway_etcd_*` gauges; a file source has nothing to
/// say.
fn control_status(profile: &Profile, routes: &TableHandle) -> Option<Arc<dyn ControlStatus>> {
    match profile.routes.source {
        RouteSourceKind::File => None,
        RouteSourceKind::Etcd => Some(Arc::new(SourceStatus::new(
            routes.clone(),
            TableHandle::etcd_connected,
            TableHandle::last_sync,
        ))),
    }
}

/// Serve until SIGTERM or SIGINT, then drain and return.
pub fn run(profile: Profile) -> anyhow::Result<ExitCode> {
    let routes = TableHandle::new();
    let opts = compile_options(&profile);
    let stop = Arc::new(AtomicBool::new(false));
    // Bound first: a busy or bad admin address is a start-up error.
    let admin = match &profile.admin {
        Some(a) => Some(AdminServer::bind(a.addr)?),
        None => None,
    };
    let source = match profile.routes.source {
        RouteSourceKind::File => {
            let f = profile
                .routes
                .file
                .clone()
                .context("routes.file is required")?;
            if !file::load_and_publish(&f, &opts, &routes) {
                anyhow::bail!("cannot load routes from {}", f.display());
            }
            let poll = Duration::from_millis(profile.routes.file_poll_ms);
            RouteSource::File(file::spawn_watcher(
                f,
                opts,
                routes.clone(),
                poll,
                stop.clone(),
            )?)
        }
        RouteSourceKind::Etcd => {
            let (source, startup) = EtcdSource::start(
                profile.etcd.clone(),
                profile.routes.snapshot.clone(),
                opts,
                routes.clone(),
            )?;
            match startup {
                Startup::Etcd { revision } => {
                    tracing::info!(revision, "routes from etcd")
                }
                Startup::Snapshot { path, keys } => {
                    tracing::warn!(snapshot = %path.display(), keys, "routes from the last-known-good snapshot")
                }
                Startup::Empty => tracing::warn!("no routes yet: not ready until etcd answers"),
            }
            RouteSource::Etcd(source)
        }
    };
    let admin_state = AdminState::new(routes.clone(), control_status(&profile, &routes));
    if let Some(a) = admin {
        let addr = a.local_addr()?;
        a.spawn(admin_state.clone())
            .context("cannot start the admin thread")?;
        tracing::info!(addr = %addr, "admin endpoint listening");
    }

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let cfg = Arc::new(DataPlaneConfig::from_profile(&profile));
    let workers = dataplane::start(cfg.clone(), routes.clone())?;
    admin_state.serving(workers.stats());
    let driver = workers
        .drivers()
        .first()
        .map(|d| d.to_string())
        .unwrap_or_default();
    for l in &profile.listeners {
        tracing::info!(listener = %l.name, addr = %l.addr, role = ?l.role, "listening");
    }
    tracing::info!(workers = cfg.workers, driver = %driver, "ringway running");

    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            grace_secs = cfg.shutdown_grace.as_secs(),
            "stopping: draining connections"
        );
    }
    admin_state.draining();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    workers.stop();
    workers.join();
    match source {
        RouteSource::File(w) => {
            let _ = w.join();
        }
        RouteSource::Etcd(source) => source.stop(),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `ringway check --profile FILE`: exit 0 when the profile and every route value are valid.
pub fn check_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let profile = Profile::load(path)?;
    println!("profile {}: ok", path.display());
    let opts = compile_options(&profile);
    let kv = match profile.routes.source {
        RouteSourceKind::File => {
            let f = profile
                .routes
                .file
                .as_ref()
                .context("routes.file is required")?;
            file::read_routes(f)?
        }
        RouteSourceKind::Etcd => match etcd::read_once(&profile.etcd) {
            Ok(kv) => {
                println!(
                    "routes: etcd {} prefix {} at revision {}: {} keys",
                    profile.etcd.endpoints.join(","),
                    profile.etcd.prefix,
                    kv.revision,
                    kv.entries.len()
                );
                kv
            }
            Err(e) => {
                eprintln!("ringway: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let compiled = compile(&kv, &opts);
    print!("{}", compiled.table.render(&compiled.report));
    let bad = compiled.report.skipped.len() + compiled.report.conflicts.len();
    if bad > 0 {
        eprintln!(
            "ringway: {} skipped value(s), {} conflict(s)",
            compiled.report.skipped.len(),
            compiled.report.conflicts.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
