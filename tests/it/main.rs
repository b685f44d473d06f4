//! Integration tests: the real `ringway` binary against real TCP origins on loopback.

mod cli;
mod harness;
mod lifecycle;
mod limits;
mod memory;
mod origin;
mod proxy;
mod smoke;
mod upstream;
