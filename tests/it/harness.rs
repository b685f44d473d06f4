//! Helpers that start real processes (the ringway binary) on free loopback ports, write their
//! profiles and routes files, and clean up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// The commit the binary under test was built from (`build.rs` sets it for the whole package,
/// these tests included). Checked to be a commit of this checkout when git knows one: a name
/// made up, or taken from the wrong repository, fails here.
pub fn build_commit() -> &'static str {
    let commit = env!("RINGWAY_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if commit != "unknown" && git(&["rev-parse", "--git-dir"]) {
        assert!(
            git(&["cat-file", "-e", &format!("{commit}^{{commit}}")]),
            "the build names {commit}, which is no commit of this checkout"
        );
    }
    commit
}

/// Run `openssl` (Debian's openssl package) in `dir`; panics with its errors when it fails.
#[allow(dead_code)]
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed ECDSA P-256 certificate valid for 30 days: `<name>.pem` and `<name>.key` in
/// `dir`, with the subject `subject` (`/CN=...`).
pub fn self_signed_p256(dir: &Path, name: &str, subject: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "30",
            "-subj",
            subject,
        ],
    );
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

    #[allow(dead_code)]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Which address of a socket [`tcp_sockets`] matches on.
#[derive(Clone, Copy)]
pub enum Side {
    Local,
    Remote,
}

/// `/proc/net/tcp`'s state codes.
pub const TCP_ESTABLISHED: &str = "01";
pub const TCP_CLOSE_WAIT: &str = "08";

/// IPv4 sockets in `state` whose `side` address has `port`, from `/proc/net/tcp` (what
/// `ss -tan` shows).
pub fn tcp_sockets(port: u16, side: Side, state: &str) -> usize {
    let want = format!(":{port:04X}");
    let column = match side {
        Side::Local => 1,
        Side::Remote => 2,
    };
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[column].ends_with(&want) && f[3] == state
        })
        .count()
}

/// A loopback port reserved by a bound, non-listening socket with SO_REUSEPORT only. The
/// kernel hands it to no other bind (tests run in parallel, and two ringways sharing a port
/// through SO_REUSEPORT would split each other's connections), ringway can still bind it (it
/// sets SO_REUSEPORT too), and a connection to it is refused while nobody listens.
pub struct PortHold {
    pub port: u16,
    _socket: socket2::Socket,
}

impl PortHold {
    pub fn new() -> PortHold {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind an ephemeral port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound address")
            .port();
        PortHold {
            port,
            _socket: socket,
        }
    }

    #[allow(dead_code)]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Give the port up (e.g. to bind a plain listener on it).
    #[allow(dead_code)]
    pub fn release(self) -> u16 {
        self.port
    }
}

/// Routes-file JSON: `backends` as (id, servers), `frontends` as (id, backend id, route).
pub fn routes_json(backends: &[(&str, &[SocketAddr])], frontends: &[(&str, &str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    for (bid, servers) in backends {
        map.extend(backend_entries(bid, servers));
    }
    for (fid, bid, route) in frontends {
        map.insert(
            format!("/vulcand/frontends/{fid}/frontend"),
            serde_json::json!({"Type": "http", "BackendId": bid, "Route": route}),
        );
    }
    serde_json::Value::Object(map).to_string()
}

/// `routes` (a routes file) with backend `bid`'s document carrying vulcand's `settings`
/// (`{"Timeouts": ..., "KeepAlive": ...}`).
pub fn with_backend_settings(routes: &str, bid: &str, settings: serde_json::Value) -> String {
    let mut map: serde_json::Value = serde_json::from_str(routes).expect("routes JSON");
    map[format!("/vulcand/backends/{bid}/backend")]["Settings"] = settings;
    map.to_string()
}

/// Routes-file entries of backend `bid` with `servers` (ids s0, s1, ... in this order), as a
/// JSON map to add frontends to.
pub fn backend_entries(
    bid: &str,
    servers: &[SocketAddr],
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert(
        format!("/vulcand/backends/{bid}/backend"),
        serde_json::json!({"Type": "http"}),
    );
    for (i, s) in servers.iter().enumerate() {
        map.insert(
            format!("/vulcand/backends/{bid}/servers/s{i}"),
            serde_json::json!({"URL": format!("http://{s}")}),
        );
    }
    map
}

/// Routes sending every path (`PathPrefix("/")`) to one backend made of `servers`.
/// Profile fragments for ringway's two event loops, for tests that must hold on both.
pub const DRIVERS: [(&str, &str); 2] = [
    ("io_uring", "[node]\nio_driver = \"iouring\"\n"),
    ("epoll", "[node]\nio_driver = \"epoll\"\n"),
];

pub fn catch_all(servers: &[SocketAddr]) -> String {
    routes_json(&[("b1", servers)], &[("all", "b1", "PathPrefix(`/`)")])
}

/// A running `ringway run` process with one mesh listener on a free port (and an edge
/// listener on another when started with [`Ringway::start_edge`]).
pub struct Ringway {
    child: Child,
    pub addr: SocketAddr,
    /// The edge listener's address, when there is one.
    pub edge_addr: Option<SocketAddr>,
    #[allow(dead_code)]
    pub dir: TempDir,
    log: PathBuf,
}

/// `ringway run --profile <profile>` with its log in `dir/ringway.log`. The log level comes
/// from `RINGWAY_TEST_LOG` (default info), or from the profile when `profile_log_level`.
fn spawn_run(profile: &Path, dir: &TempDir, profile_log_level: bool) -> (Child, PathBuf) {
    let log = dir.0.join("ringway.log");
    let log_file = std::fs::File::create(&log).expect("create log file");
    let mut command = Command::new(ringway_bin());
    command.args(["run", "--profile"]).arg(profile);
    if profile_log_level {
        command.env_remove("RUST_LOG");
    } else {
        command.env(
            "RUST_LOG",
            std::env::var("RINGWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start ringway");
    (child, log)
}

impl Ringway {
    /// Start with `routes` (routes-file JSON) and extra profile TOML appended after the
    /// `[[listener]]` and `[routes]` sections (e.g. `"[limits]\nmax_headers = 10\n"`).
    pub fn start(routes: &str, extra_profile: &str) -> Ringway {
        Ringway::start_with_workers(routes, extra_profile, 1)
    }

    pub fn start_with_workers(routes: &str, extra_profile: &str, workers: usize) -> Ringway {
        Ringway::start_file(
            routes,
            extra_profile,
            Launch {
                workers,
                ..Launch::default()
            },
        )
    }

    /// Routes from a file (`routes.json` in the node's directory, polled every 50 ms).
    fn start_file(routes: &str, extra_profile: &str, launch: Launch) -> Ringway {
        let dir = TempDir::new("node");
        dir.write("routes.json", routes);
        Ringway::launch(
            dir,
            "[routes]\nsource = \"file\"\nfile = \"routes.json\"\nfile_poll_ms = 50\n",
            extra_profile,
            launch,
        )
    }

    /// Like [`Ringway::start`], plus a listener `edge` with `role = "edge"` on another free
    /// port (`edge_addr`). `edge_listener` is TOML that goes inside that `[[listener]]`: its
    /// keys, then its `[[listener.expose]]` and `[listener.limits]` tables.
    pub fn start_edge(routes: &str, edge_listener: &str, extra_profile: &str) -> Ringway {
        Ringway::start_edge_with_workers(routes, edge_listener, extra_profile, 1)
    }

    pub fn start_edge_with_workers(
        routes: &str,
        edge_listener: &str,
        extra_profile: &str,
        workers: usize,
    ) -> Ringway {
        Ringway::start_file(
            routes,
            extra_profile,
            Launch {
                workers,
                edge_listener: Some(edge_listener.to_string()),
                ..Launch::default()
            },
        )
    }

    /// Like [`Ringway::start`] but with `RUST_LOG` unset, so the profile's `[log] level`
    /// decides what is logged.
    pub fn start_profile_log_level(routes: &str, extra_profile: &str) -> Ringway {
        Ringway::start_file(
            routes,
            extra_profile,
            Launch {
                workers: 1,
                profile_log_level: true,
                ..Launch::default()
            },
        )
    }

    /// The edge listener's address (panics without one).
    pub fn edge(&self) -> SocketAddr {
        self.edge_addr.expect("started with start_edge")
    }

    /// The profile file this node runs.
    pub fn profile_path(&self) -> PathBuf {
        self.dir.0.join("profile.toml")
    }

    /// A second `ringway run` on this node's profile (and listeners), e.g. to take over through
    /// a handover socket. Returns once its log says it is running. The new process's log lives
    /// in a directory of its own; the profile stays in this node's directory, so keep this
    /// node (its `Ringway` value) alive longer than the successor.
    pub fn successor(&self) -> Ringway {
        let dir = TempDir::new("successor");
        let (child, log) = spawn_run(&self.profile_path(), &dir, false);
        let mut r = Ringway {
            child,
            addr: self.addr,
            edge_addr: self.edge_addr,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.log().contains("ringway running") {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("successor exited early ({status}):\n{}", r.log());
            }
            assert!(
                Instant::now() < deadline,
                "successor not running:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// Wait until the log contains `needle`; false after `limit`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Start with routes from etcd at `endpoint` (prefix `/vulcand`), one worker. `dir` may
    /// hold files the profile names (a `snapshot.json`); `snapshot` turns
    /// `[routes] snapshot = "snapshot.json"` on.
    #[allow(dead_code)]
    pub fn start_etcd(
        dir: TempDir,
        endpoint: &str,
        snapshot: bool,
        extra_profile: &str,
    ) -> Ringway {
        Ringway::start_etcd_with(dir, &[endpoint.to_string()], snapshot, "", extra_profile)
    }

    /// A node reading routes from an etcd cluster at these client URLs.
    pub fn start_etcd_cluster(
        dir: TempDir,
        endpoints: &[String],
        snapshot: bool,
        extra_profile: &str,
    ) -> Ringway {
        Ringway::start_etcd_with(dir, endpoints, snapshot, "", extra_profile)
    }

    /// Like [`Ringway::start_etcd_cluster`], with `etcd_keys` (TOML lines) added to `[etcd]`.
    #[allow(dead_code)]
    pub fn start_etcd_with(
        dir: TempDir,
        endpoints: &[String],
        snapshot: bool,
        etcd_keys: &str,
        extra_profile: &str,
    ) -> Ringway {
        let endpoints = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let snapshot = if snapshot {
            "snapshot = \"snapshot.json\"\n"
        } else {
            ""
        };
        let routes = format!(
            "[routes]\nsource = \"etcd\"\n{snapshot}\n\
             [etcd]\nendpoints = [{endpoints}]\nprefix = \"/vulcand\"\ndial_timeout_ms = 1000\n{etcd_keys}\n"
        );
        Ringway::launch(
            dir,
            &routes,
            extra_profile,
            Launch {
                workers: 1,
                ..Launch::default()
            },
        )
    }

    /// Write a profile with this `[routes]` (and source) section into `dir` and start it.
    fn launch(dir: TempDir, routes_section: &str, extra_profile: &str, how: Launch) -> Ringway {
        let workers = how.workers;
        // Held until ringway listens, so no parallel test is handed the same port.
        let hold = PortHold::new();
        let port = hold.port;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let edge_hold = how.edge_listener.as_ref().map(|_| PortHold::new());
        let edge_addr = edge_hold.as_ref().map(PortHold::addr);
        let edge = match (&how.edge_listener, edge_addr) {
            (Some(toml), Some(a)) => {
                format!("[[listener]]\nname = \"edge\"\naddr = \"{a}\"\nrole = \"edge\"\n{toml}\n")
            }
            _ => String::new(),
        };
        let (node, rest) = split_node_section(extra_profile);
        let profile = format!(
            "[node]\nworkers = {workers}\npin_workers = false\nshutdown_grace_secs = 10\n{node}\n\
             [[listener]]\nname = \"mesh\"\naddr = \"{addr}\"\n\n{edge}{routes_section}\n{rest}"
        );
        let profile_path = dir.write("profile.toml", &profile);
        let (child, log) = spawn_run(&profile_path, &dir, how.profile_log_level);
        let mut r = Ringway {
            child,
            addr,
            edge_addr,
            dir,
            log,
        };
        r.wait_ready(!how.profile_log_level);
        drop(hold);
        drop(edge_hold);
        r
    }

    /// Wait until the node answers on its port and, when its log is at info level, has said
    /// it is running: the port answers as soon as the listeners are bound, before the workers,
    /// the handover socket and the admin endpoint are up.
    fn wait_ready(&mut self, running_line: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ringway exited early ({status}):\n{}", self.log());
            }
            if TcpStream::connect(self.addr).is_ok()
                && (!running_line || self.log().contains("ringway running"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "ringway did not start listening on {}:\n{}",
            self.addr,
            self.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Replace the routes file; the node picks it up within its poll interval.
    pub fn set_routes(&self, routes: &str) {
        let tmp = self.dir.0.join("routes.json.new");
        std::fs::write(&tmp, routes).expect("write routes");
        std::fs::rename(&tmp, self.dir.0.join("routes.json")).expect("replace routes");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size of the process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`Ringway::launch`] starts the process.
#[derive(Default)]
struct Launch {
    workers: usize,
    /// TOML inside an extra `role = "edge"` listener.
    edge_listener: Option<String>,
    /// Leave `RUST_LOG` unset so `[log] level` applies.
    profile_log_level: bool,
}

/// `[node]` keys in `extra` must join the harness's own `[node]` table.
fn split_node_section(extra: &str) -> (String, String) {
    let mut node = String::new();
    let mut rest = String::new();
    let mut in_node = false;
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_node = t == "[node]";
            if in_node {
                continue;
            }
        }
        let out = if in_node { &mut node } else { &mut rest };
        out.push_str(line);
        out.push('\n');
    }
    (node, rest)
}

/// Values of the header fields called `name` (ASCII case-insensitive), in order.
pub fn values_named<'a, 'n>(
    headers: &'a [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parsed HTTP response as a client sees it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::harness::values_named(&self.headers, name).next()
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        crate::harness::values_named(&self.headers, name).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads responses off a byte stream (keep-alive, pipelining).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to ringway");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client::from_stream(stream)
    }

    /// A client on a connection the caller opened.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                // A wait with a receive timeout returns EINTR instead of restarting when the
                // thread is interrupted (task work of an io_uring the test thread created, say).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return 0,
            }
        }
    }

    /// Read one response; `head_request` when it answers a HEAD. None if the connection closed
    /// (or timed out) before a whole response arrived.
    pub fn read_response(&mut self, head_request: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    self.buf.drain(..n);
                    let resp = Response {
                        status,
                        headers,
                        body: Vec::new(),
                    };
                    return self.read_body(resp, head_request);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill() == 0 {
                        return None;
                    }
                }
                Err(e) => panic!(
                    "unparsable response from ringway: {e}: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    fn read_body(&mut self, mut resp: Response, head_request: bool) -> Option<Response> {
        if head_request || resp.status < 200 || resp.status == 204 || resp.status == 304 {
            return Some(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let Some(line_end) = find(&self.buf, b"\r\n") else {
                    if self.fill() == 0 {
                        return None;
                    }
                    continue;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).ok()?;
                if size == 0 {
                    // Trailer section up to the blank line.
                    loop {
                        if let Some(end) = find(&self.buf[line_end..], b"\r\n\r\n") {
                            self.buf.drain(..line_end + end + 4);
                            return Some(resp);
                        }
                        if self.fill() == 0 {
                            return None;
                        }
                    }
                }
                while self.buf.len() < line_end + 2 + size + 2 {
                    if self.fill() == 0 {
                        return None;
                    }
                }
                resp.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
            }
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.trim().parse().ok()?;
            while self.buf.len() < len {
                if self.fill() == 0 {
                    return None;
                }
            }
            resp.body = self.buf.drain(..len).collect();
            return Some(resp);
        }
        // Close-delimited.
        while self.fill() > 0 {}
        resp.body = std::mem::take(&mut self.buf);
        Some(resp)
    }

    /// Exactly `n` raw bytes (bytes already buffered first); None if the stream ended first.
    #[allow(dead_code)]
    pub fn read_bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill() == 0 {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Raw bytes up to and including the first `needle`; None if the stream ended first.
    #[allow(dead_code)]
    pub fn read_until(&mut self, needle: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, needle) {
                return Some(self.buf.drain(..i + needle.len()).collect());
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// True when the server closed the connection (read returns EOF) within `limit`.
    pub fn is_closed(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
            || matches!(self.stream.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// An origin on a plain socket for answers `Origin`'s replies cannot script (answers in timed
/// pieces, bodies read late): a thread per connection reads request heads in turn and hands
/// each to `answer` with the socket, the head's text, its target and the bytes read past the
/// head; `answer` returns false to close the connection. Its address, and a count of the
/// connections it accepted.
pub fn head_serving_origin<F>(answer: F) -> (SocketAddr, std::sync::Arc<AtomicUsize>)
where
    F: Fn(&mut TcpStream, &str, &str, &mut Vec<u8>) -> bool + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while let Some((head, target)) = read_request_head(&mut s, &mut buf) {
                    if !answer(&mut s, &head, &target, &mut buf) {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Read one request head from `s` into `buf` (bytes after the head stay in `buf`): the head's
/// text and its target; `None` once the peer closed.
fn read_request_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String)> {
    use std::io::Read;
    let mut tmp = [0u8; 16 * 1024];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    Some((head, target))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a new connection; returns the response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Option<Response> {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.read_response(raw.starts_with(b"HEAD "))
}

/// A simple GET with Host and `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("a response")
}
