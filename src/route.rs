//! Routes: vulcand's key/value model, route expressions, and the compiled immutable
//! [`RouteTable`] the data plane looks requests up in. Pure code, no I/O.

mod documents;
pub mod duration;
pub mod expr;
pub mod failover;
pub mod model;
pub mod predicate;
mod render;
pub mod rewrite;
pub mod table;
pub mod template;
mod trie;

pub use documents::upstream_url;
pub use expr::{Expr, ExprError, Matcher};
pub use failover::Failover;
pub use model::{Backend, BackendSettings, Frontend, FrontendSettings, MiddlewareSpec, Server};
pub use table::{compile, CompileOptions, Compiled, Conflict, Report, RouteTable, Skipped};

use std::collections::BTreeMap;

/// The raw route data of one source at one revision: full etcd keys mapped to their JSON text
/// (exactly what etcd holds; the file source serialises object values back to text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvSet {
    pub revision: i64,
    pub entries: BTreeMap<String, String>,
}

/// What a route lookup needs to know about a request. Implemented by the data plane over its
/// parsed head, and by tests over plain strings.
pub trait RouteRequest {
    fn method(&self) -> &[u8];
    /// Host without port, as received (matching is ASCII case-insensitive).
    fn host(&self) -> &[u8];
    /// Path without the query.
    fn path(&self) -> &[u8];
    /// First value of the named field (name compared ASCII case-insensitively).
    fn header(&self, name: &[u8]) -> Option<&[u8]>;
}
