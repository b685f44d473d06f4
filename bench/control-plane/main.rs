//! Control-plane benchmark: route compile time for 1k/10k/100k frontends, and propagation
//! latency from an etcd put to the first request routed by the new table, against a real etcd
//! and the real ringway binary on loopback. Writes a Markdown report.
//!
//! cargo build --release --bin ringway && cargo run --release --example control-plane -- \
//!     [--updates 200] [--out bench/results/control-plane.md]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringway::route::{compile, CompileOptions, KvSet};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `n` frontends on `n / 10` backends of two servers each, routes of typical shapes.
fn table_of(n: usize) -> KvSet {
    let mut kv = KvSet::default();
    let backends = (n / 10).max(1);
    for b in 0..backends {
        kv.entries.insert(
            format!("/vulcand/backends/b{b}/backend"),
            r#"{"Type":"http"}"#.into(),
        );
        for s in 0..2 {
            kv.entries.insert(
                format!("/vulcand/backends/b{b}/servers/s{s}"),
                format!(r#"{{"URL":"http://127.0.0.1:{}"}}"#, 10000 + s),
            );
        }
    }
    for f in 0..n {
        let route = match f % 4 {
            0 => format!("PathPrefix(`/svc{f}`)"),
            1 => format!("Path(`/svc{f}/items/<id>`) && Method(`GET`)"),
            2 => format!("Host(`h{f}.mesh`) && PathPrefix(`/`)"),
            _ => format!("PathRegexp(`/re{f}/[0-9]+`)"),
        };
        let doc = serde_json::json!({"Type": "http", "BackendId": format!("b{}", f % backends), "Route": route});
        kv.entries
            .insert(format!("/vulcand/frontends/f{f}/frontend"), doc.to_string());
    }
    kv
}

fn compile_times(out: &mut String) {
    out.push_str("## Route table compile time\n\n");
    out.push_str("| frontends | keys | runs | best | median | skipped | conflicts |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    let opts = CompileOptions::default();
    for n in [1_000, 10_000, 100_000] {
        let kv = table_of(n);
        let runs = if n >= 100_000 { 3 } else { 7 };
        let mut times = Vec::new();
        let mut report = None;
        for _ in 0..runs {
            let t = Instant::now();
            let c = compile(&kv, &opts);
            times.push(t.elapsed());
            report = Some(c.report);
        }
        times.sort();
        let r = report.expect("ran at least once");
        out.push_str(&format!(
            "| {n} | {} | {runs} | {:.1} ms | {:.1} ms | {} | {} |\n",
            kv.entries.len(),
            times[0].as_secs_f64() * 1e3,
            times[runs / 2].as_secs_f64() * 1e3,
            r.skipped.len(),
            r.conflicts.len()
        ));
        eprintln!("compile {n}: median {:?}", times[runs / 2]);
    }
    out.push('\n');
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .get(9..12)?
        .parse()
        .ok()
}

/// A loopback origin answering 200 to everything.
fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut have = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn propagation(ringway: &Path, dir: &Path, updates: usize, out: &mut String) {
    let (client_port, peer_port) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let _etcd = Proc(
        Command::new("etcd")
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian's etcd-server)"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut kv = None;
    wait_for("etcd", Duration::from_secs(20), || {
        kv = rt.block_on(async {
            let mut c = etcd_client::Client::connect([&endpoint], None).await.ok()?;
            c.get("/", None).await.ok()?;
            Some(c)
        });
        kv.is_some()
    });
    let mut kv = kv.unwrap();
    let origin = origin();
    let put = |kv: &mut etcd_client::Client, k: &str, v: String| {
        rt.block_on(kv.put(k, v, None)).expect("etcd put");
    };
    put(
        &mut kv,
        "/vulcand/backends/b1/backend",
        r#"{"Type":"http"}"#.into(),
    );
    put(
        &mut kv,
        "/vulcand/backends/b1/servers/s1",
        format!(r#"{{"URL":"http://{origin}"}}"#),
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let profile = dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "[node]\nworkers = 1\npin_workers = false\n[[listener]]\nname = \"mesh\"\naddr = \"{listen}\"\n\
             [routes]\nsource = \"etcd\"\n[etcd]\nendpoints = [\"{endpoint}\"]\n[log]\nlevel = \"warn\"\n"
        ),
    )
    .unwrap();
    let _node = Proc(
        Command::new(ringway)
            .args(["run", "--profile"])
            .arg(&profile)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringway"),
    );
    wait_for("ringway", Duration::from_secs(20), || {
        http_status(listen, "/").is_some()
    });

    let mut total = Vec::new();
    let mut after_ack = Vec::new();
    for i in 0..updates {
        // A segment of its own, so no earlier prefix (`/p1` for `/p10`) already routes it.
        let path = format!("/p{i}/x");
        let doc = serde_json::json!({"Type": "http", "BackendId": "b1", "Route": format!("PathPrefix(`/p{i}/`)")});
        let t0 = Instant::now();
        put(
            &mut kv,
            &format!("/vulcand/frontends/f{i}/frontend"),
            doc.to_string(),
        );
        let acked = t0.elapsed();
        loop {
            match http_status(listen, &path) {
                Some(200) => break,
                Some(404) => {}
                other => panic!("update {i}: unexpected answer {other:?}"),
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "update {i} never arrived"
            );
        }
        let t = t0.elapsed();
        total.push(t);
        after_ack.push(t - acked);
        std::thread::sleep(Duration::from_millis(20));
    }
    total.sort();
    after_ack.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    out.push_str("## Propagation: etcd put → first request routed by the new table\n\n");
    out.push_str(&format!(
        "{updates} updates, one at a time (each adds a frontend with a new PathPrefix); the client \
         polls the new path on fresh connections until it answers 200. \"after ack\" starts when \
         etcd acknowledged the put; \"total\" includes the put itself (raft + fsync).\n\n"
    ));
    out.push_str("| measure | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|\n");
    for (name, v) in [("total", &total), ("after ack", &after_ack)] {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        ));
    }
    out.push('\n');
    eprintln!(
        "propagation p50 {:?} p99 {:?}",
        percentile(&total, 0.5),
        percentile(&total, 0.99)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut updates = 200;
    let mut out_file = PathBuf::from("bench/results/control-plane.md");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--updates" => {
                updates = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--updates N")
            }
            "--out" => out_file = args.next().expect("--out FILE").into(),
            other => panic!("unknown argument {other}"),
        }
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/control-plane → target/<profile>/ringway
    let ringway = exe.parent().and_then(Path::parent).unwrap().join("ringway");
    assert!(
        ringway.exists(),
        "build the binary first: cargo build --release --bin ringway"
    );
    let dir = std::env::temp_dir().join(format!("ringway-cp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut out = String::from("# Control plane\n\n");
    out.push_str(&format!(
        "Measured by `bench/control-plane/main.rs` (`cargo run --release --example control-plane`) \
         on {} CPUs, etcd {} on loopback, release build.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Command::new("etcd")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_string()))
            .unwrap_or_default()
    ));
    compile_times(&mut out);
    propagation(&ringway, &dir, updates, &mut out);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = out_file.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out_file, &out).unwrap();
    print!("{out}");
}
