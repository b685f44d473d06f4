//! A node and `ringway register` against a 3-member etcd cluster that loses a member: the one
//! first in every endpoint list, then the leader. Routes registered during each loss must reach
//! the node promptly, through the members that are still up.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::etcd_server::EtcdCluster;
use crate::harness::{ringway_bin, Ringway, TempDir};
use crate::origin::Origin;

/// With a quorum up, a registration reaches the node within this: a reconnect to a live member
/// plus a watch event, with room for a busy machine (the lease TTL is far longer).
const DURING_LOSS: Duration = Duration::from_secs(5);

/// `ringway register` sidecars, stopped when the test ends however it ends.
struct Sidecars(Vec<Child>);

impl Drop for Sidecars {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn register(dir: &TempDir, endpoints: &[String], svc: &str, origin: &Origin) -> Child {
    let log = std::fs::File::create(dir.0.join(format!("register-{svc}.log"))).unwrap();
    let mut cmd = Command::new(ringway_bin());
    cmd.arg("register");
    for e in endpoints {
        cmd.args(["--etcd", e]);
    }
    cmd.args(["--backend", svc, "--server-id", "i1", "--url"])
        .arg(format!("http://{}", origin.addr))
        .arg("--frontend")
        .arg(format!("{svc}=PathPrefix(`/{svc}/`)"))
        .args(["--ttl", "30s", "--dial-timeout", "1s"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ringway register")
}

#[test]
fn routes_registered_while_the_first_member_or_the_leader_is_down_reach_the_node() {
    let origin = Origin::ok();
    let mut cluster = EtcdCluster::start();
    let endpoints = cluster.endpoints();
    let rw = Ringway::start_etcd_cluster(TempDir::new("node"), &endpoints, false, "");
    let dir = TempDir::new("register");
    let mut sidecars = Sidecars(Vec::new());
    for (round, lost) in ["the first endpoint's member", "the leader"]
        .iter()
        .enumerate()
    {
        let victim = if round == 0 {
            0
        } else {
            cluster.await_leader()
        };
        cluster.members[victim].kill();
        // Several services, so each one's first contact with the cluster is a fresh chance to
        // land on the member that is gone.
        for i in 0..3 {
            let svc = format!("svc{round}{i}");
            sidecars.0.push(register(&dir, &endpoints, &svc, &origin));
            let path = format!("/{svc}/x");
            let what = format!("{svc}, registered with {lost} down");
            if let Some(t) = super::eventually(DURING_LOSS, || super::status(&rw, &path) == 200) {
                println!("{what}: served after {t:?}");
            } else {
                let exited = sidecars.0.last_mut().unwrap().try_wait().ok().flatten();
                panic!(
                    "{what}: {path} not served within {DURING_LOSS:?} (register exited: \
                     {exited:?}):\nregister log:\n{}\nnode log:\n{}",
                    std::fs::read_to_string(dir.0.join(format!("register-{svc}.log")))
                        .unwrap_or_default(),
                    rw.log()
                );
            }
        }
        cluster.members[victim].restart();
    }
}
