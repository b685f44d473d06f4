//! TLS termination against the real binary with real clients (Python's ssl module, curl and
//! openssl's tools), certificates made by the `openssl` command for each test: HTTPS requests
//! and their forwarding fields, SNI selection, versions, client certificates, resumption
//! across workers, bodies both ways, a WebSocket tunnel, reloads, `ringway check`, hostile
//! handshakes and the handshake metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    catch_all, free_port, get, openssl, ringway, routes_json, self_signed_p256, Ringway, TempDir,
};
use crate::origin::{body_byte, Fnv, Origin};

/// A CA and certificates signed by it, written as PEM files into a temporary directory.
struct Pki {
    dir: TempDir,
}

/// How a leaf's private key is generated (and so which PEM form it takes).
#[derive(Clone, Copy)]
enum KeyForm {
    /// EC P-256 in PKCS#8 (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// EC P-256 in SEC1 (`BEGIN EC PRIVATE KEY`).
    Sec1,
    /// RSA 2048 in PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    Pkcs1,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("pki");
        let pki = Pki { dir };
        pki.ca("ca");
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn ca(&self, name: &str) {
        self_signed_p256(self.dir.path(), name, &format!("/CN=ringway test {name}"));
    }

    /// `<name>.pem` (the leaf, then its CA: a chain) and `<name>.key`, signed by `ca`.
    fn leaf(&self, name: &str, cn: &str, ext: &str, key: KeyForm, days: u32, ca: &str) {
        let d = self.dir.path();
        let k = format!("{name}.key");
        match key {
            KeyForm::Pkcs8 => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &k,
                ],
            ),
            KeyForm::Sec1 => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &k,
                ],
            ),
            KeyForm::Pkcs1 => openssl(d, &["genrsa", "-traditional", "-out", &k, "2048"]),
        }
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &k,
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.leaf"),
                "-days",
                &days.to_string(),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
        let mut chain = std::fs::read(d.join(format!("{name}.leaf"))).unwrap();
        chain.extend(std::fs::read(d.join(format!("{ca}.pem"))).unwrap());
        std::fs::write(d.join(format!("{name}.pem")), chain).unwrap();
    }

    fn server(&self, name: &str, cn: &str, sans: &str, key: KeyForm) {
        let ext = format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth\n");
        self.leaf(name, cn, &ext, key, 30, "ca");
    }

    fn client(&self, name: &str, cn: &str, sans: &str, ca: &str) {
        let ext = format!("subjectAltName={sans}\nextendedKeyUsage=clientAuth\n");
        self.leaf(name, cn, &ext, KeyForm::Pkcs8, 30, ca);
    }

    /// `{ cert = ..., key = ... }` for `[listener.tls] certificates`.
    fn pair(&self, name: &str) -> String {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key"))
        )
    }
}

/// A PKI with the server certificate `localhost` (SAN localhost and 127.0.0.1).
fn pki_with_localhost() -> Pki {
    let pki = Pki::new();
    pki.server(
        "localhost",
        "localhost",
        "DNS:localhost,IP:127.0.0.1",
        KeyForm::Pkcs8,
    );
    pki
}

/// TOML of an edge listener exposing everything (and WebSocket upgrades), with `tls` inside
/// its `[listener.tls]`.
fn edge_with_tls(tls: &str) -> String {
    format!(
        "[[listener.expose]]\nprefix = \"/\"\nupgrade = [\"websocket\"]\n\n[listener.tls]\n{tls}\n"
    )
}

/// An edge node whose TLS listener serves the `localhost` certificate (plus `extra` keys of
/// `[listener.tls]`) in front of `origin`.
fn tls_node(pki: &Pki, extra_tls: &str, origin: &Origin) -> Ringway {
    let tls = format!("certificates = [{}]\n{extra_tls}", pki.pair("localhost"));
    Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&tls), "")
}

/// Run tests/it/tls_client.py; its JSON output.
fn client(mode: &str, addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tls_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(mode)
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tls_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tls_client.py output {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The subject the server presented on each connection of a `handshake` run.
fn subject(v: &serde_json::Value) -> String {
    v["connections"][0]["subject"]
        .as_str()
        .unwrap_or_else(|| panic!("no handshake: {v}"))
        .to_string()
}

#[test]
fn https_requests_reach_the_origin_marked_https_and_forged_identities_never_do() {
    let pki = pki_with_localhost();
    let origin = Origin::ok();
    let rw = tls_node(&pki, "", &origin);
    let ca = pki.path("ca.pem");

    let v = client(
        "http",
        rw.edge(),
        &[
            "--sni",
            "localhost",
            "--ca",
            &ca,
            "--request",
            r"GET /one HTTP/1.1\r\nHost: t\r\nX-Client-Cert-Subject: CN=admin\r\nX-Client-Cert-San: DNS:admin\r\nX-Forwarded-Proto: http\r\n\r\n",
            "--request",
            r"GET /two HTTP/1.1\r\nHost: t\r\n\r\n",
        ],
    );
    assert_eq!(v["tls"]["alpn"], "http/1.1", "{v}");
    let statuses: Vec<_> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [200, 200],
        "two requests on one TLS connection: {v}"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(
        first.headers_named("x-forwarded-proto"),
        ["https"],
        "{first:?}"
    );
    assert_eq!(first.header("forwarded"), Some("for=127.0.0.1;proto=https"));
    assert_eq!(
        first.header("x-client-cert-subject"),
        None,
        "a forged identity: {first:?}"
    );
    assert_eq!(first.header("x-client-cert-san"), None);
    assert_eq!(
        origin.connections(),
        1,
        "the upstream connection is pooled as usual"
    );

    // curl, verifying the chain and the name the way a browser would.
    let port = rw.edge().port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca,
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
        ])
        .arg(format!("https://localhost:{port}/curl"))
        .args(["-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The plain mesh listener beside it still speaks HTTP and says so.
    assert_eq!(get(rw.addr, "/plain").status, 200);
    let plain = origin.seen().pop().unwrap();
    assert_eq!(plain.headers_named("x-forwarded-proto"), ["http"]);
}

#[test]
fn sni_chooses_the_exact_name_then_the_wildcard_then_the_first_certificate() {
    let pki = pki_with_localhost();
    pki.server("wild", "wildcard", "DNS:*.example.test", KeyForm::Sec1);
    pki.server("api", "api", "DNS:api.example.test", KeyForm::Pkcs1);
    let origin = Origin::ok();
    let tls = format!(
        "certificates = [{}, {}, {}]\n",
        pki.pair("localhost"),
        pki.pair("wild"),
        pki.pair("api")
    );
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&tls), "");
    let ca = pki.path("ca.pem");
    for (sni, want) in [
        (Some("api.example.test"), "commonName=api"),
        (Some("www.example.test"), "commonName=wildcard"),
        (Some("localhost"), "commonName=localhost"),
        (Some("unknown.test"), "commonName=localhost"),
        (None, "commonName=localhost"),
    ] {
        let mut args = vec!["--ca", ca.as_str()];
        if let Some(name) = sni {
            args.extend(["--sni", name]);
        }
        let v = client("handshake", rw.edge(), &args);
        assert_eq!(subject(&v), want, "SNI {sni:?}: {v}");
    }
    // The RSA (PKCS#1) certificate serves TLS 1.2 too.
    let v = client(
        "handshake",
        rw.edge(),
        &["--ca", &ca, "--sni", "api.example.test", "--version", "1.2"],
    );
    assert_eq!(v["connections"][0]["version"], "TLSv1.2", "{v}");
    assert!(
        v["connections"][0]["cipher"]
            .as_str()
            .unwrap()
            .contains("RSA"),
        "{v}"
    );
}

#[test]
fn min_version_1_3_refuses_tls_1_2_clients() {
    let pki = pki_with_localhost();
    let origin = Origin::ok();
    let tls = format!(
        "certificates = [{}]\nmin_version = \"1.3\"\n",
        pki.pair("localhost")
    );
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&tls), "");
    let ca = pki.path("ca.pem");
    let old = client("handshake", rw.edge(), &["--ca", &ca, "--version", "1.2"]);
    assert!(
        old["error"].as_str().is_some(),
        "a TLS 1.2 client was served: {old}"
    );
    let new = client("handshake", rw.edge(), &["--ca", &ca]);
    assert_eq!(new["connections"][0]["version"], "TLSv1.3", "{new}");
    // openssl's own client agrees.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &rw.edge().to_string(), "-tls1_2"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "s_client -tls1_2 connected");
}

#[test]
fn client_certificates_are_verified_and_their_identity_goes_upstream() {
    let pki = pki_with_localhost();
    pki.client(
        "svc",
        "svc-a",
        "URI:spiffe://mesh/svc-a,DNS:svc-a.internal",
        "ca",
    );
    pki.ca("rogue");
    pki.client("intruder", "svc-a", "DNS:svc-a.internal", "rogue");
    let origin = Origin::ok();
    let ca = pki.path("ca.pem");
    let required = format!(
        "certificates = [{}]\nclient_ca = \"{ca}\"\n",
        pki.pair("localhost")
    );
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&required), "");
    let request = r"GET /who HTTP/1.1\r\nHost: t\r\nX-Client-Cert-Subject: CN=forged\r\n\r\n";

    let (svc_cert, svc_key) = (pki.path("svc.pem"), pki.path("svc.key"));
    let v = client(
        "http",
        rw.edge(),
        &[
            "--ca",
            &ca,
            "--cert",
            &svc_cert,
            "--key",
            &svc_key,
            "--request",
            request,
        ],
    );
    assert_eq!(v["responses"][0]["status"], 200, "{v}");
    let s = origin.seen().pop().unwrap();
    assert_eq!(
        s.headers_named("x-client-cert-subject"),
        ["CN=svc-a"],
        "{s:?}"
    );
    assert_eq!(
        s.header("x-client-cert-san"),
        Some("URI:spiffe://mesh/svc-a, DNS:svc-a.internal")
    );

    let before = origin.seen().len();
    for args in [
        vec!["--ca", ca.as_str(), "--request", request],
        vec![
            "--ca",
            ca.as_str(),
            "--cert",
            &pki.path("intruder.pem") as &str,
            "--key",
            &pki.path("intruder.key") as &str,
            "--request",
            request,
        ],
    ] {
        let v = client("http", rw.edge(), &args);
        let answered = v["responses"][0]["status"].as_u64();
        assert!(
            answered.is_none(),
            "served without a valid client certificate: {v}"
        );
    }
    assert_eq!(origin.seen().len(), before, "nothing reached the origin");

    // `optional`: no certificate is fine, and no identity is claimed for it.
    let optional = format!("{required}client_auth = \"optional\"\n");
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&optional), "");
    let v = client("http", rw.edge(), &["--ca", &ca, "--request", request]);
    assert_eq!(v["responses"][0]["status"], 200, "{v}");
    let s = origin.seen().pop().unwrap();
    assert_eq!(s.header("x-client-cert-subject"), None, "{s:?}");
}

/// Every completed handshake of the `tls_client.py handshake` output.
fn connections(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no handshakes: {v}"))
}

#[test]
fn sessions_resume_on_any_worker_with_tls_1_3_tickets_and_tls_1_2_ids() {
    let pki = pki_with_localhost();
    let origin = Origin::ok();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = format!("certificates = [{}]\n", pki.pair("localhost"));
    // Two workers: the connections spread over both (SO_REUSEPORT), so resumptions cross.
    let rw = Ringway::start_edge_with_workers(
        &catch_all(&[origin.addr]),
        &edge_with_tls(&tls),
        &format!("[admin]\naddr = \"{admin}\"\n"),
        2,
    );
    let ca = pki.path("ca.pem");
    for version in ["1.3", "1.2"] {
        let v = client(
            "handshake",
            rw.edge(),
            &["--ca", &ca, "--version", version, "--connections", "12"],
        );
        let resumed: Vec<bool> = connections(&v)
            .iter()
            .map(|c| c["resumed"].as_bool().unwrap())
            .collect();
        assert!(!resumed[0], "{v}");
        assert!(
            resumed[1..].iter().all(|r| *r),
            "TLS {version}: every reconnection resumes: {v}"
        );
    }
    let metrics = get(admin, "/metrics").text();
    let value = |needle: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{metrics}"))
    };
    let ok = "ringway_tls_handshakes_total{result=\"ok\",";
    assert_eq!(value(&format!("{ok}version=\"1.3\",kind=\"full\"}}")), 1.0);
    assert_eq!(
        value(&format!("{ok}version=\"1.3\",kind=\"resumed\"}}")),
        11.0
    );
    assert_eq!(value(&format!("{ok}version=\"1.2\",kind=\"full\"}}")), 1.0);
    assert_eq!(
        value(&format!("{ok}version=\"1.2\",kind=\"resumed\"}}")),
        11.0
    );
    assert_eq!(value("ringway_tls_handshake_duration_seconds_count"), 24.0);
    // The certificate's expiry, for alerts (the test certificate is valid for 30 days).
    let expiry = value("ringway_tls_certificate_expiry_timestamp_seconds{listener=\"edge\"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (expiry - now) / 86_400.0;
    assert!((29.0..=30.5).contains(&days), "expires in {days} days");
    assert!(metrics.contains("names=\"localhost\""), "{metrics}");
    // Both workers did handshakes.
    let per_worker: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("ringway_connections_total{worker="))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        per_worker.iter().filter(|n| **n > 0.0).count() == 2,
        "one worker took every connection: {per_worker:?}"
    );
}

/// FNV-1a of `len` pattern bytes, as the origins and the client compute it.
fn pattern_fnv(len: u64) -> String {
    let mut f = Fnv::new();
    let block: Vec<u8> = (0..len).map(body_byte).collect();
    f.update(&block);
    format!("{:016x}", f.0)
}

#[test]
fn large_bodies_cross_tls_intact_both_ways() {
    const UP: u64 = 3 * 1024 * 1024 + 4321;
    const DOWN: u64 = 2 * 1024 * 1024 + 999;
    let pki = pki_with_localhost();
    let counting = Origin::counting();
    let streaming = Origin::streaming(DOWN);
    let routes = routes_json(
        &[("up", &[counting.addr]), ("down", &[streaming.addr])],
        &[
            ("up", "up", "PathPrefix(`/upload`)"),
            ("down", "down", "PathPrefix(`/`)"),
        ],
    );
    let tls = format!("certificates = [{}]\n", pki.pair("localhost"));
    let ca = pki.path("ca.pem");
    for (driver, setting) in [("io_uring", "auto"), ("epoll", "epoll")] {
        let node = format!("[node]\nio_driver = \"{setting}\"\n");
        let rw = Ringway::start_edge(&routes, &edge_with_tls(&tls), &node);
        assert!(
            rw.log().contains(&format!("driver={driver}")),
            "{}",
            rw.log()
        );
        let v = client(
            "http",
            rw.edge(),
            &[
                "--ca",
                &ca,
                "--upload",
                &UP.to_string(),
                "--request",
                r"GET /big HTTP/1.1\r\nHost: t\r\n\r\n",
            ],
        );
        let up = &v["responses"][0];
        assert_eq!(up["status"], 200, "{driver}: {v}");
        let want = format!("{} {UP}", pattern_fnv(UP));
        assert_eq!(
            up["body"], want,
            "{driver}: the origin got every byte in order"
        );
        let down = &v["responses"][1];
        assert_eq!(down["body_len"], DOWN, "{driver}: {down}");
        assert_eq!(
            down["fnv"],
            pattern_fnv(DOWN),
            "{driver}: every byte came back in order"
        );
    }
}

#[test]
fn a_chunked_response_crosses_tls_intact() {
    const N: u64 = 300_000;
    let pki = pki_with_localhost();
    let body: Vec<u8> = (0..N).map(body_byte).collect();
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(7_001) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let origin = Origin::start(move |_| crate::origin::Reply::Bytes(raw.clone()));
    let rw = tls_node(&pki, "", &origin);
    let v = client(
        "http",
        rw.edge(),
        &[
            "--ca",
            &pki.path("ca.pem"),
            "--request",
            r"GET /c HTTP/1.1\r\nHost: t\r\n\r\n",
        ],
    );
    assert_eq!(v["responses"][0]["body_len"], N, "{v}");
    assert_eq!(v["responses"][0]["fnv"], pattern_fnv(N), "{v}");
}

#[test]
fn a_websocket_tunnel_runs_through_tls() {
    let pki = pki_with_localhost();
    let origin = Origin::switching(None);
    let rw = tls_node(&pki, "", &origin);
    let v = client(
        "tunnel",
        rw.edge(),
        &[
            "--ca",
            &pki.path("ca.pem"),
            "--request",
            r"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "--payload",
            "hello through the tunnel",
        ],
    );
    assert_eq!(v["status"], 101, "{v}");
    assert_eq!(v["echo"], "hello through the tunnel", "{v}");
    assert_eq!(
        String::from_utf8_lossy(&origin.tunnelled()),
        "hello through the tunnel"
    );
}

/// Bytes the server sent before closing (or until `limit`), and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The first bytes of a TLS ClientHello record: a handshake that never finishes arriving.
const TRUNCATED_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

#[test]
fn hostile_handshakes_are_closed_and_never_reach_the_origin() {
    let pki = pki_with_localhost();
    let origin = Origin::ok();
    let rw = tls_node(&pki, "handshake_ms = 500\n", &origin);
    let edge = rw.edge();

    // Plain HTTP on the TLS port: no HTTP answer, at most a TLS alert, then close.
    let mut s = TcpStream::connect(edge).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(closed, "plain HTTP left the connection open");
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");

    // Random bytes.
    let mut s = TcpStream::connect(edge).unwrap();
    let noise: Vec<u8> = (0..2048u64).map(body_byte).collect();
    let _ = s.write_all(&noise);
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(closed, "random bytes left the connection open");

    // A ClientHello that stops half way, and a connection that never says anything: both are
    // closed at handshake_ms.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(edge).unwrap();
    stalled.write_all(TRUNCATED_HELLO).unwrap();
    let mut silent = TcpStream::connect(edge).unwrap();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(5));
    assert!(closed, "a stalled handshake stayed open");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(closed, "a silent connection stayed open");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "{took:?}"
    );

    assert!(origin.seen().is_empty(), "something reached the origin");
    // And a real client is served afterwards.
    let v = client("handshake", edge, &["--ca", &pki.path("ca.pem")]);
    assert_eq!(connections(&v).len(), 1, "{v}");
}

#[test]
fn stalled_handshakes_past_the_limit_make_room_for_clients_that_finish() {
    let pki = pki_with_localhost();
    let origin = Origin::ok();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = format!(
        "certificates = [{}]\nmax_handshakes = 50\n",
        pki.pair("localhost")
    );
    let rw = Ringway::start_edge(
        &catch_all(&[origin.addr]),
        &edge_with_tls(&tls),
        &format!("[admin]\naddr = \"{admin}\"\n"),
    );
    let edge = rw.edge();
    let base_rss = rw.rss_kib();
    // 2000 connections that each start a handshake and stall (10 s handshake_ms).
    let mut stalled = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(edge).unwrap();
        s.write_all(TRUNCATED_HELLO).unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Real clients are still served while the stalled ones hold their sockets.
    for _ in 0..3 {
        let v = client(
            "http",
            edge,
            &[
                "--ca",
                &pki.path("ca.pem"),
                "--request",
                r"GET /x HTTP/1.1\r\nHost: t\r\n\r\n",
            ],
        );
        assert_eq!(v["responses"][0]["status"], 200, "{v}");
    }
    let grown = rw.rss_kib().saturating_sub(base_rss);
    assert!(
        grown < 40 * 1024,
        "2000 stalled handshakes took {grown} KiB"
    );
    let metrics = get(admin, "/metrics").text();
    let evicted = metrics
        .lines()
        .find(|l| l.starts_with("ringway_tls_handshakes_total{result=\"evicted\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        evicted >= 1950.0,
        "the oldest stalled handshakes were closed: {evicted}\n{metrics}"
    );
    drop(stalled);
}

#[test]
fn sighup_swaps_certificates_for_new_handshakes_and_keeps_them_when_a_file_breaks() {
    let pki = pki_with_localhost();
    pki.server("next", "next", "DNS:localhost", KeyForm::Pkcs8);
    let origin = Origin::ok();
    // The listener's files are copies that the test replaces.
    let live = TempDir::new("live-cert");
    let copy = |from: &str, to: &str| std::fs::copy(pki.path(from), live.path().join(to)).unwrap();
    copy("localhost.pem", "cert.pem");
    copy("localhost.key", "cert.key");
    let tls = format!(
        "certificates = [{{ cert = \"{0}/cert.pem\", key = \"{0}/cert.key\" }}]\n",
        live.path().display()
    );
    let rw = Ringway::start_edge(&catch_all(&[origin.addr]), &edge_with_tls(&tls), "");
    let ca = pki.path("ca.pem");
    assert_eq!(
        subject(&client("handshake", rw.edge(), &["--ca", &ca])),
        "commonName=localhost"
    );

    copy("next.pem", "cert.pem");
    copy("next.key", "cert.key");
    rw.signal("HUP");
    assert!(
        rw.wait_log("TLS certificates re-read", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    assert_eq!(
        subject(&client("handshake", rw.edge(), &["--ca", &ca])),
        "commonName=next"
    );

    std::fs::write(live.path().join("cert.key"), "not a key").unwrap();
    rw.signal("HUP");
    assert!(
        rw.wait_log("TLS certificates not reloaded", Duration::from_secs(5)),
        "{}",
        rw.log()
    );
    assert!(
        rw.log().contains("cert.key"),
        "the log names the file: {}",
        rw.log()
    );
    assert_eq!(
        subject(&client("handshake", rw.edge(), &["--ca", &ca])),
        "commonName=next",
        "the running certificate stays"
    );
}

/// A profile with one TLS listener using `certificates`, for `ringway check` / `run`.
fn tls_profile(dir: &TempDir, tls: &str) -> PathBuf {
    dir.write("routes.json", "{}");
    dir.write(
        "profile.toml",
        &format!(
            "[[listener]]\nname = \"web\"\naddr = \"127.0.0.1:{}\"\n[listener.tls]\n{tls}\n\
             [routes]\nsource = \"file\"\nfile = \"routes.json\"\n",
            free_port()
        ),
    )
}

#[test]
fn check_validates_certificates_and_warns_before_they_expire() {
    let pki = pki_with_localhost();
    pki.leaf(
        "soon",
        "soon",
        "subjectAltName=DNS:soon.test\n",
        KeyForm::Pkcs8,
        5,
        "ca",
    );
    pki.server("other", "other", "DNS:other.test", KeyForm::Pkcs8);
    let dir = TempDir::new("tls-check");

    let good = tls_profile(
        &dir,
        &format!(
            "certificates = [{}, {}]\n",
            pki.pair("localhost"),
            pki.pair("soon")
        ),
    );
    let out = ringway(&["check", "--profile", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("localhost.pem (localhost): ok"), "{text}");
    assert!(
        text.contains("warning: certificate")
            && text.contains("soon.pem (soon.test) expires in 4 days"),
        "{text}"
    );

    // A key that belongs to another certificate, a file that is not PEM, a missing file.
    let mismatched = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        pki.path("localhost.pem"),
        pki.path("other.key")
    );
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let not_pem = format!(
        "certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        garbage.display(),
        pki.path("localhost.key")
    );
    let missing = format!(
        "certificates = [{{ cert = \"{}\", key = \"/nonexistent/k.pem\" }}]\n",
        pki.path("localhost.pem")
    );
    for (tls, key, reason) in [
        (
            &mismatched,
            "listener[0].tls.certificates[0].key",
            "does not belong to the certificate",
        ),
        (
            &not_pem,
            "listener[0].tls.certificates[0].cert",
            "garbage.pem",
        ),
        (
            &missing,
            "listener[0].tls.certificates[0].key",
            "/nonexistent/k.pem",
        ),
    ] {
        let p = tls_profile(&dir, tls);
        for cmd in ["check", "run"] {
            let out = ringway(&[cmd, "--profile", p.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!out.status.success(), "{cmd} accepted {tls}");
            assert!(
                err.contains(&format!("key `{key}`")) && err.contains(reason),
                "{cmd}: {err}"
            );
            assert!(
                err.contains("profile.toml"),
                "{cmd} names the profile: {err}"
            );
        }
    }

    // So is the seal key that opens vulcand's TLS hosts.
    let seal = dir.write("seal.key", "not hex");
    let sealed = dir.write(
        "sealed.toml",
        &format!(
            "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:{}\"\n\
             [routes]\nsource = \"file\"\nfile = \"routes.json\"\n\
             [etcd]\nseal_key_file = \"{}\"\n",
            free_port(),
            seal.display()
        ),
    );
    for cmd in ["check", "run"] {
        let out = ringway(&[cmd, "--profile", sealed.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{cmd}: a bad seal key passed");
        assert!(
            err.contains("sealed.toml")
                && err.contains("key `etcd.seal_key_file`")
                && err.contains("64 hex digits"),
            "{cmd}: {err}"
        );
    }

    // The CA for https:// servers is checked too.
    let upstream = dir.write(
        "upstream.toml",
        &format!(
            "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:{}\"\n\
             [routes]\nsource = \"file\"\nfile = \"routes.json\"\n\
             [upstream]\nca_file = \"{}\"\n",
            free_port(),
            garbage.display()
        ),
    );
    let out = ringway(&["check", "--profile", upstream.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a broken upstream.ca_file passed");
    assert!(
        err.contains("key `upstream.ca_file`") && err.contains("garbage.pem"),
        "{err}"
    );
}

/// tests/it/tls_origin.py: an HTTPS origin (Python's ssl) serving `cert`/`key`.
struct TlsOrigin {
    child: std::process::Child,
    addr: SocketAddr,
}

impl TlsOrigin {
    fn start(pki: &Pki, name: &str) -> TlsOrigin {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tls_origin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(pki.path(&format!("{name}.pem")))
            .arg(pki.path(&format!("{name}.key")))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the origin prints its port");
        TlsOrigin {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on plain listeners routing everything to `url`, with `[upstream]` keys `upstream`.
fn node_for(url: &str, upstream: &str) -> Ringway {
    Ringway::start(&routes_to(url), &format!("[upstream]\n{upstream}\n"))
}

/// Routes sending every path to the one server at `url` (`https://...`).
fn routes_to(url: &str) -> String {
    format!(
        "{{\"/vulcand/backends/b1/backend\": {{\"Type\":\"http\"}}, \
          \"/vulcand/backends/b1/servers/s1\": {{\"URL\":\"{url}\"}}, \
          \"/vulcand/frontends/f1/frontend\": {{\"Type\":\"http\",\"BackendId\":\"b1\",\"Route\":\"PathPrefix(`/`)\"}}}}"
    )
}

fn facts(rw: &Ringway, path: &str) -> serde_json::Value {
    let r = get(rw.addr, path);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), rw.log());
    serde_json::from_str(&r.text()).unwrap()
}

#[test]
fn https_servers_are_verified_by_name_pooled_and_resumed() {
    let pki = pki_with_localhost();
    let origin = TlsOrigin::start(&pki, "localhost");
    let url = format!("https://localhost:{}", origin.addr.port());
    let ca = format!("ca_file = \"{}\"", pki.path("ca.pem"));

    let rw = node_for(&url, &ca);
    let (a, b) = (facts(&rw, "/a"), facts(&rw, "/b"));
    assert_eq!(a["sni"], "localhost", "SNI is the URL's host: {a}");
    assert_eq!(a["version"], "TLSv1.3");
    assert_eq!(
        a["conn"], b["conn"],
        "the TLS connection is pooled: {a} {b}"
    );
    assert_eq!(b["path"], "/b");

    // Without pooling every request handshakes again, resuming the first session.
    let rw = node_for(&url, &format!("{ca}\nmax_idle_per_server = 0"));
    let first = facts(&rw, "/1");
    let later: Vec<_> = (2..5).map(|i| facts(&rw, &format!("/{i}"))).collect();
    assert_eq!(first["resumed"], false, "{first}");
    for f in &later {
        assert_ne!(f["conn"], first["conn"], "{f}");
        assert_eq!(f["resumed"], true, "a new connection resumes: {f}");
    }

    // Bodies both ways, through a TLS listener in front as well (TLS on both sides).
    const N: u64 = 1024 * 1024 + 77;
    let tls = format!(
        "certificates = [{}]\n[upstream]\n{ca}\n",
        pki.pair("localhost")
    );
    let routes = routes_to(&url);
    let rw = Ringway::start_edge(
        &routes,
        &format!("[[listener.expose]]\nprefix = \"/\"\n\n[listener.tls]\n{tls}"),
        "",
    );
    let v = client(
        "http",
        rw.edge(),
        &[
            "--ca",
            &pki.path("ca.pem"),
            "--upload",
            &N.to_string(),
            "--request",
            &format!(r"GET /big?n={N} HTTP/1.1\r\nHost: t\r\n\r\n"),
        ],
    );
    assert_eq!(
        v["responses"][0]["body"],
        format!("{} {N}", pattern_fnv(N)),
        "{v}"
    );
    assert_eq!(v["responses"][1]["body_len"], N, "{v}");
    assert_eq!(v["responses"][1]["fnv"], pattern_fnv(N), "{v}");
}

#[test]
fn an_https_server_with_an_unknown_ca_or_another_name_gets_502() {
    let pki = pki_with_localhost();
    pki.ca("other");
    let origin = TlsOrigin::start(&pki, "localhost");
    let rw = node_for(
        &format!("https://localhost:{}", origin.addr.port()),
        &format!("ca_file = \"{}\"", pki.path("other.pem")),
    );
    assert_eq!(get(rw.addr, "/x").status, 502);
    assert!(
        rw.wait_log("UnknownIssuer", Duration::from_secs(5)),
        "{}",
        rw.log()
    );

    // A certificate for localhost only, reached as 127.0.0.1: the name does not match.
    pki.server("named", "named", "DNS:localhost", KeyForm::Pkcs8);
    let named = TlsOrigin::start(&pki, "named");
    let rw = node_for(
        &format!("https://127.0.0.1:{}", named.addr.port()),
        &format!("ca_file = \"{}\"", pki.path("ca.pem")),
    );
    assert_eq!(get(rw.addr, "/x").status, 502);
    assert!(
        rw.wait_log("TLS handshake with 127.0.0.1", Duration::from_secs(5))
            && rw.log().contains("not valid for name"),
        "{}",
        rw.log()
    );
}

#[test]
fn an_https_server_that_never_answers_the_handshake_gets_504_after_the_backends_tls_handshake_timeout(
) {
    // It accepts the connection and says nothing: the dial succeeded, the handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let settings = serde_json::json!({"Timeouts": {"Dial": "5s", "TLSHandshake": "300ms"}});
    let routes = crate::harness::with_backend_settings(
        &routes_to(&format!("https://{addr}")),
        "b1",
        settings,
    );
    let rw = Ringway::start(&routes, "");
    let started = std::time::Instant::now();
    let r = get(rw.addr, "/x");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}\n{}", r.text(), rw.log());
    // The dial deadline (5 s) would have let it hang far longer.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

/// vulcand's `<prefix>/hosts/<name>/host` document with `name`'s key pair sealed under `key`.
fn sealed_host(pki: &Pki, name: &str, file: &str, key: &ringway::tls::hosts::SealKey) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let read = |f: String| b64.encode(std::fs::read(pki.path(&f)).unwrap());
    let pair = serde_json::json!({
        "Cert": read(format!("{file}.pem")),
        "Key": read(format!("{file}.key")),
    });
    let sealed = key.seal(pair.to_string().as_bytes(), [9; 24]);
    serde_json::json!({"Name": name, "Settings": {"KeyPair": b64.encode(sealed), "Default": false}})
        .to_string()
}

#[test]
fn vulcands_sealed_tls_hosts_in_etcd_are_chosen_by_sni_and_follow_changes() {
    use crate::etcd::eventually;
    use crate::etcd_server::EtcdServer;
    use ringway::tls::hosts::SealKey;

    let pki = pki_with_localhost();
    pki.server("vhost", "vhost", "DNS:vhost.example.test", KeyForm::Pkcs8);
    pki.server("late", "late", "DNS:late.example.test", KeyForm::Sec1);
    const HEX: &str = "6f2b1d0c9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";
    let key = SealKey::from_hex(HEX).unwrap();
    let wrong = SealKey::from_hex(&HEX.replace('6', "7")).unwrap();

    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    kv.put("backends/b1/backend", r#"{"Type":"http"}"#);
    kv.put(
        "backends/b1/servers/s1",
        &format!(r#"{{"URL":"http://{}"}}"#, origin.addr),
    );
    kv.put(
        "frontends/f1/frontend",
        r#"{"Type":"http","BackendId":"b1","Route":"PathPrefix(`/`)"}"#,
    );
    kv.put(
        "hosts/vhost.example.test/host",
        &sealed_host(&pki, "vhost.example.test", "vhost", &key),
    );

    let dir = TempDir::new("sealed");
    dir.write("seal.key", &format!("{HEX}\n"));
    let port = free_port();
    let rw = Ringway::start_etcd_with(
        dir,
        &[etcd.endpoint()],
        false,
        "seal_key_file = \"seal.key\"\n",
        &format!(
            "[[listener]]\nname = \"tls\"\naddr = \"127.0.0.1:{port}\"\n[listener.tls]\ncertificates = [{}]\n",
            pki.pair("localhost")
        ),
    );
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ca = pki.path("ca.pem");
    let cn = |sni: &str| subject(&client("handshake", tls_addr, &["--ca", &ca, "--sni", sni]));
    assert_eq!(cn("vhost.example.test"), "commonName=vhost", "{}", rw.log());
    assert_eq!(
        cn("localhost"),
        "commonName=localhost",
        "the profile's own certificate"
    );
    assert_eq!(
        cn("late.example.test"),
        "commonName=localhost",
        "unknown: the default"
    );

    // A host sealed under another key is skipped and reported; one added later is served.
    kv.put(
        "hosts/bad.example.test/host",
        &sealed_host(&pki, "bad.example.test", "late", &wrong),
    );
    kv.put(
        "hosts/late.example.test/host",
        &sealed_host(&pki, "late.example.test", "late", &key),
    );
    let took = eventually(Duration::from_secs(5), || {
        cn("late.example.test") == "commonName=late"
    });
    assert!(
        took.is_some(),
        "a host added to etcd is served:\n{}",
        rw.log()
    );
    assert!(
        rw.wait_log("wrong seal key", Duration::from_secs(5)),
        "the badly sealed host is reported:\n{}",
        rw.log()
    );
    assert_eq!(
        cn("vhost.example.test"),
        "commonName=vhost",
        "the others stay"
    );

    // A host deleted from etcd is no longer chosen.
    kv.delete("hosts/vhost.example.test/host");
    let took = eventually(Duration::from_secs(5), || {
        cn("vhost.example.test") == "commonName=localhost"
    });
    assert!(took.is_some(), "{}", rw.log());
}
