//! Tests of the worker-side throttle: keys, limits in order, two workers on shared budgets,
//! and memory staying bounded under many distinct keys.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use super::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

struct Req {
    host: &'static str,
    tenant: Option<String>,
}

impl RouteRequest for Req {
    fn method(&self) -> &[u8] {
        b"GET"
    }
    fn host(&self) -> &[u8] {
        self.host.as_bytes()
    }
    fn path(&self) -> &[u8] {
        b"/"
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        (name.eq_ignore_ascii_case(b"x-tenant")).then_some(self.tenant.as_deref()?.as_bytes())
    }
}

fn req(tenant: Option<&str>) -> Req {
    Req {
        host: "api.example.com",
        tenant: tenant.map(str::to_string),
    }
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn limit(kind: &str, config: serde_json::Value) -> Limit {
    parse("users", "m1", kind, &config).unwrap().unwrap()
}

fn settings(workers: usize, max_keys: usize) -> ThrottleSettings {
    ThrottleSettings {
        reject_status: 429,
        idle_key_ns: 60 * SEC,
        max_keys,
        workers,
    }
}

fn throttles(workers: usize, max_keys: usize) -> Vec<Throttle> {
    let s = settings(workers, max_keys);
    let shared = Throttle::shared_budgets(&s);
    (0..workers)
        .map(|_| Throttle::new(shared.clone(), &s))
        .collect()
}

fn admitted(t: &mut Throttle, l: &Limit, r: &Req, now: u64) -> bool {
    t.admit_at(std::iter::once(l), r, PEER, now).is_ok()
}

#[test]
fn burst_then_refusals_naming_the_limit_with_retry_times() {
    let l = limit(
        "ratelimit",
        json!({"Requests":10,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"}),
    );
    let mut t = throttles(1, 100).remove(0);
    for _ in 0..3 {
        assert!(admitted(&mut t, &l, &req(None), 0));
    }
    let r = t
        .admit_at(std::iter::once(&l), &req(None), PEER, 25 * MS)
        .unwrap_err();
    assert_eq!(r.status, 429);
    assert_eq!(r.retry_in_ns, Some(75 * MS));
    assert_eq!(r.header_lines(), "Retry-After: 1\r\nX-Retry-In: 75ms\r\n");
    assert_eq!(
        r.to_string(),
        "rate limit of frontend users exceeded (10 per 1s, burst 3)"
    );
    // Refused locally until then; admitted once the token is there.
    assert!(!admitted(&mut t, &l, &req(None), 99 * MS));
    assert!(admitted(&mut t, &l, &req(None), 100 * MS));
}

#[test]
fn header_keys_are_isolated_and_a_missing_header_shares_one_key() {
    let l = limit(
        "ratelimit",
        json!({"Requests":1,"PeriodSeconds":60,"Burst":2,"Variable":"request.header.X-Tenant"}),
    );
    let mut t = throttles(1, 100).remove(0);
    for tenant in [Some("a"), Some("a"), Some("b"), Some("b"), None, None] {
        assert!(admitted(&mut t, &l, &req(tenant), 0), "{tenant:?}");
    }
    for tenant in [Some("a"), Some("b"), None] {
        assert!(!admitted(&mut t, &l, &req(tenant), 0), "{tenant:?}");
    }
    // An empty value is a value, not a missing header.
    assert!(admitted(&mut t, &l, &req(Some("")), 0));
}

#[test]
fn request_host_ignores_case() {
    let l = limit(
        "ratelimit",
        json!({"Requests":1,"PeriodSeconds":60,"Burst":1,"Variable":"request.host"}),
    );
    let mut t = throttles(1, 100).remove(0);
    let upper = Req {
        host: "API.Example.COM",
        tenant: None,
    };
    assert!(admitted(&mut t, &l, &req(None), 0));
    assert!(!admitted(&mut t, &l, &upper, 0));
}

#[test]
fn connlimit_counts_admissions_until_they_are_dropped() {
    let l = limit("connlimit", json!({"Connections":2,"Variable":"client.ip"}));
    let mut ts = throttles(2, 100);
    let a = ts[0]
        .admit_at(std::iter::once(&l), &req(None), PEER, 0)
        .unwrap();
    let b = ts[1]
        .admit_at(std::iter::once(&l), &req(None), PEER, 0)
        .unwrap();
    let r = ts[0]
        .admit_at(std::iter::once(&l), &req(None), PEER, 0)
        .unwrap_err();
    assert_eq!(r.header_lines(), "Retry-After: 1\r\n");
    drop(a);
    let c = ts[1].admit_at(std::iter::once(&l), &req(None), PEER, 0);
    assert!(c.is_ok());
    drop((b, c));
}

#[test]
fn a_refusal_by_a_later_limit_releases_the_earlier_connection_slot() {
    let conn = limit("connlimit", json!({"Connections":1,"Variable":"client.ip"}));
    let rate = parse(
        "users",
        "m2",
        "ratelimit",
        &json!({"Requests":1,"PeriodSeconds":60,"Burst":1,"Variable":"client.ip"}),
    )
    .unwrap()
    .unwrap();
    let mut t = throttles(1, 100).remove(0);
    let both = [conn.clone(), rate];
    drop(t.admit_at(both.iter(), &req(None), PEER, 0).unwrap());
    assert!(t.admit_at(both.iter(), &req(None), PEER, 0).is_err());
    // The connection slot taken before the rate refused was given back.
    assert!(t
        .admit_at(std::iter::once(&conn), &req(None), PEER, 0)
        .is_ok());
}

#[test]
fn two_workers_share_one_rate_node_wide() {
    let l = limit(
        "ratelimit",
        json!({"Requests":200,"PeriodSeconds":1,"Burst":20,"Variable":"client.ip"}),
    );
    let mut ts = throttles(2, 100);
    let mut count = [0u64; 2];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut now = 0;
    while now < 3 * SEC {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let w = (rng % 2) as usize;
        if admitted(&mut ts[w], &l, &req(None), now) {
            count[w] += 1;
        }
        now += 20_000 + rng % 30_000;
    }
    let total = count[0] + count[1];
    assert!(total <= 3 * 200 + 20, "{count:?}");
    assert!(total >= (3 * 200 + 20) * 97 / 100, "{count:?}");
    assert!(count[0] > 200 && count[1] > 200, "{count:?}");
}

#[test]
fn unchanged_settings_keep_state_and_changed_settings_start_fresh() {
    let doc = json!({"Requests":1,"PeriodSeconds":60,"Burst":2,"Variable":"client.ip"});
    let before = limit("ratelimit", doc.clone());
    let mut t = throttles(1, 100).remove(0);
    assert!(admitted(&mut t, &before, &req(None), 0));
    assert!(admitted(&mut t, &before, &req(None), 0));
    // The same middleware compiled again (a route refresh) is the same bucket.
    let again = limit("ratelimit", doc);
    assert!(!admitted(&mut t, &again, &req(None), SEC));
    let changed = limit(
        "ratelimit",
        json!({"Requests":1,"PeriodSeconds":60,"Burst":3,"Variable":"client.ip"}),
    );
    assert!(admitted(&mut t, &changed, &req(None), SEC));
}

#[test]
fn two_hundred_thousand_keys_expire_and_the_tables_shrink_back() {
    const KEYS: usize = 200_000;
    let l = limit(
        "ratelimit",
        json!({"Requests":10,"PeriodSeconds":1,"Burst":5,"Variable":"request.header.X-Tenant"}),
    );
    let mut t = throttles(1, 250_000).remove(0);
    let mut r = req(Some(""));
    for i in 0..KEYS {
        r.tenant = Some(format!("tenant-{i}"));
        assert!(admitted(&mut t, &l, &r, (i as u64) * 1000));
    }
    assert_eq!(t.local().len(), KEYS);
    assert_eq!(t.shared().len(), KEYS);
    let full_room = t.local().capacity();
    // One ticker's worth of sweeping at a time, until idle_key_secs passed for every key.
    let mut now = 61 * SEC;
    for _ in 0..100 {
        t.sweep_at(now);
        now += 50 * MS;
    }
    assert!(t.local().is_empty(), "{}", t.local().len());
    assert!(t.shared().is_empty(), "{}", t.shared().len());
    assert!(
        t.local().capacity() < full_room / 100,
        "{}",
        t.local().capacity()
    );
    assert!(
        t.shared().capacity() < KEYS / 100,
        "{}",
        t.shared().capacity()
    );
}

#[test]
fn a_flood_of_keys_beyond_max_keys_stays_bounded_and_keeps_hot_keys_limited() {
    let l = limit(
        "ratelimit",
        json!({"Requests":1,"PeriodSeconds":3600,"Burst":1,"Variable":"request.header.X-Tenant"}),
    );
    let mut t = throttles(1, 1000).remove(0);
    assert!(admitted(&mut t, &l, &req(Some("hot")), 0));
    let mut r = req(Some(""));
    for i in 0..50_000 {
        r.tenant = Some(format!("flood-{i}"));
        admitted(&mut t, &l, &r, 1);
        // The hot key keeps being used, so it keeps its local entry and its pool.
        if i % 100 == 0 {
            assert!(!admitted(&mut t, &l, &req(Some("hot")), 1), "{i}");
        }
    }
    assert!(t.local().len() <= 1000);
    assert!(t.shared().len() <= 2 * 1000 + 16, "{}", t.shared().len());
}

#[test]
fn the_request_path_for_a_known_key_does_not_allocate_a_key() {
    let l = limit(
        "ratelimit",
        json!({"Requests":1000000,"PeriodSeconds":1,"Burst":1000,"Variable":"request.header.X-Tenant"}),
    );
    let mut t = throttles(1, 100).remove(0);
    assert!(admitted(&mut t, &l, &req(Some("a")), 0));
    let room = t.scratch.capacity();
    let ptr = t.scratch.as_ptr();
    for i in 0..100 {
        assert!(admitted(&mut t, &l, &req(Some("a")), i));
    }
    assert_eq!((t.scratch.capacity(), t.scratch.as_ptr()), (room, ptr));
    assert_eq!(t.local().len(), 1);
}
