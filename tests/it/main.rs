//! Integration tests: the real `ringway` binary against real TCP origins on loopback, and
//! against a real etcd.

mod admin;
mod cli;
mod deploy;
mod edge;
mod etcd;
mod etcd_server;
mod exchange;
mod failover;
mod handover;
// Shared helpers: each suite uses a different part of them.
#[allow(dead_code)]
mod harness;
mod hostile;
mod hostile_upstream;
mod lifecycle;
mod limits;
mod memory;
mod multishot;
#[allow(dead_code)]
mod origin;
mod proxy;
mod resilience;
mod rewrite;
mod smoke;
mod splice;
mod status_page;
mod throttle;
mod tls;
mod upgrade;
mod upstream;
