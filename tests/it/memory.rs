//! Bodies are streamed, never held whole: moving 100 MiB through ringway in either direction
//! barely changes its resident memory. Idle keep-alive connections give their request state
//! back within a second of a burst.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{catch_all, find, get, Client, Ringway};
use crate::origin::Origin;

const BODY: u64 = 100 * 1024 * 1024;
const ALLOWED_GROWTH_KIB: u64 = 32 * 1024;

/// Samples the process's RSS every 20 ms until dropped; reports the peak.
struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn watch(rw: &Ringway) -> RssPeak {
        let pid = rw.pid();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn connect(rw: &Ringway) -> TcpStream {
    let s = TcpStream::connect(rw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn a_100_mib_request_body_streams_through_in_bounded_memory() {
    let origin = Origin::counting();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    assert_eq!(get(rw.addr, "/warm-up").status, 200);
    let before = rw.rss_kib();
    let watch = RssPeak::watch(&rw);

    let mut s = connect(&rw);
    s.write_all(
        format!("PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
    let mut left = BODY;
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        s.write_all(&chunk[..n])
            .expect("ringway keeps reading the body");
        left -= n as u64;
    }
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.ends_with(BODY.to_string().as_bytes()) {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&resp));
        resp.extend_from_slice(&buf[..n]);
    }
    let peak = watch.finish();
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    assert!(
        peak.saturating_sub(before) < ALLOWED_GROWTH_KIB,
        "RSS grew from {before} KiB to {peak} KiB"
    );
}

#[test]
fn a_100_mib_response_body_streams_through_in_bounded_memory() {
    let origin = Origin::streaming(BODY);
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    let before = rw.rss_kib();
    let watch = RssPeak::watch(&rw);

    let mut s = connect(&rw);
    s.write_all(b"GET /download HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 65536];
    let body_start = loop {
        let n = s.read(&mut buf).expect("response head");
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&head, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    assert!(head_text.starts_with("http/1.1 200"), "{head_text}");
    assert!(
        head_text.contains(&format!("content-length: {BODY}")),
        "{head_text}"
    );
    let mut received = (head.len() - body_start) as u64;
    while received < BODY {
        let n = s.read(&mut buf).expect("body");
        assert!(n > 0, "closed after {received} bytes");
        received += n as u64;
    }
    let peak = watch.finish();
    assert_eq!(received, BODY);
    assert!(
        peak.saturating_sub(before) < ALLOWED_GROWTH_KIB,
        "RSS grew from {before} KiB to {peak} KiB"
    );
}

/// A burst of keep-alive clients that then go quiet costs, one second after the last
/// response, little more than each idle connection's task: a connection drops its request
/// state and buffers after `idle_hot_ms` (250 ms) without a request, and a worker quiet for
/// half a second gives the freed pages back to the OS.
#[test]
fn idle_keep_alive_connections_are_lean_one_second_after_the_last_response() {
    const CONNS: usize = 1500;
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), "");
    assert_eq!(get(rw.addr, "/warm-up").status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let before = rss_kib_of(rw.pid());
    let mut clients = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let mut c = Client::connect(rw.addr);
        c.send(format!("GET /burst/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("response");
        assert_eq!(r.status, 200);
        clients.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib_of(rw.pid());
    let per_conn = after.saturating_sub(before) * 1024 / CONNS as u64;
    // A connection still holding its request state would cost about 3 KiB more.
    assert!(
        per_conn <= 1280,
        "{per_conn} bytes per idle connection 1 s after the burst (RSS {before} -> {after} KiB)"
    );
    drop(clients);
}
