//! A real `etcd` (Debian's etcd-server) on free loopback ports with a temporary data dir,
//! killed on drop and restartable on the same ports and data, in plain text or over TLS with
//! client certificates; and a small etcd client for tests, speaking vulcand's layout, on its
//! own tokio runtime.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, CompactionOptions, ConnectOptions, Identity, PutOptions, TlsOptions, Txn,
    TxnOp,
};

use crate::harness::{free_port, TempDir};

/// PEM files for an etcd that serves TLS and requires client certificates.
#[derive(Clone, Debug)]
pub struct EtcdTlsFiles {
    /// The CA that signed `server_cert`, which clients trust.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The CA etcd trusts for client certificates (`--trusted-ca-file`).
    pub client_ca: PathBuf,
    /// A client certificate the CA signed, for the test's own client.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A single-member etcd cluster for one test, or one member of an [`EtcdCluster`].
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    tls: Option<EtcdTlsFiles>,
    name: String,
    /// `--initial-cluster`; empty for a single member (it is then `<name>=<peer url>`).
    initial_cluster: String,
}

impl EtcdServer {
    /// Start etcd and wait until it is healthy.
    pub fn start() -> EtcdServer {
        EtcdServer::start_on_free_ports(None)
    }

    /// Start etcd serving clients over TLS only (`https://`), with `--client-cert-auth`.
    pub fn start_tls(files: &EtcdTlsFiles) -> EtcdServer {
        EtcdServer::start_on_free_ports(Some(files.clone()))
    }

    /// A port picked free can be taken before etcd binds it (tests run in parallel, and every
    /// outgoing connection takes an ephemeral port too): etcd then exits at once, and is
    /// started again on other ports.
    fn start_on_free_ports(tls: Option<EtcdTlsFiles>) -> EtcdServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = EtcdServer::stopped();
            s.tls = tls.clone();
            let log_before = s.spawn();
            match s.try_wait_healthy(log_before) {
                Ok(()) => return s,
                Err(log) if log.contains("address already in use") => last = log,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free ports for etcd in five tries:\n{last}");
    }

    /// Pick ports and a data dir without starting etcd (for "etcd is down" tests).
    pub fn stopped() -> EtcdServer {
        EtcdServer {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("etcd"),
            tls: None,
            name: "it".into(),
            initial_cluster: String::new(),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The client URL, e.g. `http://127.0.0.1:23790` (`https://` over TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    /// (Re)start etcd on the same ports and data dir and wait until it is healthy.
    pub fn restart(&mut self) {
        let log_before = self.spawn();
        self.wait_healthy(log_before);
    }

    /// Start the process; the length of its log before it started.
    fn spawn(&mut self) -> usize {
        assert!(self.child.is_none(), "etcd is already running");
        let peer = self.peer_url();
        let cluster = if self.initial_cluster.is_empty() {
            format!("{}={peer}", self.name)
        } else {
            self.initial_cluster.clone()
        };
        // A single member elects itself quickly with short ticks; members of a cluster get
        // ticks long enough that a busy test machine does not flap the leader.
        let (heartbeat, election) = if self.initial_cluster.is_empty() {
            (10, 100)
        } else {
            (50, 500)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("etcd.log"))
            .expect("etcd log file");
        let log_before = self.log().len();
        let mut command = Command::new(etcd_bin());
        if let Some(t) = &self.tls {
            command
                .arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.client_ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={cluster}"))
            .arg("--initial-cluster-token=ringway-it")
            .arg(format!("--heartbeat-interval={heartbeat}"))
            .arg(format!("--election-timeout={election}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (install Debian's etcd-server)");
        self.child = Some(child);
        log_before
    }

    fn wait_healthy(&mut self, log_before: usize) {
        if let Err(why) = self.try_wait_healthy(log_before) {
            panic!("{why}");
        }
    }

    fn try_wait_healthy(&mut self, log_before: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("etcd exited ({status}):\n{}", self.log()));
            }
            if self.healthy(log_before) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("etcd did not become healthy:\n{}", self.log()))
    }

    /// Over TLS, `/health` needs a client certificate: etcd's own "ready" line since this
    /// start (the log is appended to across restarts) says the same.
    fn healthy(&self, log_before: usize) -> bool {
        if self.tls.is_some() {
            return self
                .log()
                .get(log_before..)
                .is_some_and(|l| l.contains("ready to serve client requests"));
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    }

    /// Kill etcd (SIGKILL) and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Trust only the client certificates `client_ca` signed from the next (re)start on.
    pub fn set_client_ca(&mut self, client_ca: PathBuf) {
        self.tls.as_mut().expect("a TLS etcd").client_ca = client_ca;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("etcd.log")).unwrap_or_default()
    }

    /// A client for this server's keys under `/vulcand` (with the test's client certificate
    /// over TLS).
    pub fn kv(&self) -> Kv {
        let options = self.tls.as_ref().map(|t| {
            let pem = |p: &PathBuf| std::fs::read(p).expect("read a test PEM file");
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(pem(&t.ca)))
                .identity(Identity::from_pem(pem(&t.client_cert), pem(&t.client_key)));
            ConnectOptions::new().with_tls(tls)
        });
        Kv::connect(&self.endpoint(), "/vulcand", options)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-member etcd cluster on loopback, each member on its own free ports and data dir.
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Start three members and wait until each is healthy (which needs a leader).
    pub fn start() -> EtcdCluster {
        let mut members: Vec<EtcdServer> = (0..3)
            .map(|i| {
                let mut m = EtcdServer::stopped();
                m.name = format!("m{i}");
                m
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = cluster.clone();
            // Start all before waiting: a member is healthy only once a quorum elected a leader.
            m.spawn();
        }
        for m in &mut members {
            m.wait_healthy(0);
        }
        EtcdCluster { members }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The index of the member that leads, as the running members report it.
    fn leader(&self) -> Option<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let mut ids = Vec::new();
            let mut leader = None;
            for m in &self.members {
                let Ok(mut c) = Client::connect([m.endpoint()], None).await else {
                    ids.push(0);
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(1), c.status()).await {
                    Ok(Ok(st)) => {
                        ids.push(st.header().map_or(0, |h| h.member_id()));
                        leader = leader.or(Some(st.leader()).filter(|l| *l != 0));
                    }
                    _ => ids.push(0),
                }
            }
            ids.iter().position(|id| Some(*id) == leader)
        })
    }

    /// The index of the leading member, once the running members agree there is one.
    pub fn await_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd cluster elected no leader"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn etcd_bin() -> PathBuf {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// A blocking etcd client over vulcand's layout under `prefix`.
pub struct Kv {
    rt: tokio::runtime::Runtime,
    client: Client,
    prefix: String,
}

impl Kv {
    fn connect(endpoint: &str, prefix: &str, options: Option<ConnectOptions>) -> Kv {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = rt
            .block_on(Client::connect([endpoint], options))
            .expect("connect to etcd");
        Kv {
            rt,
            client,
            prefix: prefix.to_string(),
        }
    }

    /// Full key of a path relative to the prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    pub fn put(&self, rel: &str, value: &str) {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.put(self.key(rel), value, None))
            .expect("etcd put");
    }

    pub fn delete(&self, rel: &str) {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.delete(self.key(rel), None))
            .expect("etcd delete");
    }

    pub fn get(&self, rel: &str) -> Option<String> {
        let mut c = self.client.clone();
        let resp = self
            .rt
            .block_on(c.get(self.key(rel), None))
            .expect("etcd get");
        resp.kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_string())
    }

    /// Put all pairs in one transaction (one revision).
    pub fn txn(&self, pairs: &[(&str, &str)]) {
        let ops: Vec<TxnOp> = pairs
            .iter()
            .map(|(k, v)| TxnOp::put(self.key(k), *v, None))
            .collect();
        let mut c = self.client.clone();
        self.rt
            .block_on(c.txn(Txn::new().and_then(ops)))
            .expect("etcd txn");
    }

    /// Put with a lease of `ttl_secs` that nobody keeps alive.
    pub fn put_on_lease(&self, rel: &str, value: &str, ttl_secs: i64) {
        let mut c = self.client.clone();
        self.rt.block_on(async {
            let lease = c.lease_grant(ttl_secs, None).await.expect("lease grant");
            c.put(
                self.key(rel),
                value,
                Some(PutOptions::new().with_lease(lease.id())),
            )
            .await
            .expect("etcd put on lease");
        });
    }

    /// Revoke the lease the key `rel` is on (as etcd does when a lease expires); returns
    /// whether the key had one.
    pub fn revoke_lease_of(&self, rel: &str) -> bool {
        let mut c = self.client.clone();
        self.rt.block_on(async {
            let resp = c.get(self.key(rel), None).await.expect("etcd get");
            let Some(lease) = resp.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0) else {
                return false;
            };
            c.lease_revoke(lease).await.expect("lease revoke");
            true
        })
    }

    /// Many puts in flight at once, `concurrency` at a time.
    pub fn put_many(&self, puts: Vec<(String, String)>, concurrency: usize) {
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (rel, value) in puts {
                while set.len() >= concurrency {
                    set.join_next().await.unwrap().unwrap();
                }
                let mut c = self.client.clone();
                let key = self.key(&rel);
                set.spawn(async move { c.put(key, value, None).await.expect("etcd put") });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let mut c = self.client.clone();
        let resp = self.rt.block_on(c.get("/", None)).expect("etcd get");
        resp.header().expect("header").revision()
    }

    /// Compact the history up to `revision` and wait until it is physically applied.
    pub fn compact(&self, revision: i64) {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.compact(revision, Some(CompactionOptions::new().with_physical())))
            .expect("etcd compact");
    }

    pub fn backend(&self, bid: &str) {
        self.put(&format!("backends/{bid}/backend"), r#"{"Type":"http"}"#);
    }

    pub fn server(&self, bid: &str, sid: &str, addr: std::net::SocketAddr) {
        self.put(&format!("backends/{bid}/servers/{sid}"), &server_doc(addr));
    }

    pub fn frontend(&self, fid: &str, bid: &str, route: &str) {
        self.put(
            &format!("frontends/{fid}/frontend"),
            &frontend_doc(bid, route),
        );
    }
}

pub fn server_doc(addr: std::net::SocketAddr) -> String {
    serde_json::json!({"URL": format!("http://{addr}")}).to_string()
}

pub fn frontend_doc(bid: &str, route: &str) -> String {
    serde_json::json!({"Type": "http", "BackendId": bid, "Route": route}).to_string()
}
