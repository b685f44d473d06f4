//! The worker's upstream side: keep-alive pools per server, round-robin server choice and
//! passive failure marking (nginx's `max_fails` / `fail_timeout`). Core-local, no locks.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::fast_hash::FastMap;
use crate::route::{Backend, Server};

/// Pool and health settings, from the profile.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub max_idle_per_server: usize,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// An idle connection is reusable only while the server has sent nothing on it: not EOF (it
/// closed its side) and no bytes (an unsolicited response must never be taken for the answer to
/// the next request). One non-blocking peek per reuse.
fn is_quiet(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into a valid one-byte buffer on a descriptor this stream owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Health {
    fails: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
}

pub struct Upstreams {
    settings: UpstreamSettings,
    idle: RefCell<FastMap<SocketAddr, Vec<Idle>>>,
    health: RefCell<FastMap<SocketAddr, Health>>,
    cursor: RefCell<FastMap<Box<str>, u64>>,
}

impl Upstreams {
    pub fn new(settings: UpstreamSettings) -> Upstreams {
        Upstreams {
            settings,
            idle: RefCell::default(),
            health: RefCell::default(),
            cursor: RefCell::default(),
        }
    }

    /// A pooled connection to `addr`, most recently used first; expired ones are closed.
    /// `now` is the worker's clock.
    pub fn take(
        &self,
        addr: SocketAddr,
        max_idle_age: Option<Duration>,
        now: Instant,
    ) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let ttl = max_idle_age.unwrap_or(self.settings.idle_timeout);
        while let Some(c) = list.pop() {
            if now.saturating_duration_since(c.since) < ttl && is_quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keep a connection whose last exchange ended cleanly (`now`: the worker's clock).
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, max_idle: Option<usize>, now: Instant) {
        let cap = max_idle.unwrap_or(self.settings.max_idle_per_server);
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= cap {
            if cap == 0 {
                return;
            }
            list.remove(0);
        }
        list.push(Idle { stream, since: now });
    }

    /// Close idle connections past their timeout (called from the worker's ticker).
    pub fn sweep(&self) {
        let ttl = self.settings.idle_timeout;
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| c.since.elapsed() < ttl);
        }
        idle.retain(|_, l| !l.is_empty());
    }

    fn is_down(&self, addr: &SocketAddr, now: Instant) -> bool {
        match self.health.borrow().get(addr) {
            Some(h) => h.down_until.is_some_and(|t| now < t),
            None => false,
        }
    }

    /// Choose a server by weighted round-robin, skipping servers marked down and those in
    /// `tried`. When every untried server is marked down, one is used anyway (as Envoy's panic
    /// mode): a passive mark only steers traffic while there is an alternative. `now`: the
    /// worker's clock.
    pub fn pick<'t>(
        &self,
        backend: &'t Backend,
        tried: &[u16],
        now: Instant,
    ) -> Option<(u16, &'t Server)> {
        let servers = &backend.servers;
        if servers.is_empty() {
            return None;
        }
        let total: u64 = servers.iter().map(|s| u64::from(s.weight.max(1))).sum();
        let start = {
            let mut cursors = self.cursor.borrow_mut();
            let c = match cursors.get_mut(&*backend.id) {
                Some(c) => c,
                None => cursors.entry(Box::from(&*backend.id)).or_insert(0),
            };
            let v = *c;
            *c = c.wrapping_add(1);
            v % total
        };
        // Position of `start` in the weighted sequence.
        let mut acc = 0u64;
        let mut first = 0;
        for (i, s) in servers.iter().enumerate() {
            acc += u64::from(s.weight.max(1));
            if start < acc {
                first = i;
                break;
            }
        }
        let mut fallback = None;
        for k in 0..servers.len() {
            let i = (first + k) % servers.len();
            if tried.contains(&(i as u16)) {
                continue;
            }
            let s = &servers[i];
            if !self.is_down(&s.addr, now) {
                return Some((i as u16, s));
            }
            fallback.get_or_insert((i as u16, s));
        }
        fallback
    }

    /// Count a failure; `max_fails` failures within `fail_timeout` mark the server down for
    /// `fail_timeout`.
    pub fn mark_failed(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut health = self.health.borrow_mut();
        let h = health.entry(addr).or_default();
        match h.window_start {
            Some(t) if now.duration_since(t) < self.settings.fail_timeout => h.fails += 1,
            _ => {
                h.window_start = Some(now);
                h.fails = 1;
            }
        }
        if h.fails >= self.settings.max_fails {
            let was_down = h.down_until.is_some_and(|t| now < t);
            h.down_until = Some(now + self.settings.fail_timeout);
            // Once per outage, not once per request that still reaches it (panic mode).
            if was_down {
                tracing::debug!(server = %addr, "upstream still down after {} failure(s)", h.fails);
            } else {
                tracing::warn!(server = %addr, "upstream marked down after {} failure(s)", h.fails);
            }
        }
        // Its pooled connections are suspect too.
        drop(health);
        self.idle.borrow_mut().remove(&addr);
    }

    /// A successful exchange clears the failure count.
    pub fn mark_ok(&self, addr: SocketAddr) {
        let mut health = self.health.borrow_mut();
        if health.contains_key(&addr) {
            health.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn backend(addrs: &[(&str, u32)]) -> Backend {
        Backend {
            id: Arc::from("b1"),
            settings: Default::default(),
            servers: addrs
                .iter()
                .enumerate()
                .map(|(i, (a, w))| Server {
                    id: Arc::from(format!("s{i}").as_str()),
                    url: format!("http://{a}"),
                    addr: a.parse().unwrap(),
                    authority: a.to_string(),
                    weight: *w,
                })
                .collect(),
        }
    }

    fn ups(max_fails: u32) -> Upstreams {
        Upstreams::new(UpstreamSettings {
            max_idle_per_server: 4,
            idle_timeout: Duration::from_secs(30),
            max_fails,
            fail_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn round_robin_follows_weights() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 3)]);
        let u = ups(1);
        let picks: Vec<u16> = (0..8)
            .map(|_| u.pick(&b, &[], Instant::now()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 6);
    }

    #[test]
    fn a_failed_server_is_skipped_until_fail_timeout_but_used_when_alone() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
        let u = ups(1);
        u.mark_failed("127.0.0.1:1".parse().unwrap());
        for _ in 0..4 {
            assert_eq!(u.pick(&b, &[], Instant::now()).unwrap().1.addr.port(), 2);
        }
        let tried = [1];
        assert_eq!(
            u.pick(&b, &tried, Instant::now()).unwrap().1.addr.port(),
            1,
            "panic mode"
        );
        u.mark_ok("127.0.0.1:1".parse().unwrap());
        let ports: Vec<u16> = (0..4)
            .map(|_| u.pick(&b, &[], Instant::now()).unwrap().1.addr.port())
            .collect();
        assert!(ports.contains(&1));
    }

    #[test]
    fn max_fails_counts_within_the_window() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
        let u = ups(2);
        u.mark_failed("127.0.0.1:1".parse().unwrap());
        let ports: Vec<u16> = (0..4)
            .map(|_| u.pick(&b, &[], Instant::now()).unwrap().1.addr.port())
            .collect();
        assert!(
            ports.contains(&1),
            "one failure of two allowed does not mark down"
        );
        u.mark_failed("127.0.0.1:1".parse().unwrap());
        let ports: Vec<u16> = (0..4)
            .map(|_| u.pick(&b, &[], Instant::now()).unwrap().1.addr.port())
            .collect();
        assert!(!ports.contains(&1));
    }

    #[test]
    fn no_servers_means_no_pick() {
        assert!(ups(1).pick(&backend(&[]), &[], Instant::now()).is_none());
    }
}
