//! Choosing a server for an attempt, and what each attempt's outcome tells about its server:
//! outlier ejection (node-wide, through the server's [`ServerHealth`]) and the balancer's
//! latency estimates (per worker).
//!
//! A server out of rotation is skipped; when its penalty is over, the first request that
//! would choose it is its probe. When every server not yet tried is out, one is used anyway
//! (as Envoy's panic mode): ejection steers traffic only while there is an alternative.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::upstream::Upstreams;
use crate::config::Balancer;
use crate::resilience::balancer::PeakEwma;
use crate::resilience::ejection::{now_ms, Availability, ServerHealth};
use crate::route::{Backend, Server};

/// Draws before falling back to a scan for an eligible candidate.
const DRAWS: usize = 3;
/// A server this worker has not used for this long loses its estimate.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One server's load as this worker sees it.
pub struct Load {
    pub ewma: PeakEwma,
    health: Arc<ServerHealth>,
    used: Instant,
    /// Requests in flight as last added to the server's node-wide count.
    published: u32,
    /// Requests sent on pooled and on new connections since the last report.
    reused: u64,
    fresh: u64,
}

/// The server chosen for an attempt.
pub struct Pick<'t> {
    /// Its index in the backend's servers.
    pub index: u16,
    pub server: &'t Server,
    /// This attempt is the probe that decides whether the ejected server returns.
    pub probe: bool,
}

/// An attempt in flight, counted in the server's load while it lasts.
pub struct InFlight<'u> {
    upstreams: &'u Upstreams,
    addr: Option<SocketAddr>,
    /// Its response is timed for the balancer (p2c_ewma on a backend of several servers).
    timed: bool,
    /// Whether its request went out on a pooled connection, once known.
    reused: std::cell::Cell<Option<bool>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(addr) = self.addr {
            if let Some(l) = self.upstreams.load.borrow_mut().get_mut(&addr) {
                l.ewma.inflight = l.ewma.inflight.saturating_sub(1);
                match self.reused.get() {
                    Some(true) => l.reused += 1,
                    Some(false) => l.fresh += 1,
                    None => {}
                }
            }
        }
    }
}

impl Upstreams {
    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    /// Choose a server of `backend` for an attempt, skipping the servers in `tried`.
    pub fn pick<'t>(&self, backend: &'t Backend, tried: &[u16], now: Instant) -> Option<Pick<'t>> {
        let servers = &backend.servers;
        let now_ms = now_ms(now);
        match servers.len() {
            0 => None,
            1 if tried.is_empty() => Some(self.claim(0, &servers[0], now_ms)),
            1 => None,
            _ => match self.settings.balancer {
                Balancer::RoundRobin => self.round_robin(backend, tried, now_ms),
                Balancer::P2cEwma => self.p2c(backend, tried, now, now_ms),
            },
        }
    }

    /// `server`, probing it when its penalty is over (panic mode uses it anyway when out).
    fn claim<'t>(&self, index: usize, server: &'t Server, now_ms: u64) -> Pick<'t> {
        Pick {
            index: index as u16,
            server,
            probe: server.health.availability(now_ms) == Availability::Probe,
        }
    }

    fn round_robin<'t>(
        &self,
        backend: &'t Backend,
        tried: &[u16],
        now_ms: u64,
    ) -> Option<Pick<'t>> {
        let servers = &backend.servers;
        let total = backend
            .cumulative_weights
            .last()
            .copied()
            .unwrap_or(servers.len() as u64);
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
        let first = if backend.cumulative_weights.is_empty() {
            start as usize
        } else {
            backend
                .cumulative_weights
                .partition_point(|&acc| acc <= start)
        };
        let mut fallback = None;
        for k in 0..servers.len() {
            let i = (first + k) % servers.len();
            if tried.contains(&(i as u16)) {
                continue;
            }
            let s = &servers[i];
            match s.health.availability(now_ms) {
                Availability::InRotation => {
                    return Some(Pick {
                        index: i as u16,
                        server: s,
                        probe: false,
                    })
                }
                Availability::Probe => {
                    return Some(Pick {
                        index: i as u16,
                        server: s,
                        probe: true,
                    })
                }
                Availability::Ejected => {
                    fallback.get_or_insert(Pick {
                        index: i as u16,
                        server: s,
                        probe: false,
                    });
                }
            }
        }
        fallback
    }

    /// A server index drawn at random. Weights act in the cost instead (a server of weight
    /// 3 is worth a third of its load), so that at equal response times the requests in
    /// flight, and so the traffic, settle in proportion to the weights.
    fn draw(&self, backend: &Backend) -> usize {
        let mut rng = self.rng.get();
        let i = rng.below(backend.servers.len() as u64) as usize;
        self.rng.set(rng);
        i
    }

    /// An untried, non-ejected server other than `except`, drawn at random (a scan from a
    /// random start when draws keep missing). A server whose penalty is over is claimed as
    /// its probe and comes back as `Err`: it is taken at once.
    fn candidate(
        &self,
        backend: &Backend,
        tried: &[u16],
        except: Option<usize>,
        now_ms: u64,
    ) -> Option<Result<usize, usize>> {
        let servers = &backend.servers;
        let usable = |i: usize| {
            if Some(i) == except || tried.contains(&(i as u16)) {
                return None;
            }
            let h = &servers[i].health;
            if !h.is_ejected() {
                Some(Ok(i))
            } else if h.probe_due(now_ms) && h.availability(now_ms) == Availability::Probe {
                Some(Err(i))
            } else {
                None
            }
        };
        for _ in 0..DRAWS {
            if let Some(r) = usable(self.draw(backend)) {
                return Some(r);
            }
        }
        let start = self.draw(backend);
        (0..servers.len()).find_map(|k| usable((start + k) % servers.len()))
    }

    fn p2c<'t>(
        &self,
        backend: &'t Backend,
        tried: &[u16],
        now: Instant,
        now_ms: u64,
    ) -> Option<Pick<'t>> {
        let servers = &backend.servers;
        let a = match self.candidate(backend, tried, None, now_ms) {
            Some(Ok(a)) => a,
            Some(Err(probe)) => {
                return Some(Pick {
                    index: probe as u16,
                    server: &servers[probe],
                    probe: true,
                })
            }
            // Every untried server is out: panic mode.
            None => return self.round_robin(backend, tried, now_ms),
        };
        let b = match self.candidate(backend, tried, Some(a), now_ms) {
            Some(Ok(b)) => b,
            Some(Err(probe)) => {
                return Some(Pick {
                    index: probe as u16,
                    server: &servers[probe],
                    probe: true,
                })
            }
            None => {
                return Some(Pick {
                    index: a as u16,
                    server: &servers[a],
                    probe: false,
                })
            }
        };
        let ns = self.ns(now);
        let load = self.load.borrow();
        let ewma = |i: usize| {
            load.get(&servers[i].addr)
                .map(|l| l.ewma)
                .unwrap_or_default()
        };
        let (ea, eb) = (ewma(a), ewma(b));
        let cost_a = ea.cost(ns, &eb, servers[a].weight);
        let cost_b = eb.cost(ns, &ea, servers[b].weight);
        let (i, chosen, other) = if cost_b < cost_a {
            (b, eb, ea)
        } else {
            (a, ea, eb)
        };
        drop(load);
        if let Some(bar) = chosen.stale_against(ns, &other) {
            if let Some(l) = self.load.borrow_mut().get_mut(&servers[i].addr) {
                l.ewma.probing(bar);
            }
        }
        Some(Pick {
            index: i as u16,
            server: &servers[i],
            probe: false,
        })
    }

    /// Count an attempt on `server` in its load until the guard drops (p2c on a backend of
    /// more than one server; otherwise nothing is tracked).
    pub fn begin(&self, backend: &Backend, server: &Server, now: Instant) -> InFlight<'_> {
        let mut load = self.load.borrow_mut();
        let l = load.entry(server.addr).or_insert_with(|| Load {
            ewma: PeakEwma::default(),
            health: server.health.clone(),
            used: now,
            published: 0,
            reused: 0,
            fresh: 0,
        });
        l.ewma.inflight += 1;
        l.used = now;
        InFlight {
            upstreams: self,
            addr: Some(server.addr),
            timed: self.settings.balancer == Balancer::P2cEwma && backend.servers.len() > 1,
            reused: std::cell::Cell::new(None),
        }
    }

    /// The attempt's request went out on a pooled (`reused`) or a new connection (counted
    /// when the attempt ends).
    pub fn count_connection(flight: &InFlight<'_>, reused: bool) {
        flight.reused.set(Some(reused));
    }

    /// The attempt's response head arrived `rtt` after its request went out.
    pub fn observe(&self, flight: &InFlight<'_>, rtt: Duration, now: Instant) {
        self.estimate(flight, now, |ewma, ns| {
            ewma.observe(rtt.as_nanos() as u64, ns)
        });
    }

    /// The attempt's answer was a 5xx: the estimate is left alone, but a server asked because
    /// its estimate went stale is not asked again soon.
    pub fn answered_failing(&self, flight: &InFlight<'_>, now: Instant) {
        self.estimate(flight, now, |ewma, ns| ewma.probe_failed(ns));
    }

    /// Update the estimate of a timed attempt's server with `f(estimate, now in ns)`.
    fn estimate(&self, flight: &InFlight<'_>, now: Instant, f: impl FnOnce(&mut PeakEwma, u64)) {
        let Some(addr) = flight.addr.filter(|_| flight.timed) else {
            return;
        };
        let ns = self.ns(now);
        if let Some(l) = self.load.borrow_mut().get_mut(&addr) {
            f(&mut l.ewma, ns);
        }
    }

    /// The attempt failed on the network (refused, reset or timed out): the server is
    /// charged at least `floor` (the connect deadline) as if it had answered that slowly, so
    /// p2c stops choosing it at once instead of only when ejection takes it out. A refused
    /// connection fails fast and must not make the server look fast; its charge fades within
    /// seconds (the host answered: the server is down or restarting, not silent), where any
    /// other failure's fades like a measured response but never goes stale.
    pub fn penalise(
        &self,
        flight: &InFlight<'_>,
        elapsed: Duration,
        floor: Duration,
        refused: bool,
        now: Instant,
    ) {
        let charge = elapsed.max(floor).as_nanos() as u64;
        self.estimate(flight, now, |ewma, ns| {
            if refused {
                ewma.charge_refused(charge, ns)
            } else {
                ewma.charge_failed(charge, ns)
            }
        });
    }

    /// Whether attempts on this backend are timed for the balancer.
    pub fn timed(flight: &InFlight<'_>) -> bool {
        flight.timed
    }

    /// The attempt got an answer that was not a 5xx.
    pub fn success(&self, pick: &Pick<'_>, now: Instant) {
        let server = pick.server;
        if server.health.success(now_ms(now), pick.probe) {
            tracing::info!(server = %server.url, "upstream back in rotation after its probe");
        }
    }

    /// The attempt failed on `server` (a 5xx answer, a failed, reset or timed-out
    /// connection): count it towards ejecting the server.
    pub fn failure(&self, backend: &Backend, server: &Server, now: Instant) {
        let now_ms = now_ms(now);
        let siblings = || {
            let out = backend
                .servers
                .iter()
                .filter(|s| s.health.is_ejected())
                .count();
            (out, backend.servers.len())
        };
        if let Some(penalty) = server
            .health
            .failure(now_ms, &self.settings.ejection, siblings)
        {
            tracing::warn!(
                backend = %backend.id,
                server = %server.url,
                penalty_ms = penalty,
                ejections = server.health.ejections(),
                "upstream ejected after failing {} time(s) in a row",
                self.settings.ejection.consecutive_failures
            );
            self.forget(server.addr);
        }
    }

    /// The attempt ended without telling anything about the server (the client left, or it
    /// answered an upload early); a probe it held is handed back.
    pub fn neutral(&self, pick: &Pick<'_>) {
        if pick.probe {
            pick.server.health.release_probe();
        }
    }

    /// Publish this worker's estimates to the servers' health (for `/routes`) and forget
    /// servers not used for a while (the worker's 1 s sweep).
    pub fn sweep_load(&self, now: Instant) {
        let ns = self.ns(now);
        self.load.borrow_mut().retain(|_, l| {
            if let Some(rtt) = l.ewma.rtt(ns) {
                l.health.set_rtt_estimate_us((rtt / 1000.0) as u64);
            }
            let now_in_flight = l.ewma.inflight;
            if now_in_flight != l.published {
                l.health
                    .add_inflight(i64::from(now_in_flight) - i64::from(l.published));
                l.published = now_in_flight;
            }
            if l.reused + l.fresh > 0 {
                l.health.add_connections(l.reused, l.fresh);
                (l.reused, l.fresh) = (0, 0);
            }
            l.ewma.inflight > 0 || now.saturating_duration_since(l.used) < FORGET_AFTER
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataplane::upstream::UpstreamSettings;
    use crate::resilience::ejection::EjectionSettings;

    fn backend(addrs: &[(&str, u32)]) -> Backend {
        Backend::new(
            Arc::from("b1"),
            Default::default(),
            addrs
                .iter()
                .enumerate()
                .map(|(i, (a, w))| Server {
                    id: Arc::from(format!("s{i}").as_str()),
                    url: format!("http://{a}"),
                    addr: a.parse().unwrap(),
                    authority: a.to_string(),
                    tls: None,
                    weight: *w,
                    health: Arc::default(),
                })
                .collect(),
        )
    }

    pub(crate) fn ups(balancer: Balancer) -> Upstreams {
        Upstreams::new(
            UpstreamSettings {
                max_idle_per_server: 4,
                idle_timeout: Duration::from_secs(30),
                ejection: EjectionSettings {
                    consecutive_failures: 2,
                    base_ms: 10_000,
                    max_ms: 60_000,
                    max_percent: 50,
                },
                balancer,
            },
            42,
        )
    }

    fn port(p: Option<Pick<'_>>) -> u16 {
        p.expect("a pick").server.addr.port()
    }

    #[test]
    fn round_robin_follows_weights() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 3)]);
        let u = ups(Balancer::RoundRobin);
        let picks: Vec<u16> = (0..8)
            .map(|_| port(u.pick(&b, &[], Instant::now())))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 6);
    }

    #[test]
    fn p2c_spreads_an_unknown_backend_and_weights_scale_the_load_a_server_may_hold() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)]);
        let u = ups(Balancer::P2cEwma);
        let mut counts = [0u32; 4];
        for _ in 0..3_000 {
            counts[port(u.pick(&b, &[], Instant::now())) as usize] += 1;
        }
        assert!(
            counts[1..].iter().all(|&n| (850..1_150).contains(&n)),
            "{counts:?}"
        );
        // Weight 3 against weight 1 at equal response times: the heavy server is chosen
        // until it holds three times the requests in flight.
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 3)]);
        let now = Instant::now();
        for s in &b.servers {
            let f = u.begin(&b, s, now);
            u.observe(&f, Duration::from_millis(1), now);
        }
        // Light: 1 in flight, cost 2 / 1. Heavy: 4 in flight, cost 5 / 3: still cheaper.
        let light = u.begin(&b, &b.servers[0], now);
        let mut heavy: Vec<InFlight<'_>> =
            (0..4).map(|_| u.begin(&b, &b.servers[1], now)).collect();
        assert_eq!(port(u.pick(&b, &[], now)), 2);
        // Heavy with 6 in flight costs 7 / 3: now the light one is chosen.
        heavy.extend((0..2).map(|_| u.begin(&b, &b.servers[1], now)));
        assert_eq!(port(u.pick(&b, &[], now)), 1);
        drop((light, heavy));
    }

    #[test]
    fn p2c_stops_choosing_a_server_whose_connections_fail_before_it_is_ejected() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)]);
        let u = ups(Balancer::P2cEwma);
        let now = Instant::now();
        for s in &b.servers {
            let f = u.begin(&b, s, now);
            u.observe(&f, Duration::from_millis(1), now);
        }
        // One refused connection (it failed in 50 µs) on server 3: charged the connect
        // deadline, so every comparison that includes it now prefers the other one.
        let penalise = |s: usize, elapsed: u64, refused: bool| {
            let f = u.begin(&b, &b.servers[s], now);
            u.penalise(
                &f,
                Duration::from_micros(elapsed),
                Duration::from_millis(500),
                refused,
                now,
            );
        };
        penalise(2, 50, true);
        let picks = (0..300).filter(|_| port(u.pick(&b, &[], now)) == 3).count();
        assert_eq!(
            picks, 0,
            "a server that just failed is not chosen over a healthy one"
        );
        // Server 2 times out. Ten seconds on, the refusing server (down or restarting: its
        // host answered) is compared on its merits again; the silent one is still avoided.
        penalise(1, 500_000, false);
        let later = now + Duration::from_secs(10);
        let picks: Vec<u16> = (0..300).map(|_| port(u.pick(&b, &[], later))).collect();
        assert!(picks.contains(&3), "the refusing server is chosen again");
        assert!(!picks.contains(&2), "the silent server is still avoided");
    }

    #[test]
    fn p2c_asks_a_server_that_answered_slowly_once_again_within_about_a_second() {
        // Three servers at low traffic (nothing in flight): the dearest loses every draw.
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)]);
        let u = ups(Balancer::P2cEwma);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let answer = |s: usize, ms: u64, t: Instant| {
            let f = u.begin(&b, &b.servers[s], t);
            u.observe(&f, Duration::from_millis(ms), t);
        };
        // Servers 1 and 2 answer in 1 ms and are kept fresh; `picks_of_3` draws 300 times.
        let picks_of_3 = |t: Instant| {
            answer(0, 1, t);
            answer(1, 1, t);
            (0..300).filter(|_| port(u.pick(&b, &[], t)) == 3).count()
        };
        // Server 3's first answer was slow (a new instance, still cold).
        answer(2, 5, at(0));
        assert_eq!(
            picks_of_3(at(500)),
            0,
            "avoided right after its slow answer"
        );
        // A second without news: it is asked again, where decay alone (10 s) would have kept
        // it out for about 16 s.
        let asked = picks_of_3(at(1_200));
        assert!((50..150).contains(&asked), "{asked} of 300");
        // Fast again: back in rotation at once, a third of the picks.
        answer(2, 1, at(1_200));
        let share = picks_of_3(at(1_200));
        assert!((70..130).contains(&share), "{share} of 300");
        // Slow again: avoided for a second, then asked; that probe finds it still slow (more
        // than twice its peer's 1 ms), so the next wait is two seconds.
        answer(2, 5, at(1_300));
        assert_eq!(picks_of_3(at(2_200)), 0);
        assert!(picks_of_3(at(2_400)) > 0);
        answer(2, 5, at(2_400));
        assert_eq!(
            picks_of_3(at(4_000)),
            0,
            "the probe that found it slow doubled the wait"
        );
        assert!(picks_of_3(at(4_500)) > 0);
        // A probe that finds it fast puts it back in rotation and the wait back to a second.
        answer(2, 1, at(4_500));
        assert!(picks_of_3(at(4_500)) > 70);
        answer(2, 5, at(4_600));
        assert!(picks_of_3(at(5_700)) > 0);
    }

    #[test]
    fn p2c_avoids_a_slow_server_and_one_with_requests_in_flight() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
        let u = ups(Balancer::P2cEwma);
        let now = Instant::now();
        for (s, rtt) in [(0, 1), (1, 40)] {
            let f = u.begin(&b, &b.servers[s], now);
            u.observe(&f, Duration::from_millis(rtt), now);
        }
        let slow = (0..100).filter(|_| port(u.pick(&b, &[], now)) == 2).count();
        assert_eq!(slow, 0, "with two servers both are compared every time");
        // Fifty requests in flight on the fast one make it dearer than the slow one.
        let _held: Vec<InFlight<'_>> = (0..50).map(|_| u.begin(&b, &b.servers[0], now)).collect();
        assert_eq!(port(u.pick(&b, &[], now)), 2);
    }

    #[test]
    fn an_ejected_server_is_skipped_then_probed_and_panic_mode_uses_it_when_alone() {
        for balancer in [Balancer::RoundRobin, Balancer::P2cEwma] {
            let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
            let u = ups(balancer);
            let now = Instant::now();
            u.failure(&b, &b.servers[0], now);
            u.failure(&b, &b.servers[0], now);
            assert!(b.servers[0].health.is_ejected(), "{balancer:?}");
            for _ in 0..20 {
                assert_eq!(port(u.pick(&b, &[], now)), 2, "{balancer:?}");
            }
            // Only the ejected one is left untried: panic mode, no probe claimed.
            let p = u.pick(&b, &[1], now).unwrap();
            assert_eq!((p.server.addr.port(), p.probe), (1, false), "{balancer:?}");
            // After the penalty one request probes it, and a success readmits it.
            let later = now + Duration::from_secs(12);
            let probe = (0..20)
                .map(|_| u.pick(&b, &[], later).unwrap())
                .find(|p| p.probe)
                .unwrap_or_else(|| panic!("a probe ({balancer:?})"));
            assert_eq!(probe.server.addr.port(), 1);
            assert!(
                (0..20).all(|_| port(u.pick(&b, &[], later)) == 2),
                "one probe at a time ({balancer:?})"
            );
            u.success(&probe, later);
            assert!(!b.servers[0].health.is_ejected());
        }
    }

    #[test]
    fn at_most_the_allowed_share_of_servers_is_ejected() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
        let u = ups(Balancer::RoundRobin);
        let now = Instant::now();
        for s in &b.servers {
            for _ in 0..5 {
                u.failure(&b, s, now);
            }
        }
        let out = b.servers.iter().filter(|s| s.health.is_ejected()).count();
        assert_eq!(out, 1, "50% of two servers");
    }

    #[test]
    fn in_flight_counts_end_with_their_guard() {
        let b = backend(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
        let u = ups(Balancer::P2cEwma);
        let now = Instant::now();
        {
            let _a = u.begin(&b, &b.servers[0], now);
            let _b = u.begin(&b, &b.servers[0], now);
            assert_eq!(u.load.borrow()[&b.servers[0].addr].ewma.inflight, 2);
        }
        assert_eq!(u.load.borrow()[&b.servers[0].addr].ewma.inflight, 0);
        // A single server is counted but not timed (nothing to balance).
        let one = backend(&[("127.0.0.1:9", 1)]);
        let f = u.begin(&one, &one.servers[0], now);
        assert!(!Upstreams::timed(&f));
        assert_eq!(u.load.borrow()[&one.servers[0].addr].ewma.inflight, 1);
    }

    #[test]
    fn no_servers_means_no_pick() {
        assert!(ups(Balancer::P2cEwma)
            .pick(&backend(&[]), &[], Instant::now())
            .is_none());
    }
}
