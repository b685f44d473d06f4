//! Integration tests: the real `ringway` binary against real TCP origins on loopback.

mod cli;
mod harness;
mod hostile;
mod hostile_upstream;
mod lifecycle;
mod limits;
mod memory;
mod origin;
mod proxy;
mod smoke;
mod upstream;
