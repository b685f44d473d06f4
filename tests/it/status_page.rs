//! The status page on the admin listener: `/status.json` like the other admin endpoints, and
//! the page itself as a person sees it, rendered by headless Chromium (installed by
//! `tests/run.sh`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::admin::with_admin;
use crate::harness::{build_commit, get, routes_json, Client, PortHold, Ringway, TempDir};
use crate::origin::Origin;

/// A node with backend `b` of one live and one refusing server (ejected after one refusal),
/// some traffic through it, and its admin address.
fn busy_node(live: &Origin, dead: &PortHold) -> (Ringway, SocketAddr) {
    let (admin, extra) = with_admin(
        "[upstream]\nconsecutive_failures = 1\nbalancer = \"round_robin\"\nejection_base_ms = 60000\n",
    );
    let rw = Ringway::start_with_workers(
        &routes_json(
            &[("b", &[live.addr, dead.addr()])],
            &[("users", "b", "PathPrefix(`/users`)")],
        ),
        &extra,
        2,
    );
    let mut c = Client::connect(rw.addr);
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        c.send(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read_response(false).expect("a response").status, 200);
        std::thread::sleep(Duration::from_millis(5));
    }
    (rw, admin)
}

#[test]
fn status_json_has_the_node_frontend_rates_and_server_states() {
    let live = Origin::ok();
    let dead = PortHold::new();
    let (_rw, admin) = busy_node(&live, &dead);
    let r = get(admin, "/status.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let s: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let node = &s["node"];
    assert_eq!(node["workers"].as_array().map(Vec::len), Some(2), "{s}");
    assert!(node["workers"][0]["driver"].is_string(), "{s}");
    assert_eq!(node["ready"], true);
    assert_eq!(node["source"], "file");
    assert_eq!(node["commit"], build_commit(), "{s}");
    let f = &s["frontends"][0];
    assert_eq!(f["id"], "users");
    assert!(f["rps"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["p50_ms"].as_f64().is_some(), "{f}");
    assert!(
        f["spark_rps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_f64() > Some(0.0)),
        "{f}"
    );
    let servers = s["backends"][0]["servers"].as_array().unwrap();
    let state = |addr: SocketAddr| {
        servers
            .iter()
            .find(|v| v["addr"] == addr.to_string())
            .map(|v| v["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(live.addr).as_deref(), Some("up"));
    let live_row = servers
        .iter()
        .find(|v| v["addr"] == live.addr.to_string())
        .unwrap();
    assert!(live_row["pool_reuse"].as_f64() > Some(0.5), "{live_row}");
    // In-flight counts are published once a second: the last one may have caught a request
    // on its way, but the next shows none once traffic has stopped.
    let settled = Instant::now() + Duration::from_secs(3);
    loop {
        let s: serde_json::Value =
            serde_json::from_slice(&get(admin, "/status.json").body).expect("JSON");
        let row = s["backends"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["addr"] == live.addr.to_string())
            .cloned()
            .unwrap();
        if row["inflight"] == 0 {
            break;
        }
        assert!(Instant::now() < settled, "still in flight: {row}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(dead.addr()).as_deref(), Some("ejected"));
    let problems = s["problems"].to_string();
    assert!(
        problems.contains(&dead.addr().port().to_string()),
        "{problems}"
    );
}

/// A thread sending a request every 5 ms (at most for 30 s) until dropped.
struct KeepBusy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepBusy {
    fn start(addr: SocketAddr) -> KeepBusy {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let until = Instant::now() + Duration::from_secs(30);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                c.send(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n");
                if c.read_response(false).is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        KeepBusy {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KeepBusy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_status_page_renders_in_a_browser() {
    // tests/run.sh installs Debian's chromium.
    let chromium = which("chromium").expect("chromium renders the page (apt-get install chromium)");
    let live = Origin::ok();
    let dead = PortHold::new();
    let (rw, admin) = busy_node(&live, &dead);
    // Requests keep coming while the browser starts and renders (a loaded machine can take
    // seconds to start it), so the page's rates describe a busy node.
    let _load = KeepBusy::start(rw.addr);
    let page = get(admin, "/");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let dir = TempDir::new("chromium");
    let keep = std::env::var_os("RINGWAY_KEEP_SHOT");
    let shot = dir.0.join("status.png");
    let chrome = |extra: &[&str]| {
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=4000",
                "--window-size=1280,900",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.0.join("profile").display()
            ))
            .args(extra)
            .arg(format!("http://{admin}/"))
            .output()
            .expect("chromium runs")
    };
    let out = chrome(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-frontend=\"users\""),
        "no frontend row in the rendered page:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains(&format!("data-server=\"{}\"", live.addr)),
        "{dom}"
    );
    assert!(dom.contains("io_uring") || dom.contains("epoll"), "{dom}");
    assert!(dom.contains("workers on"), "{dom}");
    assert!(
        dom.contains(&format!("({}) · up", build_commit())),
        "the node line names the build's commit: {dom}"
    );
    // The frontend's rate cell shows a rate above zero.
    let rate = dom
        .split("class=\"num rps\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a rate cell");
    assert!(rate > 0.0, "{rate}");
    // The refusing server is shown as out of rotation.
    let dead_row = dom
        .split(&format!("data-server=\"{}\"", dead.addr()))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("a row for the refusing server")
        .to_string();
    assert!(dead_row.contains("ejected"), "{dead_row}");
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = chrome(&[&shot_arg]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RINGWAY_KEEP_SHOT=<path> keeps the screenshot for a person to look at.
    if let Some(path) = keep {
        let _ = std::fs::copy(&shot, path);
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
