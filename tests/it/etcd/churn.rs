//! 10,000 route updates in a burst: memory stays flat and other routes keep answering.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{await_status, status, PROPAGATION};
use crate::etcd_server::{frontend_doc, EtcdServer};
use crate::harness::{get, Ringway, TempDir};
use crate::origin::Origin;

#[test]
fn ten_thousand_route_updates_keep_rss_flat_and_other_routes_up() {
    let origin = Origin::ok();
    let etcd = EtcdServer::start();
    let kv = etcd.kv();
    kv.backend("b1");
    kv.server("b1", "s1", origin.addr);
    kv.frontend("stable", "b1", "PathPrefix(`/stable`)");
    let rw = Ringway::start_etcd(TempDir::new("node"), &etcd.endpoint(), true, "");
    assert_eq!(status(&rw, "/stable"), 200, "{}", rw.log());

    let burst = |from: usize, n: usize| {
        let puts = (from..from + n)
            .map(|i| {
                let route = format!("PathPrefix(`/churn/{i}`)");
                (
                    "frontends/churn/frontend".to_string(),
                    frontend_doc("b1", &route),
                )
            })
            .collect();
        kv.put_many(puts, 64);
        kv.frontend("churn", "b1", &format!("PathPrefix(`/churn/end{from}`)"));
        await_status(
            &rw,
            &format!("/churn/end{from}"),
            200,
            PROPAGATION,
            "burst end",
        );
    };
    // Warm up allocator pools and the snapshot writer before measuring.
    burst(0, 1000);
    std::thread::sleep(Duration::from_millis(1500));
    let before = rw.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, failures, probes, addr) =
            (stop.clone(), failures.clone(), probes.clone(), rw.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if get(addr, "/stable/x").status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                probes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    burst(1000, 10_000);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let after = rw.rss_kib();
    println!(
        "10,000 updates applied in {took:?}; RSS {before} KiB -> {after} KiB; \
         {} probes of an unrelated route, {} failed",
        probes.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(probes.load(Ordering::Relaxed) > 20);
    assert!(
        after <= before + 5 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
