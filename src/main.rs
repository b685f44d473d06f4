//! The `ringway` command: the demo (no arguments), `run`, `check`, `register`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: ringway::allocator::Mimalloc = ringway::allocator::Mimalloc;

/// The crate version and the commit the binary was built from (see `build.rs`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RINGWAY_COMMIT"), ")");

/// A thread-per-core HTTP/1.1 service-mesh node: routes from vulcand's etcd layout or a file,
/// io_uring workers pinned one per core.
#[derive(Parser)]
#[command(name = "ringway", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from a deploy profile.
    Run {
        /// Profile TOML file (see deploy/profiles/).
        #[arg(long, short)]
        profile: PathBuf,
    },
    /// Validate a profile and its routes; print the compiled table, conflicts and skipped
    /// values. Exits 1 when anything is wrong.
    Check {
        #[arg(long, short)]
        profile: PathBuf,
    },
    /// Publish a service's backend, frontends and this instance's server in etcd, and keep the
    /// server key alive on a lease until SIGTERM/SIGINT (which revokes it).
    Register(Box<ringway::register::RegisterArgs>),
    /// Run the built-in demo: two small services and routes to them on loopback, no etcd.
    Demo {
        /// Address of the demo's mesh listener.
        #[arg(long, default_value = ringway::demo::DEMO_ADDR)]
        addr: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    // One crypto provider for every rustls user in the process (etcd's gRPC channel, the
    // listeners), so none can find the process default missing or ambiguous. Err only means a
    // provider is already installed, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        // DEMO_ADDR is a literal socket address, so parsing it cannot fail.
        None => ringway::demo::run(ringway::demo::DEMO_ADDR.parse().expect("a valid address")),
        Some(Command::Demo { addr }) => ringway::demo::run(addr),
        Some(Command::Run { profile }) => ringway::node::run_profile(&profile),
        Some(Command::Check { profile }) => ringway::node::check_profile(&profile),
        Some(Command::Register(args)) => ringway::register::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
