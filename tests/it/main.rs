//! Integration tests: the real `ringway` binary against real TCP origins on loopback.

mod cli;
// Shared helpers; some are only used by suites that live on other branches.
#[allow(dead_code)]
mod harness;
mod hostile;
mod hostile_upstream;
#[allow(dead_code)]
mod origin;
mod smoke;
