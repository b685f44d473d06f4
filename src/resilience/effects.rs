//! Side effects of the resilience state that leave the node: the circuit breakers' webhooks.
//! Workers never make them; a transition hands the webhook to this module's own thread, which
//! sends it with connect and read deadlines and logs the outcome.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::breaker::Webhook;

/// Deadline for connecting, and for each write and read of a webhook.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Webhooks waiting to be sent at most; beyond it one is dropped (and logged).
const QUEUE: usize = 64;

struct Job {
    hook: Webhook,
    frontend: Arc<str>,
    middleware: Arc<str>,
}

/// The sending side, shared by whoever makes transitions.
#[derive(Clone)]
pub struct Effects {
    tx: Option<SyncSender<Job>>,
}

impl Effects {
    /// Start the thread that sends webhooks.
    pub fn start() -> std::io::Result<Effects> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("ringway-effects".into())
            .spawn(move || {
                for job in rx {
                    match send(&job.hook) {
                        Ok(status) => tracing::info!(frontend = %job.frontend, middleware = %job.middleware, url = %job.hook.url, status, "circuit breaker webhook sent"),
                        Err(e) => tracing::warn!(frontend = %job.frontend, middleware = %job.middleware, url = %job.hook.url, "circuit breaker webhook failed: {e}"),
                    }
                }
            })?;
        Ok(Effects { tx: Some(tx) })
    }

    /// No thread: webhooks are dropped (for `check` and tests).
    pub fn disabled() -> Effects {
        Effects { tx: None }
    }

    /// Queue a webhook; never blocks.
    pub fn send(&self, hook: Webhook, frontend: Arc<str>, middleware: Arc<str>) {
        let Some(tx) = &self.tx else { return };
        let url = hook.url.clone();
        if let Err(TrySendError::Full(_)) = tx.try_send(Job {
            hook,
            frontend,
            middleware,
        }) {
            tracing::warn!(%url, "circuit breaker webhook dropped: {QUEUE} are already waiting");
        }
    }
}

/// Send one webhook; returns the status the server answered.
fn send(hook: &Webhook) -> Result<u16, String> {
    let rest = hook
        .url
        .get(7..)
        .filter(|_| hook.url[..7].eq_ignore_ascii_case("http://"))
        .ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let (body, form_type) = if hook.form.is_empty() {
        (hook.body.clone(), false)
    } else {
        (form_encode(&hook.form).into_bytes(), true)
    };
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ringway\r\nConnection: close\r\nContent-Length: {}\r\n",
        hook.method,
        body.len()
    );
    if form_type {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in &hook.headers {
        if k.bytes().all(crate::http::fields::is_token_byte)
            && v.bytes().all(crate::http::fields::is_field_value_byte)
        {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut answer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&answer[..got]);
    line.strip_prefix("HTTP/1.")
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// `application/x-www-form-urlencoded`, as Go's `url.Values.Encode` (keys in order).
fn form_encode(pairs: &[(String, String)]) -> String {
    fn esc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        esc(k, &mut out);
        out.push('=');
        esc(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_as_go_does() {
        let pairs = [
            ("Key".to_string(), "Val ue".to_string()),
            ("a&b".to_string(), "ü=1".to_string()),
        ];
        assert_eq!(form_encode(&pairs), "Key=Val+ue&a%26b=%C3%BC%3D1");
    }

    #[test]
    fn a_webhook_reaches_a_real_server_with_its_form() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"Key=Val") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            String::from_utf8(got).unwrap()
        });
        let hook = Webhook {
            url: format!("http://{addr}/tripped?x=1"),
            method: "POST".into(),
            headers: vec![("X-Alert".into(), "cb".into())],
            form: vec![("Key".into(), "Val".into())],
            body: Vec::new(),
        };
        assert_eq!(send(&hook), Ok(204));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /tripped?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
        assert!(request.contains("X-Alert: cb\r\n"));
        let refused = Webhook {
            url: "http://127.0.0.1:1/".into(),
            ..hook
        };
        assert!(send(&refused).unwrap_err().contains("connect"));
    }
}
