//! Running a node from a profile: logging, the route source, the workers, signals and a
//! graceful stop; and `check`, which validates a profile and its routes without serving.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tracing_subscriber::filter::Targets;

use crate::admin::{AdminServer, AdminState, ControlStatus, SourceStatus};
use crate::config::{Profile, RouteSourceKind};
use crate::control::etcd::{self, EtcdSource, Startup};
use crate::control::{file, TableHandle};
use crate::dataplane::{self, DataPlaneConfig, ListeningSocket, ADMIN_SOCKET};
use crate::handover::{self, HandoverServer};
use crate::resilience::{Effects, Registry};
use crate::route::{compile, CompileOptions};
use crate::tls::{NodeTls, Terminator};

/// The reloadable log filter, when logging was set up from a profile level (not `RUST_LOG`).
static LOG_FILTER: OnceLock<
    tracing_subscriber::reload::Handle<Targets, tracing_subscriber::Registry>,
> = OnceLock::new();

/// Set up `tracing` once: the profile's level unless `RUST_LOG` says otherwise.
/// `RUST_LOG` takes `target=level` directives separated by commas (e.g.
/// `ringway=debug,warn`); an unparsable one falls back to the profile's level.
pub fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env: Option<Targets> = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok());
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| level_filter(level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
        && !pinned
    {
        let _ = LOG_FILTER.set(handle);
    }
}

/// A profile's `[log] level` as a filter (already validated by the profile).
fn level_filter(level: &str) -> Targets {
    level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// Apply a new `[log] level`. False when `RUST_LOG` pins the filter (or logging was not set
/// up from a profile).
fn set_log_level(level: &str) -> bool {
    LOG_FILTER
        .get()
        .is_some_and(|h| h.reload(level_filter(level)).is_ok())
}

pub fn compile_options(profile: &Profile) -> anyhow::Result<CompileOptions> {
    let seal_key = match &profile.etcd.seal_key_file {
        Some(f) => Some(Arc::new(crate::tls::hosts::SealKey::load(f).map_err(
            |reason| anyhow::anyhow!("key `etcd.seal_key_file`: {reason}"),
        )?)),
        None => None,
    };
    Ok(CompileOptions {
        prefix: profile.etcd.prefix.clone(),
        host_aliases: profile
            .routes
            .host_aliases
            .iter()
            .map(|(from, to)| (from.to_ascii_lowercase(), to.to_ascii_lowercase()))
            .collect(),
        seal_key,
    })
}

/// `ringway run --profile FILE`.
pub fn run_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let profile = Profile::load(path)?;
    init_logging(&profile.log.level);
    run_node(profile, Some(path))
}

/// The running route source, stopped after the workers drained.
enum RouteSource {
    File {
        thread: std::thread::JoinHandle<()>,
        stop: Arc<AtomicBool>,
    },
    Etcd(EtcdSource),
}

impl RouteSource {
    fn start(profile: &Profile, routes: &TableHandle) -> anyhow::Result<RouteSource> {
        let opts = compile_options(profile)?;
        Ok(match profile.routes.source {
            RouteSourceKind::File => {
                let f = profile
                    .routes
                    .file
                    .clone()
                    .context("routes.file is required")?;
                if !file::load_and_publish(&f, &opts, routes) {
                    anyhow::bail!("cannot load routes from {}", f.display());
                }
                RouteSource::watch_file(f, profile.routes.file_poll_ms, opts, routes)?
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
                    Startup::Empty => {
                        tracing::warn!("no routes yet: not ready until etcd answers")
                    }
                }
                RouteSource::Etcd(source)
            }
        })
    }

    fn watch_file(
        file: PathBuf,
        poll_ms: u64,
        opts: CompileOptions,
        routes: &TableHandle,
    ) -> anyhow::Result<RouteSource> {
        let stop = Arc::new(AtomicBool::new(false));
        let poll = Duration::from_millis(poll_ms);
        let thread = file::spawn_watcher(file, opts, routes.clone(), poll, stop.clone())?;
        Ok(RouteSource::File { thread, stop })
    }

    fn stop(self) {
        match self {
            RouteSource::File { thread, stop } => {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
            }
            RouteSource::Etcd(source) => source.stop(),
        }
    }
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
    run_node(profile, None)
}

/// How the serving loop ended.
enum Ending {
    Signal(i32),
    HandedOver,
}

/// Serve until SIGTERM/SIGINT, or until a newer process took the listeners over. SIGHUP
/// reloads what can be reloaded from `profile_path`.
fn run_node(profile: Profile, profile_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    raise_open_files_limit();
    let effects = Effects::start().context("cannot start the webhook thread")?;
    let resilience = Arc::new(Registry::new(profile.upstream.ejection(), effects));
    let routes = TableHandle::with_resilience(resilience.clone());
    // Certificates are read before anything binds: a bad one refuses the start.
    let tls = NodeTls::load(
        &profile,
        profile_path.unwrap_or(Path::new("profile")),
        &routes,
    )?;
    // A running node's sockets are asked for first: it keeps serving until this one is ready.
    let mut taken = match &profile.node.handover_socket {
        Some(path) => handover::take_over(path)?,
        None => None,
    };
    let mut inherited = taken.as_mut().map(|t| t.sockets()).unwrap_or_default();
    // Bound first (or inherited): a busy or bad admin address is a start-up error.
    let admin = match &profile.admin {
        Some(a) => Some(match inherited.take_admin(a.addr) {
            Some(l) => AdminServer::from_listener(l),
            None => AdminServer::bind(a.addr)?,
        }),
        None => None,
    };
    let admin_dup = match &admin {
        Some(a) => Some(a.try_clone_listener()?),
        None => None,
    };
    let mut source = Some(RouteSource::start(&profile, &routes)?);
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
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    let cfg = Arc::new(DataPlaneConfig::from_profile(&profile, resilience, &tls));
    let workers = dataplane::start(cfg.clone(), routes.clone(), inherited)?;
    admin_state.tls_listeners(
        profile
            .listeners
            .iter()
            .zip(&tls.listeners)
            .filter_map(|(l, t)| Some((l.name.clone(), t.clone()?)))
            .collect(),
    );
    admin_state.serving(workers.stats());
    if let Some(socket) = admin_dup {
        if let Ok(mut list) = workers.sockets().lock() {
            list.push(ListeningSocket {
                name: ADMIN_SOCKET.to_string(),
                addr: socket.local_addr()?,
                socket,
            });
        }
    }
    if let Some(t) = taken {
        t.ready()?;
        tracing::info!("took the listeners over from the running node, which now drains");
    }
    let (handed_over_tx, handed_over) = mpsc::channel();
    let server = match &profile.node.handover_socket {
        Some(path) => {
            match HandoverServer::start(path, workers.sockets(), handed_over_tx.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(socket = %path.display(), "no handover socket, upgrades will not be seamless: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let driver = workers
        .drivers()
        .first()
        .map(|d| d.to_string())
        .unwrap_or_default();
    for l in &profile.listeners {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        tracing::info!(listener = %l.name, addr = %l.addr, role = ?l.role, scheme, "listening");
    }
    tracing::info!(workers = cfg.workers, driver = %driver, "ringway running");

    let mut current = profile;
    let ending = 'serve: loop {
        for sig in signals.pending() {
            if sig == signal_hook::consts::SIGHUP {
                if let Some(path) = profile_path {
                    reload(path, &mut current, &mut source, &routes, &tls.listeners);
                } else {
                    tracing::info!("SIGHUP ignored: this node was not started from a profile file");
                }
            } else {
                break 'serve Ending::Signal(sig);
            }
        }
        if handed_over.recv_timeout(Duration::from_millis(100)).is_ok() {
            break Ending::HandedOver;
        }
    };
    match ending {
        Ending::Signal(sig) => tracing::info!(
            signal = sig,
            grace_secs = cfg.shutdown_grace.as_secs(),
            "stopping: draining connections"
        ),
        Ending::HandedOver => {
            workers.drain();
            // Idle keep-alive connections get a moment to send one more request, answered
            // with `Connection: close`; a signal cuts the wait short.
            let linger = Duration::from_millis(current.node.handover_linger_ms);
            let until = std::time::Instant::now() + linger;
            while std::time::Instant::now() < until && signals.pending().next().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    admin_state.draining();
    workers.stop();
    workers.join();
    if let Some(source) = source.take() {
        source.stop();
    }
    if let Some(server) = server {
        server.stop();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Client and upstream connections each take a file descriptor: lift the soft limit on open
/// files to the hard one (as nginx's `worker_rlimit_nofile` or systemd's `LimitNOFILE` would).
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let soft = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(
                    from = soft,
                    to = lim.rlim_max,
                    "raised the open files limit"
                );
            }
        }
    }
}

/// SIGHUP: re-read the profile; apply `[log] level` and the routes file (`[routes] file`,
/// `file_poll_ms`; the file is re-read even when unchanged); report every other change as
/// needing a restart. A profile that no longer loads is refused and nothing changes.
fn reload(
    path: &Path,
    current: &mut Profile,
    source: &mut Option<RouteSource>,
    routes: &TableHandle,
    tls: &[Option<Arc<Terminator>>],
) {
    let new = match Profile::load(path) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("reload refused: {e}; keeping the running configuration");
            return;
        }
    };
    let mut applied = Vec::new();
    if new.log.level != current.log.level {
        if set_log_level(&new.log.level) {
            applied.push(format!(
                "log.level {} -> {}",
                current.log.level, new.log.level
            ));
            current.log.level = new.log.level.clone();
        } else {
            tracing::warn!("log.level changed, but RUST_LOG sets the log filter: unchanged");
        }
    }
    if current.routes.source == RouteSourceKind::File && new.routes.source == RouteSourceKind::File
    {
        let opts = compile_options(current)
            .inspect_err(|e| tracing::error!("routes file not reloaded: {e}"));
        if let (Some(file_path), Ok(opts)) = (new.routes.file.clone(), opts) {
            if file::load_and_publish(&file_path, &opts, routes) {
                if new.routes.file != current.routes.file
                    || new.routes.file_poll_ms != current.routes.file_poll_ms
                {
                    if let Some(old) = source.take() {
                        old.stop();
                    }
                    match RouteSource::watch_file(
                        file_path.clone(),
                        new.routes.file_poll_ms,
                        opts,
                        routes,
                    ) {
                        Ok(s) => *source = Some(s),
                        Err(e) => tracing::error!("cannot watch {}: {e}", file_path.display()),
                    }
                    applied.push(format!(
                        "routes.file {} (polled every {} ms)",
                        file_path.display(),
                        new.routes.file_poll_ms
                    ));
                    current.routes.file = new.routes.file.clone();
                    current.routes.file_poll_ms = new.routes.file_poll_ms;
                } else {
                    applied.push("routes file re-read".to_string());
                }
            } else {
                tracing::error!(file = %file_path.display(), "routes file not reloaded; keeping the current routes");
            }
        }
    }
    // Certificates (and every other `[listener.tls]` key) of a TLS listener are re-read for
    // new handshakes; a file that no longer loads keeps the running ones.
    for (i, t) in tls.iter().enumerate() {
        let (Some(t), Some(l)) = (t, new.listeners.get(i)) else {
            continue;
        };
        let Some(new_tls) = &l.tls else { continue };
        match t.reload(i, new_tls, path) {
            Ok(()) => {
                applied.push(format!("listener {} TLS certificates re-read", l.name));
                current.listeners[i].tls = Some(new_tls.clone());
            }
            Err(e) => tracing::error!(
                listener = %l.name,
                "TLS certificates not reloaded, keeping the running ones: {e}"
            ),
        }
    }
    for key in needs_restart(current, &new) {
        tracing::warn!(key, "changed in the profile; takes effect only after a restart or a handover (ringway run with the new profile)");
    }
    tracing::info!(applied = %applied.join("; "), "profile reloaded on SIGHUP");
}

/// Sections (or keys) that differ between the running profile and a re-read one and cannot be
/// applied to a running node.
fn needs_restart(old: &Profile, new: &Profile) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut keys = Vec::new();
    // `[listener.tls]` of a TLS listener was applied (or refused) by the reload itself; turning
    // TLS on or off needs a restart.
    let mut listeners_as_running = new.listeners.clone();
    for (i, l) in listeners_as_running.iter_mut().enumerate() {
        match old.listeners.get(i) {
            Some(o) if o.tls.is_some() && l.tls.is_some() => l.tls = o.tls.clone(),
            _ => {}
        }
    }
    let (o, n) = (&old.routes, &new.routes);
    if o.source != n.source {
        keys.push("routes.source");
    }
    if o.source == RouteSourceKind::Etcd && (o.file != n.file || o.file_poll_ms != n.file_poll_ms) {
        keys.push("routes.file");
    }
    if o.snapshot != n.snapshot {
        keys.push("routes.snapshot");
    }
    for (key, a, b) in [
        (
            "node",
            &old.node as &dyn std::fmt::Debug,
            &new.node as &dyn std::fmt::Debug,
        ),
        ("listener", &old.listeners, &listeners_as_running),
        ("etcd", &old.etcd, &new.etcd),
        ("limits", &old.limits, &new.limits),
        ("timeouts", &old.timeouts, &new.timeouts),
        ("upstream", &old.upstream, &new.upstream),
        ("throttle", &old.throttle, &new.throttle),
        ("admin", &old.admin, &new.admin),
    ] {
        if differs(a, b) {
            keys.push(key);
        }
    }
    keys
}

/// `ringway check --profile FILE`: exit 0 when the profile and every route value are valid.
pub fn check_profile(path: &Path) -> anyhow::Result<ExitCode> {
    let profile = Profile::load(path)?;
    for (i, l) in profile.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            for line in crate::tls::check(i, t, path)? {
                println!("listener {}: {line}", l.name);
            }
        }
    }
    if let Some(ca) = &profile.upstream.ca_file {
        crate::tls::upstream_client(Some(ca), path)?;
        println!("upstream ca_file {}: ok", ca.display());
    }
    println!("profile {}: ok", path.display());
    let opts = compile_options(&profile)?;
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
