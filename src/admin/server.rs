//! The admin listener: one blocking connection at a time on its own OS thread, bounded heads
//! (8 KiB) and deadlines, `Connection: close` after every answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{respond, AdminState, Reply};

/// Largest request head the admin endpoint reads.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A request head must arrive within this, and every write must progress within it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound admin socket.
pub struct AdminServer {
    listener: TcpListener,
}

impl AdminServer {
    /// Bind now, so that a bad or busy address is a start-up error.
    pub fn bind(addr: SocketAddr) -> anyhow::Result<AdminServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("admin listener: cannot bind {addr}: {e}"))?;
        Ok(AdminServer { listener })
    }

    /// Serve on a socket handed over by an older process.
    pub fn from_listener(listener: TcpListener) -> AdminServer {
        AdminServer { listener }
    }

    /// A duplicate of the listening socket, for a later handover.
    pub fn try_clone_listener(&self) -> std::io::Result<TcpListener> {
        self.listener.try_clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve on a thread of its own until the process exits; a second thread samples the
    /// counters once a second for the status page.
    pub fn spawn(self, state: Arc<AdminState>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let sampled = state.clone();
        std::thread::Builder::new()
            .name("ringway-sampler".into())
            .spawn(move || loop {
                sampled.history.sample(&sampled);
                std::thread::sleep(Duration::from_secs(1));
            })?;
        std::thread::Builder::new()
            .name("ringway-admin".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(s) => serve(&state, s),
                        Err(e) => {
                            tracing::warn!("admin accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
    }
}

fn serve(state: &AdminState, mut s: TcpStream) {
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let (reply, head_only) = match read_request(&mut s) {
        Ok((method, path)) => match method.as_str() {
            "GET" => (respond(state, &path), false),
            "HEAD" => (respond(state, &path), true),
            _ => (Reply::text(405, "method not allowed; use GET"), false),
        },
        Err(status) => (Reply::text(status, "bad request"), false),
    };
    let _ = write_reply(&mut s, &reply, head_only);
    // Closing with unread request bytes would reset the connection and could destroy the
    // answer before the client reads it: half-close, then drain briefly.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Read one request head; `Err(status)` when it is too large, malformed or too slow.
fn read_request(s: &mut TcpStream) -> Result<(String, String), u16> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        let _ = s.set_read_timeout(Some(left));
        if len == buf.len() {
            return Err(431);
        }
        let n = match s.read(&mut buf[len..]) {
            Ok(0) => return Err(400),
            Ok(n) => n,
            Err(_) => return Err(408),
        };
        len += n;
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or_default().to_string();
                let path = req.path.unwrap_or_default().to_string();
                return Ok((method, path));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

fn write_reply(s: &mut TcpStream, r: &Reply, head_only: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if r.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(&r.body)?;
    }
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::TableHandle;

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(raw).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_get_refuses_other_methods_and_oversized_heads() {
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        server
            .spawn(AdminState::new(TableHandle::new(), None))
            .unwrap();
        let ok = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok\n"),
            "{ok}"
        );
        let post = exchange(addr, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET"),
            "{post}"
        );
        let big = format!(
            "GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let mut c = TcpStream::connect(addr).unwrap();
        let _ = c.write_all(big.as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        let head = exchange(addr, b"HEAD /readyz HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 503 ") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn a_busy_address_is_refused_with_its_name() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = AdminServer::bind(addr).err().unwrap().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
