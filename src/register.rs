//! `ringway register`: what vulcand's per-language registration libraries did, as one command a
//! service's start script runs. It publishes the service's backend, frontends and middlewares,
//! puts this instance's server key on an etcd lease and keeps the lease alive; on SIGTERM or
//! SIGINT it revokes the lease, so the instance leaves every node's table at once.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::EtcdConfig;
use crate::control::etcd;
use crate::route::{compile, CompileOptions, KvSet};

/// Arguments of `ringway register`.
#[derive(clap::Args, Debug, Clone)]
pub struct RegisterArgs {
    /// etcd client URL (repeat for a cluster). Default: $RINGWAY_ETCD (comma-separated), else
    /// http://127.0.0.1:2379. https:// URLs speak TLS (see --cacert, --cert, --key).
    #[arg(long = "etcd", value_name = "URL")]
    pub etcd: Vec<String>,
    /// Key prefix of the vulcand layout.
    #[arg(long, default_value = "/vulcand")]
    pub prefix: String,
    /// Backend id of the service; its document (`{"Type":"http"}`) is written unless it exists.
    #[arg(long, value_name = "ID")]
    pub backend: String,
    /// Server id of this instance. Default: <hostname>:<port of --url>.
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,
    /// URL this instance serves on, e.g. http://10.0.0.5:5000.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// A frontend routed to the backend, as ID=ROUTE, e.g. users=PathPrefix(`/users`).
    /// Repeatable.
    #[arg(long = "frontend", value_name = "ID=ROUTE")]
    pub frontends: Vec<String>,
    /// vulcand frontend settings for one of the frontends, as ID=JSON, e.g.
    /// users='{"FailoverPredicate": "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2", "PassHostHeader": true}'.
    /// Repeatable (one per frontend).
    #[arg(long = "frontend-settings", value_name = "ID=JSON")]
    pub frontend_settings: Vec<String>,
    /// A middleware document for one of the frontends, as FRONTEND/ID=JSON. Repeatable.
    #[arg(long = "middleware", value_name = "FRONTEND/ID=JSON")]
    pub middlewares: Vec<String>,
    /// Lease TTL of the server key (Go duration: 10s, 1m, 1500ms; whole seconds in etcd).
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Write everything once, the server key without a lease, and exit.
    #[arg(long)]
    pub once: bool,
    /// etcd user (with --password or $RINGWAY_ETCD_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,
    /// etcd password. Prefer $RINGWAY_ETCD_PASSWORD, which does not show in `ps`.
    #[arg(long)]
    pub password: Option<String>,
    /// CA bundle (PEM) that signs etcd's certificates (as etcdctl's --cacert). Default: the
    /// system's CA store, for https:// endpoints.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth (as etcdctl's --cert); needs
    /// --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert (as etcdctl's --key).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Deadline for reaching etcd and for each write.
    #[arg(long, default_value = "3s", value_parser = parse_ttl)]
    pub dial_timeout: Duration,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, ""), |i| t.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// Everything a registration writes, computed and validated before touching etcd.
#[derive(Debug)]
struct Plan {
    backend_key: String,
    server_key: String,
    server_doc: String,
    /// Frontend and middleware documents, written when they differ from what etcd holds.
    docs: Vec<(String, String)>,
    ttl_secs: i64,
}

fn valid_id(what: &str, id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) {
        bail!("{what} {id:?}: ids must be non-empty, without '/' or spaces");
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Plan {
    fn from_args(a: &RegisterArgs) -> anyhow::Result<Plan> {
        let prefix = etcd::key_prefix(&a.prefix);
        if !prefix.starts_with('/') {
            bail!("--prefix must start with '/'");
        }
        valid_id("--backend", &a.backend)?;
        let authority = a
            .url
            .strip_prefix("http://")
            .with_context(|| format!("--url {:?} must start with http://", a.url))?
            .trim_end_matches('/');
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("80");
        let server_id = a
            .server_id
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", hostname()));
        valid_id("--server-id", &server_id)?;
        let bid = &a.backend;
        let mut settings = std::collections::BTreeMap::new();
        for f in &a.frontend_settings {
            let (fid, json) = f
                .split_once('=')
                .with_context(|| format!("--frontend-settings {f:?} must be ID=JSON"))?;
            let doc: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--frontend-settings {fid}: not JSON"))?;
            if !doc.is_object() {
                bail!("--frontend-settings {fid}: not a JSON object");
            }
            if settings.insert(fid, doc).is_some() {
                bail!("--frontend-settings {fid}: given twice");
            }
        }
        let mut docs = Vec::new();
        for f in &a.frontends {
            let (fid, route) = f
                .split_once('=')
                .with_context(|| format!("--frontend {f:?} must be ID=ROUTE"))?;
            valid_id("--frontend", fid)?;
            let mut doc = serde_json::json!({"Type": "http", "BackendId": bid, "Route": route});
            if let Some(s) = settings.remove(fid) {
                doc["Settings"] = s;
            }
            docs.push((format!("{prefix}frontends/{fid}/frontend"), doc.to_string()));
        }
        if let Some(fid) = settings.keys().next() {
            bail!("--frontend-settings {fid}: no --frontend {fid}=ROUTE to attach them to");
        }
        for m in &a.middlewares {
            let (path, json) = m
                .split_once('=')
                .with_context(|| format!("--middleware {m:?} must be FRONTEND/ID=JSON"))?;
            let (fid, mid) = path
                .split_once('/')
                .with_context(|| format!("--middleware {m:?} must be FRONTEND/ID=JSON"))?;
            valid_id("--middleware frontend", fid)?;
            valid_id("--middleware id", mid)?;
            let mut doc: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--middleware {path}: not JSON"))?;
            let obj = doc
                .as_object_mut()
                .with_context(|| format!("--middleware {path}: not a JSON object"))?;
            obj.entry("Id").or_insert_with(|| mid.into());
            docs.push((
                format!("{prefix}frontends/{fid}/middlewares/{mid}"),
                doc.to_string(),
            ));
        }
        let plan = Plan {
            backend_key: format!("{prefix}backends/{bid}/backend"),
            server_key: format!("{prefix}backends/{bid}/servers/{server_id}"),
            server_doc: serde_json::json!({"URL": a.url}).to_string(),
            docs,
            ttl_secs: a.ttl.as_secs_f64().ceil().max(1.0) as i64,
        };
        plan.validate(&a.prefix)?;
        Ok(plan)
    }

    fn backend_id(&self) -> &str {
        let rest = self.backend_key.trim_end_matches("/backend");
        rest.rsplit('/').next().unwrap_or(rest)
    }

    /// Compile what would be written on its own: a value every node would skip is refused here.
    fn validate(&self, prefix: &str) -> anyhow::Result<()> {
        let mut kv = KvSet::default();
        kv.entries
            .insert(self.backend_key.clone(), r#"{"Type":"http"}"#.into());
        kv.entries
            .insert(self.server_key.clone(), self.server_doc.clone());
        kv.entries.extend(self.docs.iter().cloned());
        // A middleware may belong to a frontend another service registered: stand one in.
        let ours: Vec<String> = kv.entries.keys().cloned().collect();
        for key in &ours {
            if let Some((front, _)) = key.split_once("/middlewares/") {
                let frontend = format!("{front}/frontend");
                kv.entries.entry(frontend).or_insert_with(|| {
                    let route = "Path(`/.ringway-register-check`)";
                    serde_json::json!({"Type": "http", "BackendId": self.backend_id(), "Route": route})
                        .to_string()
                });
            }
        }
        let opts = CompileOptions {
            prefix: prefix.to_string(),
            ..CompileOptions::default()
        };
        let report = compile(&kv, &opts).report;
        if let Some(s) = report.skipped.iter().find(|s| ours.contains(&s.key)) {
            bail!("{}: {} (nothing was written)", s.key, s.reason);
        }
        Ok(())
    }
}

/// `ringway register ...`.
pub fn run(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    crate::node::init_logging("info");
    let plan = Plan::from_args(&args)?;
    let mut cfg = EtcdConfig {
        prefix: args.prefix.clone(),
        dial_timeout_ms: args.dial_timeout.as_millis().max(1) as u64,
        username: args.username.clone(),
        ca_file: args.cacert.clone(),
        cert_file: args.cert.clone(),
        key_file: args.key.clone(),
        password: args
            .password
            .clone()
            .or_else(|| std::env::var("RINGWAY_ETCD_PASSWORD").ok()),
        ..EtcdConfig::default()
    };
    if cfg.username.is_none() {
        cfg.password = None;
    }
    if !args.etcd.is_empty() {
        cfg.endpoints = args.etcd.clone();
    } else if let Ok(env) = std::env::var("RINGWAY_ETCD") {
        cfg.endpoints = env
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
    }
    if let Some(reason) = cfg.scheme_error() {
        bail!("--etcd {}: {reason}", cfg.endpoints.join(","));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(register(cfg, plan, args.once))
}

async fn deadline<T>(
    cfg: &EtcdConfig,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    let d = Duration::from_millis(cfg.dial_timeout_ms);
    let endpoints = cfg.endpoints.join(",");
    match tokio::time::timeout(d, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => bail!("etcd at {endpoints}: {what}: {e}"),
        Err(_) => bail!("etcd at {endpoints}: {what}: no answer within {d:?}"),
    }
}

/// Write the backend (unless it exists), the frontends and middlewares (when they differ), and
/// the server key on `lease` (0 = no lease).
async fn publish(
    client: &mut Client,
    cfg: &EtcdConfig,
    plan: &Plan,
    lease: i64,
) -> anyhow::Result<()> {
    let backend = Txn::new()
        .when([Compare::version(
            plan.backend_key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            plan.backend_key.as_str(),
            r#"{"Type":"http"}"#,
            None,
        )]);
    deadline(cfg, "write the backend", client.txn(backend)).await?;
    for (key, doc) in &plan.docs {
        let current = deadline(cfg, "read", client.get(key.as_str(), None)).await?;
        if current.kvs().first().map(|kv| kv.value()) != Some(doc.as_bytes()) {
            deadline(cfg, "write", client.put(key.as_str(), doc.as_str(), None)).await?;
            tracing::info!(key = %key, "written");
        }
    }
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    deadline(
        cfg,
        "write the server key",
        client.put(plan.server_key.as_str(), plan.server_doc.as_str(), opts),
    )
    .await?;
    Ok(())
}

/// Grant a lease and publish everything on it.
async fn publish_on_new_lease(
    client: &mut Client,
    cfg: &EtcdConfig,
    plan: &Plan,
) -> anyhow::Result<i64> {
    let lease = deadline(
        cfg,
        "grant a lease",
        client.lease_grant(plan.ttl_secs, None),
    )
    .await?
    .id();
    publish(client, cfg, plan, lease).await?;
    tracing::info!(
        server = %plan.server_key,
        url = %plan.server_doc,
        lease = format!("{lease:x}"),
        ttl_secs = plan.ttl_secs,
        "registered"
    );
    Ok(lease)
}

/// Connect to the member after `from`'s (the one that just failed), or say why not.
async fn rotate(cfg: &EtcdConfig, from: &etcd::Member) -> Option<etcd::Member> {
    match etcd::connect_from(cfg, from.next()).await {
        Ok(m) => {
            tracing::info!(endpoint = %cfg.endpoints[m.endpoint], "talking to another etcd member");
            Some(m)
        }
        Err(e) => {
            tracing::warn!("{e}; retrying");
            None
        }
    }
}

/// The first connect, tried over every endpoint in rounds for up to twice the dial deadline:
/// during a leader election every member refuses for a moment ("leader changed"), which is no
/// reason to give up.
async fn connect_first(cfg: &EtcdConfig) -> anyhow::Result<etcd::Member> {
    let give_up = tokio::time::Instant::now() + 2 * Duration::from_millis(cfg.dial_timeout_ms);
    let mut start = etcd::first_endpoint(cfg);
    loop {
        match etcd::connect_from(cfg, start).await {
            Ok(m) => return Ok(m),
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!("{e}; retrying");
                start += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn register(cfg: EtcdConfig, plan: Plan, once: bool) -> anyhow::Result<ExitCode> {
    let mut member = connect_first(&cfg).await?;
    if once {
        publish(&mut member.client, &cfg, &plan, 0).await?;
        tracing::info!(server = %plan.server_key, "registered without a lease");
        return Ok(ExitCode::SUCCESS);
    }
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // The first publish is tried a few times, each after a failure on the next member: with a
    // cluster, the member this instance reached may just have gone away while the others answer.
    let mut tries = 1;
    let mut lease = loop {
        match publish_on_new_lease(&mut member.client, &cfg, &plan).await {
            Ok(l) => break l,
            Err(e) if tries < FIRST_PUBLISH_TRIES => {
                tracing::warn!("{e:#}; retrying");
                tries += 1;
                match rotate(&cfg, &member).await {
                    Some(m) => member = m,
                    None => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
            Err(e) => return Err(e),
        }
    };
    let every = Duration::from_secs(plan.ttl_secs as u64) / 3;
    // A keep-alive that takes longer than a third of the TTL is treated as lost, so a stalled
    // member is left with time to spare on the lease.
    let keep_alive_cfg = EtcdConfig {
        dial_timeout_ms: cfg.dial_timeout_ms.min(every.as_millis().max(300) as u64),
        ..cfg.clone()
    };
    let mut keeper = None;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(300)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        match keep_alive(&mut member.client, &keep_alive_cfg, lease, &mut keeper).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    lease = format!("{lease:x}"),
                    "lease expired: registering again"
                );
                keeper = None;
                match publish_on_new_lease(&mut member.client, &cfg, &plan).await {
                    Ok(l) => lease = l,
                    Err(e) => {
                        tracing::warn!("{e:#}; retrying");
                        if let Some(m) = rotate(&cfg, &member).await {
                            member = m;
                        }
                    }
                }
            }
            Err(e) => {
                keeper = None;
                tracing::warn!("{e:#}; retrying on the next etcd member");
                if let Some(m) = rotate(&cfg, &member).await {
                    member = m;
                }
            }
        }
    }
    let mut revoked = deadline(&cfg, "revoke the lease", member.client.lease_revoke(lease)).await;
    if revoked.is_err() {
        if let Some(mut m) = rotate(&cfg, &member).await {
            revoked = deadline(&cfg, "revoke the lease", m.client.lease_revoke(lease)).await;
        }
    }
    match revoked {
        Ok(_) => tracing::info!(server = %plan.server_key, "lease revoked: deregistered"),
        Err(e) => tracing::warn!(
            "{e:#}; the server key expires within {}s on its own",
            plan.ttl_secs
        ),
    }
    Ok(ExitCode::SUCCESS)
}

type Keeper = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// Attempts at the first registration before `ringway register` gives up.
const FIRST_PUBLISH_TRIES: u32 = 6;

/// How etcd-client reports a keep-alive on a lease etcd does not know (any more).
const LEASE_NOT_FOUND: &str = "lease not found";

/// One keep-alive round trip. Ok(false) when etcd says the lease is gone.
async fn keep_alive(
    client: &mut Client,
    cfg: &EtcdConfig,
    lease: i64,
    keeper: &mut Option<Keeper>,
) -> anyhow::Result<bool> {
    if keeper.is_none() {
        // A new keeper on a lease etcd no longer has (it expired while etcd or the way to it
        // was down) fails with "lease not found": that is a gone lease, not a reason to retry.
        let opened = deadline(cfg, "keep the lease alive", async {
            match client.lease_keep_alive(lease).await {
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m == LEASE_NOT_FOUND => Ok(None),
                other => other.map(Some),
            }
        })
        .await?;
        match opened {
            Some(k) => *keeper = Some(k),
            None => return Ok(false),
        }
    }
    let Some((k, stream)) = keeper.as_mut() else {
        unreachable!("set just above")
    };
    deadline(cfg, "keep the lease alive", k.keep_alive()).await?;
    match deadline(cfg, "keep the lease alive", stream.message()).await? {
        Some(resp) => Ok(resp.ttl() > 0),
        None => bail!("etcd closed the keep-alive stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RegisterArgs,
    }

    fn args(extra: &[&str]) -> RegisterArgs {
        let mut argv = vec![
            "register",
            "--backend",
            "users",
            "--url",
            "http://127.0.0.1:5000",
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn tls_flags_are_spelled_as_etcdctl_and_cert_needs_key() {
        let a = args(&["--cacert", "ca.pem", "--cert", "c.pem", "--key", "c.key"]);
        assert_eq!(a.cacert.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(a.key.as_deref(), Some(std::path::Path::new("c.key")));
        let base = ["register", "--backend", "b", "--url", "http://127.0.0.1:1"];
        for alone in [["--cert", "c.pem"], ["--key", "c.key"]] {
            let argv = base.iter().chain(alone.iter());
            assert!(Cli::try_parse_from(argv).is_err(), "{alone:?}");
        }
    }

    #[test]
    fn ttls_are_go_style_durations() {
        assert_eq!(parse_ttl("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("7"), Ok(Duration::from_secs(7)));
        assert!(parse_ttl("0s").is_err() && parse_ttl("10 parsecs").is_err());
    }

    #[test]
    fn a_plan_writes_vulcand_keys_and_defaults_the_server_id() {
        let plan = Plan::from_args(&args(&[
            "--frontend",
            "users=PathPrefix(`/users`)",
            "--middleware",
            r#"users/rl={"Type":"ratelimit","Priority":1,"Middleware":{"Requests":10,"PeriodSeconds":1,"Variable":"client.ip"}}"#,
            "--ttl",
            "1500ms",
        ]))
        .unwrap();
        assert_eq!(plan.backend_key, "/vulcand/backends/users/backend");
        assert_eq!(
            plan.server_key,
            format!("/vulcand/backends/users/servers/{}:5000", hostname())
        );
        assert_eq!(plan.server_doc, r#"{"URL":"http://127.0.0.1:5000"}"#);
        assert_eq!(plan.ttl_secs, 2);
        assert_eq!(plan.docs[0].0, "/vulcand/frontends/users/frontend");
        let fe: serde_json::Value = serde_json::from_str(&plan.docs[0].1).unwrap();
        assert_eq!(fe["Route"], "PathPrefix(`/users`)");
        assert_eq!(fe["BackendId"], "users");
        assert_eq!(plan.docs[1].0, "/vulcand/frontends/users/middlewares/rl");
        assert!(plan.docs[1].1.contains(r#""Id":"rl""#));
    }

    #[test]
    fn frontend_settings_go_into_the_frontend_document_and_are_checked() {
        let scroll = r#"users={"FailoverPredicate": "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2", "PassHostHeader": true}"#;
        let plan = Plan::from_args(&args(&[
            "--frontend",
            "users=PathPrefix(`/users`)",
            "--frontend-settings",
            scroll,
        ]))
        .unwrap();
        let fe: serde_json::Value = serde_json::from_str(&plan.docs[0].1).unwrap();
        assert_eq!(
            fe["Settings"]["FailoverPredicate"],
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"
        );
        assert_eq!(fe["Settings"]["PassHostHeader"], true);
        let err = Plan::from_args(&args(&[
            "--frontend",
            "users=PathPrefix(`/users`)",
            "--frontend-settings",
            r#"users={"FailoverPredicate": "Attempts() <= "}"#,
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("FailoverPredicate")
                && err.contains("at byte 14")
                && err.contains("nothing was written"),
            "{err}"
        );
    }

    #[test]
    fn malformed_arguments_are_refused_before_anything_is_written() {
        for bad in [
            &["--frontend", "no-equals-sign"][..],
            &["--frontend", "a/b=Path(`/`)"],
            &["--middleware", "users=not-json"],
            &["--middleware", "users/rl=[1]"],
            &["--server-id", "has space"],
            &["--frontend-settings", "users={}"],
            &[
                "--frontend",
                "users=Path(`/`)",
                "--frontend-settings",
                "users=[1]",
            ],
            &[
                "--frontend",
                "users=Path(`/`)",
                "--frontend-settings",
                "users=nope",
            ],
        ] {
            assert!(Plan::from_args(&args(bad)).is_err(), "{bad:?}");
        }
        let mut a = args(&[]);
        a.url = "10.0.0.1:5000".into();
        assert!(Plan::from_args(&a).is_err());
    }
}
