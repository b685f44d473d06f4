//! etcd over TLS with client certificates (`--client-cert-auth`), as production clusters run:
//! the node's initial read, watch and snapshot, `ringway check`, `ringway register`, and the
//! errors for a wrong CA, a missing or foreign client certificate and broken PEM files. The
//! certificates are made for each test with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::cli::{register_svc, sigterm};
use super::{await_status, eventually, PROPAGATION};
use crate::etcd_server::{EtcdServer, EtcdTlsFiles};
use crate::harness::{get, ringway, Ringway, TempDir};
use crate::origin::Origin;

/// A test CA with a server certificate for 127.0.0.1 / localhost and a client certificate;
/// plus a second, unrelated CA and a client certificate it signed.
struct Pki {
    dir: TempDir,
    files: EtcdTlsFiles,
    other_ca: PathBuf,
    foreign_cert: PathBuf,
    foreign_key: PathBuf,
}

/// Run `openssl` in `dir` with a command line of space-separated arguments.
fn openssl(dir: &Path, command_line: &str) {
    let args: Vec<&str> = command_line.split_whitespace().collect();
    crate::harness::openssl(dir, &args);
}

const P256: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// A self-signed CA `name`.pem / `name`.key.
fn make_ca(dir: &Path, name: &str) {
    crate::harness::self_signed_p256(dir, name, &format!("/CN={name}"));
}

/// `name`.pem / `name`.key signed by `ca`, with the extensions in `ext` (openssl.cnf lines).
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &format!("req {P256} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
             -out {name}.pem -days 2 -extfile {name}.ext"
        ),
    );
}

impl Pki {
    fn generate() -> Pki {
        let dir = TempDir::new("pki");
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other-ca");
        make_leaf(
            d,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        make_leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n");
        make_leaf(d, "other-ca", "foreign", "extendedKeyUsage=clientAuth\n");
        let files = EtcdTlsFiles {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_ca: d.join("ca.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
        };
        Pki {
            other_ca: d.join("other-ca.pem"),
            foreign_cert: d.join("foreign.pem"),
            foreign_key: d.join("foreign.key"),
            files,
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `[etcd]` keys for the node: the right CA and client certificate.
    fn etcd_keys(&self) -> String {
        tls_keys(
            &self.files.ca,
            Some((&self.files.client_cert, &self.files.client_key)),
        )
    }
}

fn tls_keys(ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut keys = format!("ca_file = {:?}\n", ca.display().to_string());
    if let Some((cert, key)) = client {
        keys += &format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
    }
    keys
}

/// A profile reading routes from `endpoint` with these extra `[etcd]` keys.
fn profile(dir: &TempDir, endpoint: &str, etcd_keys: &str) -> String {
    let text = format!(
        "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9\"\n\n\
         [routes]\nsource = \"etcd\"\n\n[etcd]\nendpoints = [\"{endpoint}\"]\n\
         dial_timeout_ms = 1000\n{etcd_keys}"
    );
    dir.write("profile.toml", &text).display().to_string()
}

fn check(dir: &TempDir, endpoint: &str, etcd_keys: &str) -> Output {
    ringway(&["check", "--profile", &profile(dir, endpoint, etcd_keys)])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ringway check` that must fail (exit 1); its stderr.
fn check_fails(dir: &TempDir, endpoint: &str, etcd_keys: &str) -> String {
    let out = check(dir, endpoint, etcd_keys);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{etcd_keys}: {err}");
    err
}

/// etcd over TLS holding backend `b1` = `origin` and frontend `users` → `/users`.
fn tls_etcd_with_users(pki: &Pki, origin: &Origin) -> EtcdServer {
    let etcd = EtcdServer::start_tls(&pki.files);
    let kv = etcd.kv();
    kv.backend("b1");
    kv.server("b1", "s1", origin.addr);
    kv.frontend("users", "b1", "PathPrefix(`/users`)");
    etcd
}

#[test]
fn a_node_reads_watches_and_snapshots_routes_from_etcd_over_tls() {
    let pki = Pki::generate();
    let origin = Origin::echo();
    let etcd = tls_etcd_with_users(&pki, &origin);
    assert!(etcd.endpoint().starts_with("https://"));
    let dir = TempDir::new("node");
    let snapshot = dir.path().join("snapshot.json");
    let rw = Ringway::start_etcd(dir, &etcd.endpoint(), true, &pki.etcd_keys());
    let resp = get(rw.addr, "/users/7");
    assert_eq!(resp.status, 200, "{}", rw.log());
    assert_eq!(resp.text(), "GET /users/7");

    etcd.kv().frontend("orders", "b1", "PathPrefix(`/orders`)");
    await_status(&rw, "/orders/1", 200, PROPAGATION, "route put over TLS");

    let written = eventually(PROPAGATION, || {
        std::fs::read_to_string(&snapshot)
            .is_ok_and(|t| t.contains("/vulcand/frontends/orders/frontend"))
    });
    assert!(
        written.is_some(),
        "the snapshot misses the watched route:\n{}",
        rw.log()
    );
}

#[test]
fn a_reconnect_over_tls_reads_renewed_client_certificates() {
    let pki = Pki::generate();
    let d = pki.dir.path();
    let client_auth = "extendedKeyUsage=clientAuth\n";
    // The node has a certificate of its own; the test's client keeps `client.pem`.
    make_leaf(d, "ca", "node", client_auth);
    let node_keys = tls_keys(
        &pki.files.ca,
        Some((&d.join("node.pem"), &d.join("node.key"))),
    );
    let origin = Origin::ok();
    let mut etcd = tls_etcd_with_users(&pki, &origin);
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), false, &node_keys);
    assert_eq!(get(rw.addr, "/users/1").status, 200, "{}", rw.log());

    // The client CA is replaced while etcd is down: etcd comes back trusting only the new
    // one, and the node's certificate files now hold one the new CA signed.
    etcd.kill();
    make_ca(d, "ca2");
    make_leaf(d, "ca2", "client", client_auth);
    make_leaf(d, "ca2", "node", client_auth);
    etcd.set_client_ca(d.join("ca2.pem"));
    etcd.restart();
    etcd.kv().frontend("after", "b1", "PathPrefix(`/after`)");
    await_status(
        &rw,
        "/after",
        200,
        Duration::from_secs(12),
        "route put after the client certificate was renewed",
    );
    assert_eq!(get(rw.addr, "/users/1").status, 200);
}

#[test]
fn check_passes_over_tls_and_names_a_wrong_ca_and_a_missing_client_certificate() {
    let pki = Pki::generate();
    let origin = Origin::ok();
    let etcd = tls_etcd_with_users(&pki, &origin);
    let endpoint = etcd.endpoint();
    let dir = TempDir::new("check");

    let out = check(&dir, &endpoint, &pki.etcd_keys());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("users"), "{stdout}");

    let client = Some((
        pki.files.client_cert.as_path(),
        pki.files.client_key.as_path(),
    ));
    let err = check_fails(&dir, &endpoint, &tls_keys(&pki.other_ca, client));
    assert!(
        err.contains("certificate verify failed")
            && err.contains("other-ca.pem")
            && err.contains(&endpoint),
        "{err}"
    );

    let err = check_fails(&dir, &endpoint, &tls_keys(&pki.files.ca, None));
    assert!(
        err.contains("etcd requires a client certificate and none was given"),
        "{err}"
    );

    let foreign = Some((pki.foreign_cert.as_path(), pki.foreign_key.as_path()));
    let err = check_fails(&dir, &endpoint, &tls_keys(&pki.files.ca, foreign));
    assert!(
        err.contains("etcd refused the client certificate") && err.contains("foreign.pem"),
        "{err}"
    );

    // Without a CA file the system's store is used, which does not know the test CA.
    let err = check_fails(&dir, &endpoint, "");
    assert!(
        err.contains("certificate verify failed") && err.contains("system store"),
        "{err}"
    );
}

#[test]
fn broken_tls_files_and_schemes_are_refused_before_connecting() {
    let pki = Pki::generate();
    let dir = TempDir::new("check");
    // Nothing listens there: every refusal below comes from reading the profile and its files.
    let endpoint = "https://127.0.0.1:9";
    let ca = &pki.files.ca;
    let (cert, key) = (&pki.files.client_cert, &pki.files.client_key);
    let missing = pki.dir.path().join("missing.pem");
    let cases: [(String, &str, &str); 5] = [
        (
            tls_keys(&missing, None),
            "missing.pem",
            "No such file or directory",
        ),
        (tls_keys(key, None), "client.key", "no certificate in it"),
        (
            tls_keys(ca, Some((cert, cert))),
            "client.pem",
            "no private key in it",
        ),
        (
            tls_keys(ca, Some((cert, &pki.files.server_key))),
            "server.key",
            "the key does not belong to the certificate",
        ),
        (
            format!("cert_file = {:?}\n", cert.display().to_string()),
            "etcd.key_file",
            "go together",
        ),
    ];
    for (keys, names, reason) in &cases {
        let err = check_fails(&dir, endpoint, keys);
        assert!(err.contains(names) && err.contains(reason), "{keys}: {err}");
        assert!(!err.contains("cannot reach"), "{keys}: {err}");
    }

    let err = check_fails(&dir, "http://127.0.0.1:9", &pki.etcd_keys());
    assert!(
        err.contains("etcd.endpoints") && err.contains("must be https://"),
        "{err}"
    );

    // `ringway run` refuses the same at start-up instead of serving without routes.
    let profile = profile(&dir, endpoint, &tls_keys(&missing, None));
    let out = ringway(&["run", "--profile", &profile]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.pem"), "{}", stderr(&out));
}

#[test]
fn register_over_tls_publishes_a_server_the_node_routes_to() {
    let pki = Pki::generate();
    let origin = Origin::ok();
    let etcd = EtcdServer::start_tls(&pki.files);
    let endpoint = etcd.endpoint();
    let rw = Ringway::start_etcd(TempDir::new("node"), &endpoint, false, &pki.etcd_keys());
    assert_eq!(get(rw.addr, "/svc/a").status, 404);

    let url = format!("http://{}", origin.addr);
    let register = |tls: &[&str]| -> Vec<String> {
        let mut args = vec!["register", "--etcd", &endpoint, "--backend", "svc"];
        args.extend(["--server-id", "i1", "--url", &url]);
        args.extend(["--frontend", "svc=PathPrefix(`/svc`)", "--ttl", "30s"]);
        args.extend(["--dial-timeout", "2s"]);
        args.extend_from_slice(tls);
        args.into_iter().map(String::from).collect()
    };
    let run = |args: Vec<String>| ringway(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let other_ca = pki.path("other-ca.pem");

    let out = run(register(&[
        "--cacert", &other_ca, "--cert", &cert, "--key", &key,
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("certificate verify failed") && err.contains("other-ca.pem"),
        "{err}"
    );
    let out = run(register(&["--cacert", &ca]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("requires a client certificate"), "{err}");
    let out = run(register(&["--cacert", &ca, "--cert", &cert]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
    assert_eq!(etcd.kv().get("backends/svc/servers/i1"), None);

    let log_dir = TempDir::new("register");
    let tls = [
        "--cacert", &ca, "--cert", &cert, "--key", &key, "--ttl", "30s",
    ];
    let mut child = register_svc(&log_dir, &endpoint, origin.addr, &tls);
    let reg_log = || std::fs::read_to_string(log_dir.path().join("register.log")).unwrap();
    let routed = eventually(PROPAGATION, || get(rw.addr, "/svc/a").status == 200);
    if routed.is_none() {
        let _ = child.kill();
        panic!("registered route not served:\n{}\n{}", reg_log(), rw.log());
    }
    assert_eq!(get(rw.addr, "/svc/a").text(), "ok");

    // SIGTERM revokes the lease over the same TLS connection.
    sigterm(&child);
    assert!(child.wait().unwrap().success(), "{}", reg_log());
    assert!(reg_log().contains("lease revoked"), "{}", reg_log());
    await_status(&rw, "/svc/a", 503, PROPAGATION, "deregistered over TLS");
}
