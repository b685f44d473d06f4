//! Integration tests: the real `ringway` binary against real TCP origins on loopback, and
//! against a real etcd.

mod cli;
mod etcd;
mod etcd_server;
// Shared helpers: each suite uses a different part of them.
#[allow(dead_code)]
mod harness;
#[allow(dead_code)]
mod origin;
mod smoke;
