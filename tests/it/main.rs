//! Integration tests: the real `ringway` binary against real TCP origins on loopback.

mod cli;
mod harness;
mod hostile;
mod hostile_upstream;
mod origin;
mod smoke;
