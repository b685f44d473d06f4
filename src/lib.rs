//! ringway: a thread-per-core HTTP/1.1 service-mesh node.
//!
//! Pure parts (no I/O): [`http`] (codec), [`route`] (model, expressions, table), [`config`]
//! (profiles). The data plane ([`dataplane`], monoio) and the control plane ([`control`],
//! route sources) never import each other's runtime; they meet at [`route::RouteTable`]
//! snapshots published through [`control::TableHandle`]. The [`admin`] endpoint reads both on
//! a thread of its own.

pub mod admin;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod demo;
pub mod edge;
pub mod fast_hash;
pub mod handover;
pub mod http;
pub mod node;
pub mod register;
pub mod resilience;
pub mod route;
pub mod throttle;
pub mod tls;
