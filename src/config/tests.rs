//! Profile parsing: defaults, strictness, and every profile shipped in the repo.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Profile, ConfigError> {
    Profile::parse(text, Path::new("p.toml"))
}

/// Each profile is refused with an error naming the file and the key.
fn assert_refused_naming_the_key(cases: &[(&str, &str)], profile: impl Fn(&str) -> String) {
    for (extra, key) in cases {
        let err = parse(&profile(extra)).unwrap_err().to_string();
        assert!(
            err.contains("p.toml") && err.contains(key),
            "{extra}: {err}"
        );
    }
}

const MINIMAL: &str = "[[listener]]\nname = \"mesh\"\naddr = \"127.0.0.1:9003\"\n\n[routes]\nsource = \"file\"\nfile = \"r.json\"\n";

#[test]
fn every_profile_in_the_repo_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/profiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/profiles exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "expected the reference, dev, mesh-node, bench and edge profiles"
    );
}

#[test]
fn minimal_profile_takes_documented_defaults() {
    let p = parse(MINIMAL).unwrap();
    assert_eq!(p.node.workers, Workers::Auto);
    assert!(p.node.pin_workers);
    assert_eq!(p.node.ring_registered_files, 4096);
    assert_eq!(p.listeners[0].role, ListenerRole::Mesh);
    assert!(p.listeners[0].defer_accept);
    assert_eq!(p.limits.max_headers, 100);
    assert_eq!(p.limits.splice_min_bytes, 64 * 1024);
    assert_eq!(p.timeouts.connect_ms, 3000);
    assert_eq!(p.etcd.prefix, "/vulcand");
    assert!(p.admin.is_none());
    assert_eq!(p.throttle.reject_status, 429);
    assert_eq!(p.throttle.idle_key_secs, 60);
    assert_eq!(p.throttle.max_keys, 100_000);
    assert_eq!(p.log.access_log, AccessLogTarget::Off);
}

#[test]
fn access_log_is_off_stdout_or_a_path_relative_to_the_profile() {
    let dir = std::env::temp_dir().join(format!("ringway-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (value, want) in [
        ("off", AccessLogTarget::Off),
        ("stdout", AccessLogTarget::Stdout),
        (
            "logs/a.jsonl",
            AccessLogTarget::File(dir.join("logs/a.jsonl")),
        ),
        (
            "/var/log/a.jsonl",
            AccessLogTarget::File("/var/log/a.jsonl".into()),
        ),
    ] {
        let path = dir.join("p.toml");
        std::fs::write(
            &path,
            format!("{MINIMAL}\n[log]\naccess_log = \"{value}\"\n"),
        )
        .unwrap();
        assert_eq!(Profile::load(&path).unwrap().log.access_log, want);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let err = parse(&format!("{MINIMAL}\n[log]\naccess_log = \"\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("access_log"), "{err}");
}

#[test]
fn admin_needs_an_address() {
    let p = parse(&format!("{MINIMAL}\n[admin]\naddr = \"127.0.0.1:9090\"\n")).unwrap();
    assert_eq!(p.admin.unwrap().addr.port(), 9090);
    let err = parse(&format!("{MINIMAL}\n[admin]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("addr"), "{err}");
    let err = parse(&format!(
        "{MINIMAL}\n[admin]\naddr = \"127.0.0.1:9090\"\nport = 1\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("port"), "{err}");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let text = MINIMAL.replace("[routes]", "[routes]\nsorce = \"x\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.starts_with("p.toml:") && err.contains("sorce"), "{err}");
}

#[test]
fn bad_values_name_file_key_and_reason() {
    let cases = [
        ("[node]\nworkers = 0\n", "workers"),
        ("[node]\nworkers = \"many\"\n", "workers"),
        (
            "[node]\nring_registered_files = 2000000\n",
            "node.ring_registered_files",
        ),
        ("[limits]\nmax_headers = 0\n", "limits.max_headers"),
        ("[timeouts]\nheader_ms = 0\n", "timeouts.header_ms"),
        ("[log]\nlevel = \"loud\"\n", "log.level"),
        ("[etcd]\nprefix = \"vulcand\"\n", "etcd.prefix"),
        (
            "[routes.host_aliases]\nlocalhost = \"a b\"\n",
            "routes.host_aliases.localhost",
        ),
        (
            "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n",
            "etcd.endpoints[0]",
        ),
        ("[etcd]\nusername = \"u\"\n", "etcd.password"),
        (
            "[etcd]\nendpoints = [\"https://e\"]\ncert_file = \"c.pem\"\n",
            "etcd.key_file",
        ),
        ("[etcd]\nca_file = \"ca.pem\"\n", "etcd.endpoints"),
        (
            "[etcd]\nendpoints = [\"https://a:2379\", \"http://b:2379\"]\n",
            "etcd.endpoints",
        ),
        ("[etcd]\ndial_timeout_ms = 0\n", "etcd.dial_timeout_ms"),
        (
            "[throttle]\nreject_status = 500\n",
            "throttle.reject_status",
        ),
        ("[throttle]\nidle_key_secs = 0\n", "throttle.idle_key_secs"),
        ("[throttle]\nmax_keys = 0\n", "throttle.max_keys"),
        ("[upstream]\nmax_retries = 11\n", "upstream.max_retries"),
        (
            "[upstream]\nretry_budget_ratio = -1.0\n",
            "upstream.retry_budget_ratio",
        ),
        (
            "[upstream]\nretry_body_bytes = 1000000000\n",
            "upstream.retry_body_bytes",
        ),
        (
            "[upstream]\nmax_fails = 3\nconsecutive_failures = 5\n",
            "upstream.max_fails",
        ),
        (
            "[upstream]\nfail_timeout_ms = 3\nejection_base_ms = 5\n",
            "upstream.fail_timeout_ms",
        ),
        ("[upstream]\nmax_fails = 0\n", "upstream.max_fails"),
        (
            "[upstream]\nmax_ejection_percent = 0\n",
            "upstream.max_ejection_percent",
        ),
        ("[upstream]\nbalancer = \"random\"\n", "balancer"),
    ];
    assert_refused_naming_the_key(&cases, |extra| format!("{extra}\n{MINIMAL}"));
}

#[test]
fn ejection_settings_read_nginxs_spelling_too() {
    let p = parse(MINIMAL).unwrap();
    let e = p.upstream.ejection();
    assert_eq!(
        (e.consecutive_failures, e.base_ms, e.max_ms, e.max_percent),
        (5, 10_000, 300_000, 50)
    );
    assert_eq!(p.upstream.balancer, crate::config::Balancer::P2cEwma);
    let p = parse(&format!(
        "[upstream]\nmax_fails = 2\nfail_timeout_ms = 400000\nbalancer = \"round_robin\"\n{MINIMAL}"
    ))
    .unwrap();
    let e = p.upstream.ejection();
    assert_eq!(
        (e.consecutive_failures, e.base_ms, e.max_ms),
        (2, 400_000, 400_000)
    );
    assert_eq!(p.upstream.balancer, crate::config::Balancer::RoundRobin);
}

#[test]
fn file_source_needs_a_file_and_listeners_need_distinct_addresses() {
    let err =
        parse("[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[routes]\nsource = \"file\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("routes.file"), "{err}");
    let two = "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[[listener]]\nname = \"b\"\naddr = \"127.0.0.1:1\"\n[routes]\nsource = \"file\"\nfile = \"r\"\n";
    let err = parse(two).unwrap_err().to_string();
    assert!(err.contains("listener[1].addr"), "{err}");
}

const EDGE: &str = "[[listener]]\nname = \"public\"\naddr = \"0.0.0.0:8080\"\nrole = \"edge\"\n";

#[test]
fn edge_listeners_need_rules_and_mesh_listeners_refuse_them() {
    let rule = "[[listener.expose]]\nprefix = \"/users/\"\n";
    let p = parse(&format!("{MINIMAL}{EDGE}{rule}")).unwrap();
    assert_eq!(p.listeners[1].expose.len(), 1);
    let err = parse(&format!("{MINIMAL}{EDGE}")).unwrap_err().to_string();
    assert!(err.contains("listener[1].expose"), "{err}");
    let err = parse(&format!("{MINIMAL}{rule}")).unwrap_err().to_string();
    assert!(
        err.contains("listener[0].expose") && err.contains("edge"),
        "{err}"
    );
    let mesh = MINIMAL.replace(
        "addr = \"127.0.0.1:9003\"\n",
        "addr = \"127.0.0.1:9003\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    );
    let err = parse(&mesh).unwrap_err().to_string();
    assert!(err.contains("listener[0].trusted_proxies"), "{err}");
}

#[test]
fn bad_edge_values_name_the_rule_and_key() {
    let cases = [
        ("[[listener.expose]]\nregex = \"(\"\n", "listener[1].expose[0].regex"),
        (
            "[[listener.expose]]\nprefix = \"/a\"\n[[listener.expose]]\nregex = \"^/b\"\nrewrite = \"/c\"\n",
            "listener[1].expose[1].rewrite",
        ),
        (
            "[[listener.expose]]\nprefix = \"/a\"\nrate = \"10 per second\"\n",
            "listener[1].expose[0].rate",
        ),
        (
            "trusted_proxies = [\"10.0.0.1/8\"]\n[[listener.expose]]\nprefix = \"/a\"\n",
            "listener[1].trusted_proxies[0]",
        ),
        (
            "[listener.limits]\nmax_head_bytes = 10\n[[listener.expose]]\nprefix = \"/a\"\n",
            "listener[1].limits.max_head_bytes",
        ),
        (
            "[[listener.expose]]\nprefix = \"/a\"\nupgrade = [\"websocket\", \"h2c\"]\n",
            "listener[1].expose[0].upgrade",
        ),
    ];
    assert_refused_naming_the_key(&cases, |extra| format!("{MINIMAL}{EDGE}{extra}"));
}

#[test]
fn edge_listeners_default_to_stricter_head_limits() {
    let rule = "[[listener.expose]]\nprefix = \"/\"\n";
    let p = parse(&format!("{MINIMAL}{EDGE}{rule}")).unwrap();
    let (mesh, edge) = (&p.listeners[0], &p.listeners[1]);
    assert_eq!(mesh.head_limits(&p.limits).max_head_bytes, 32 * 1024);
    let l = edge.head_limits(&p.limits);
    assert_eq!(
        (l.max_head_bytes, l.max_target_bytes, l.max_headers),
        (16 * 1024, 8 * 1024, 64)
    );
    assert_eq!(edge.header_timeout(&p.timeouts), Duration::from_secs(5));
    let own = "[listener.limits]\nmax_headers = 20\nheader_ms = 1500\n";
    let p = parse(&format!(
        "[limits]\nmax_head_bytes = 8192\n{MINIMAL}{EDGE}{own}{rule}"
    ))
    .unwrap();
    let l = p.listeners[1].head_limits(&p.limits);
    assert_eq!((l.max_head_bytes, l.max_headers), (8192, 20));
    assert_eq!(
        p.listeners[1].header_timeout(&p.timeouts),
        Duration::from_millis(1500)
    );
}
