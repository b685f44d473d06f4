//! A real TCP origin on loopback that records every request it receives (parsed and raw) and
//! answers with whatever the test says, including hostile responses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Minor version: 0 or 1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked coding removed).
    pub body: Vec<u8>,
    /// The request's raw bytes as received (head and body).
    pub raw: Vec<u8>,
    /// Which accepted connection it came on (0, 1, ...).
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::harness::values_named(&self.headers, name).next()
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        crate::harness::values_named(&self.headers, name).collect()
    }
}

/// What the origin does with a request.
pub enum Reply {
    /// Write these bytes and keep the connection for the next request.
    Bytes(Vec<u8>),
    /// Write these bytes, then close.
    BytesThenClose(Vec<u8>),
    /// Wait, then do the inner reply.
    After(Duration, Box<Reply>),
    /// Close without answering.
    Close,
    /// Write the bytes, then relay everything received back (a 101 tunnel echo).
    EchoTunnel(Vec<u8>),
}

impl Reply {
    /// `200 OK` with a Content-Length body.
    pub fn ok(body: &str) -> Reply {
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    pub fn status(code: u16, body: &str) -> Reply {
        Reply::Bytes(
            format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    conns: Arc<AtomicUsize>,
    /// Connections that ended (the peer closed, or the origin did).
    ended: Arc<AtomicUsize>,
    /// Bytes received through tunnels after a 101 ([`Reply::EchoTunnel`]).
    tunnelled: Arc<Mutex<Vec<u8>>>,
}

impl Origin {
    /// An origin answering every request through `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        Origin::serve_on(listener, handler)
    }

    /// An origin on a given loopback port (e.g. one a backend already lists as dead).
    #[allow(dead_code)]
    /// The port was free a moment ago, but tests running alongside may hold it briefly as the
    /// local end of a connection of theirs: binding is retried for a few seconds.
    pub fn start_on(port: u16, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Origin {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("bind origin port {port}: {e}"),
            }
        };
        Origin::serve_on(listener, handler)
    }

    fn serve_on(
        listener: TcpListener,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let addr = listener.local_addr().unwrap();
        let origin = Origin::new(addr);
        let handler: Handler = Arc::new(handler);
        let logs = Logs {
            seen: origin.seen.clone(),
            raw: origin.raw.clone(),
            tunnelled: origin.tunnelled.clone(),
        };
        let (c, ended) = (origin.conns.clone(), origin.ended.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let id = c.fetch_add(1, Ordering::SeqCst);
                let (logs, h, ended) = (logs.clone(), handler.clone(), ended.clone());
                std::thread::spawn(move || {
                    serve(stream, id, &logs, h);
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        origin
    }

    fn new(addr: SocketAddr) -> Origin {
        Origin {
            addr,
            seen: Arc::default(),
            raw: Arc::default(),
            conns: Arc::default(),
            ended: Arc::default(),
            tunnelled: Arc::default(),
        }
    }

    /// An origin answering `200 OK` with body "ok" to everything.
    pub fn ok() -> Origin {
        Origin::start(|_| Reply::ok("ok"))
    }

    /// An origin answering with the method and target it received, e.g. "GET /a?b".
    pub fn echo() -> Origin {
        Origin::start(|s| Reply::ok(&format!("{} {}", s.method, s.target)))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every byte received on any connection.
    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Connections that have ended (closed by either side).
    #[allow(dead_code)]
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Every byte received through a tunnel after a 101.
    #[allow(dead_code)]
    pub fn tunnelled(&self) -> Vec<u8> {
        self.tunnelled.lock().unwrap().clone()
    }

    /// An origin that switches protocols whenever it is asked to, as an h2c-speaking server
    /// does: a request offering `Upgrade` gets `101` naming `protocol` (or, when `None`, the
    /// first protocol offered), then its tunnel echoes and logs what arrives. With
    /// `protocol` set, requests offering nothing get that 101 too; otherwise `200 plain`.
    #[allow(dead_code)]
    pub fn switching(protocol: Option<&'static str>) -> Origin {
        Origin::start(move |s| {
            let offered = s
                .header("upgrade")
                .map(|v| v.split(',').next().unwrap_or("").trim().to_string());
            match protocol.map(str::to_string).or(offered) {
                Some(p) => Reply::EchoTunnel(
                    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {p}\r\n\r\n")
                        .into_bytes(),
                ),
                None => Reply::ok("plain"),
            }
        })
    }
}

/// Where an origin's connections record what they receive.
#[derive(Clone)]
struct Logs {
    seen: Arc<Mutex<Vec<Seen>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
}

fn serve(mut stream: TcpStream, conn: usize, logs: &Logs, handler: Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf, conn, &logs.raw) else {
            return;
        };
        logs.seen.lock().unwrap().push(req.clone());
        let mut reply = handler(&req);
        loop {
            match reply {
                Reply::After(d, inner) => {
                    std::thread::sleep(d);
                    reply = *inner;
                }
                Reply::Bytes(b) => {
                    if stream.write_all(&b).is_err() {
                        return;
                    }
                    break;
                }
                Reply::BytesThenClose(b) => {
                    let _ = stream.write_all(&b);
                    return;
                }
                Reply::Close => return,
                Reply::EchoTunnel(b) => {
                    let _ = stream.write_all(&b);
                    if !buf.is_empty() {
                        logs.tunnelled.lock().unwrap().extend_from_slice(&buf);
                        let _ = stream.write_all(&buf);
                    }
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut chunk) {
                        logs.tunnelled
                            .lock()
                            .unwrap()
                            .extend_from_slice(&chunk[..n]);
                        if n == 0 || stream.write_all(&chunk[..n]).is_err() {
                            break;
                        }
                    }
                    return;
                }
            }
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, raw: &Mutex<Vec<u8>>) -> bool {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            raw.lock().unwrap().extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: usize,
    raw: &Mutex<Vec<u8>>,
) -> Option<Seen> {
    let (mut seen, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let seen = Seen {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").to_string(),
                    version: req.version.unwrap_or(1),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                    raw: Vec::new(),
                    conn,
                };
                break (seen, n);
            }
            Ok(httparse::Status::Partial) => {
                if !fill(stream, buf, raw) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    };
    let mut end = head_len;
    let chunked = seen
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut pos = head_len;
        loop {
            let line = loop {
                if let Some(i) = crate::harness::find(&buf[pos..], b"\r\n") {
                    break i;
                }
                if !fill(stream, buf, raw) {
                    return None;
                }
            };
            let text = String::from_utf8_lossy(&buf[pos..pos + line]).into_owned();
            let size =
                usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16).ok()?;
            pos += line + 2;
            if size == 0 {
                loop {
                    if let Some(i) = crate::harness::find(&buf[pos - 2..], b"\r\n\r\n") {
                        end = pos - 2 + i + 4;
                        break;
                    }
                    if !fill(stream, buf, raw) {
                        return None;
                    }
                }
                break;
            }
            while buf.len() < pos + size + 2 {
                if !fill(stream, buf, raw) {
                    return None;
                }
            }
            seen.body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(len) = seen
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < head_len + len {
            if !fill(stream, buf, raw) {
                return None;
            }
        }
        seen.body = buf[head_len..head_len + len].to_vec();
        end = head_len + len;
    }
    seen.raw = buf[..end].to_vec();
    buf.drain(..end);
    Some(seen)
}

/// Byte `i` of the bodies the bulk origins send and tests upload: it depends on the position,
/// so a lost, repeated or reordered stretch of a body shows.
pub fn body_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// FNV-1a, 64 bits: a body's fingerprint, computed as the bytes stream past.
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Origins for bulk transfers: they never hold a body in memory.
impl Origin {
    /// Reads Content-Length request bodies (exactly their length) and discards them; answers
    /// `200` with "<FNV-1a of the body, 16 hex digits> <number of body bytes>". Heads are
    /// recorded in `seen()` (with an empty body).
    #[allow(dead_code)]
    pub fn counting() -> Origin {
        Origin::bulk(|stream, seen, _| {
            let body_len = seen
                .header("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let mut left = body_len;
            let mut sum = Fnv::new();
            let mut chunk = vec![0u8; 65536];
            while left > 0 {
                let want = (chunk.len() as u64).min(left) as usize;
                match stream.read(&mut chunk[..want]) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        sum.update(&chunk[..n]);
                        left -= n as u64;
                    }
                }
            }
            let body = format!("{:016x} {body_len}", sum.0);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok()
        })
    }

    /// Answers every (bodiless) request with `200` and a body of `len` bytes made of
    /// [`body_byte`]s.
    #[allow(dead_code)]
    pub fn streaming(len: u64) -> Origin {
        Origin::streaming_cut(len, None)
    }

    /// Like [`Origin::streaming`], but on its first connection the origin closes after `cut`
    /// body bytes (when given): a response shorter than its Content-Length.
    #[allow(dead_code)]
    pub fn streaming_cut(len: u64, cut: Option<u64>) -> Origin {
        Origin::bulk(move |stream, _, conn| {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            if stream.write_all(head.as_bytes()).is_err() {
                return false;
            }
            let end = match cut {
                Some(cut) if conn == 0 => cut.min(len),
                _ => len,
            };
            let mut chunk = Vec::with_capacity(65536);
            let mut at = 0;
            while at < end {
                let n = 65536.min(end - at);
                chunk.clear();
                chunk.extend((at..at + n).map(body_byte));
                if stream.write_all(&chunk).is_err() {
                    return false;
                }
                at += n;
            }
            end == len
        })
    }

    /// Accept loop whose connections read request heads and let `answer` handle the body and
    /// the response; `answer` returns false to close the connection.
    fn bulk(
        answer: impl Fn(&mut TcpStream, &Seen, usize) -> bool + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let origin = Origin::new(listener.local_addr().unwrap());
        let answer = Arc::new(answer);
        let (s, c) = (origin.seen.clone(), origin.conns.clone());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let id = c.fetch_add(1, Ordering::SeqCst);
                let (s, answer) = (s.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    loop {
                        let Some(head) = read_head_only(&mut stream, id) else {
                            return;
                        };
                        s.lock().unwrap().push(head.clone());
                        if !answer(&mut stream, &head, id) {
                            return;
                        }
                    }
                });
            }
        });
        origin
    }
}

/// Read one request head byte by byte (so no body byte is consumed) and parse it.
fn read_head_only(stream: &mut TcpStream, conn: usize) -> Option<Seen> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head).ok()?;
    Some(Seen {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        raw: head.clone(),
        conn,
    })
}
