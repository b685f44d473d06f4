//! The built-in demo: two small HTTP services on loopback (`users` and `orders`), a routes file
//! in vulcand's layout pointing at them, and a node serving the mesh listener on
//! 127.0.0.1:9003. No etcd needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Profile;

/// Address of the demo's mesh listener.
pub const DEMO_ADDR: &str = "127.0.0.1:9003";

/// Start a demo service on a free loopback port; it answers every request with a small JSON
/// document naming itself and echoing what it received.
pub fn start_service(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new().spawn(move || serve_demo(name, stream));
            }
        })?;
    Ok(addr)
}

fn serve_demo(name: &str, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        let mut close = false;
        let mut echoed = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                match k.as_str() {
                    "content-length" => length = v.parse().unwrap_or(0),
                    "connection" if v.eq_ignore_ascii_case("close") => close = true,
                    "host" | "x-forwarded-for" | "x-request-id" => echoed.push((k, v)),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let fields: Vec<String> = echoed
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v:?}"))
            .collect();
        let doc = format!(
            "{{\"service\":\"{name}\",\"method\":{method:?},\"path\":{target:?},\"body_bytes\":{length},{}}}\n",
            fields.join(",")
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
            doc.len()
        );
        if out.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Routes of the demo in the routes-file format.
pub fn demo_routes(users: SocketAddr, orders: SocketAddr) -> String {
    serde_json::json!({
        "/vulcand/backends/users/backend": {"Type": "http"},
        "/vulcand/backends/users/servers/u1": {"URL": format!("http://{users}")},
        "/vulcand/backends/orders/backend": {"Type": "http"},
        "/vulcand/backends/orders/servers/o1": {"URL": format!("http://{orders}")},
        "/vulcand/frontends/users/frontend": {
            "Type": "http", "BackendId": "users", "Route": "PathPrefix(`/users`)"
        },
        "/vulcand/frontends/user-by-id/frontend": {
            "Type": "http", "BackendId": "users", "Route": "Path(`/users/<int:id>`) && Method(`GET`)"
        },
        "/vulcand/frontends/orders/frontend": {
            "Type": "http", "BackendId": "orders", "Route": "PathPrefix(`/orders`)"
        }
    })
    .to_string()
}

/// `ringway` with no arguments (on [`DEMO_ADDR`]), or `ringway demo --addr ADDR`.
pub fn run(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let users = start_service("users").context("cannot start the demo users service")?;
    let orders = start_service("orders").context("cannot start the demo orders service")?;
    let dir = std::env::temp_dir().join(format!("ringway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let routes: PathBuf = dir.join("routes.json");
    std::fs::write(&routes, demo_routes(users, orders))
        .with_context(|| format!("cannot write {}", routes.display()))?;
    let profile_text = format!(
        "[node]\nworkers = 1\npin_workers = false\n\n[[listener]]\nname = \"mesh\"\naddr = \"{addr}\"\nrole = \"mesh\"\n\n[routes]\nsource = \"file\"\nfile = {:?}\n",
        routes.display().to_string()
    );
    let profile = Profile::parse(&profile_text, &dir.join("demo.toml"))?;
    crate::node::init_logging(&profile.log.level);
    println!("ringway demo: services `users` on {users} and `orders` on {orders}");
    println!(
        "routes file (edit it; changes apply live): {}",
        routes.display()
    );
    println!();
    println!("try:");
    println!("  curl -i http://{addr}/users/42");
    println!("  curl -i http://{addr}/orders -d '{{\"item\":\"book\"}}'");
    println!("  curl -i http://{addr}/nowhere        # 404: no route");
    println!();
    println!("Ctrl-C stops the demo.");
    let code = crate::node::run(profile);
    let _ = std::fs::remove_dir_all(&dir);
    code
}
