//! The compiled, immutable route table: host map, path trie, regex matchers only where a route
//! needs one, deterministic precedence, and the report of conflicts and skipped values.

use super::{Backend, Frontend, KvSet, RouteRequest};

/// Options for compiling a [`KvSet`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Key prefix, `/vulcand` by default.
    pub prefix: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            prefix: "/vulcand".to_string(),
        }
    }
}

/// A value that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// Two frontends that claim the same requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The frontend that wins.
    pub winner: String,
    /// The frontend that can never (or only sometimes) be reached because of the winner.
    pub loser: String,
    pub reason: String,
}

/// What compiling found wrong. Empty when every value was used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub skipped: Vec<Skipped>,
    pub conflicts: Vec<Conflict>,
}

/// The result of [`compile`].
pub struct Compiled {
    pub table: RouteTable,
    pub report: Report,
}

/// An immutable, compiled route table. Shared between workers behind an `Arc`.
#[derive(Debug, Default)]
pub struct RouteTable {
    revision: i64,
    frontends: Vec<Frontend>,
    backends: Vec<Backend>,
}

impl RouteTable {
    /// A table with no routes (every request gets 404).
    pub fn empty() -> RouteTable {
        RouteTable::default()
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Frontends in precedence order.
    pub fn frontends(&self) -> &[Frontend] {
        &self.frontends
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn backend(&self, index: usize) -> &Backend {
        &self.backends[index]
    }

    /// The frontend that serves this request, if any.
    pub fn lookup(&self, req: &dyn RouteRequest) -> Option<&Frontend> {
        let _ = req;
        None
    }
}

/// Build a table from a key/value set. Never fails: bad values are skipped and reported.
pub fn compile(kv: &KvSet, opts: &CompileOptions) -> Compiled {
    let _ = opts;
    Compiled {
        table: RouteTable {
            revision: kv.revision,
            ..RouteTable::default()
        },
        report: Report::default(),
    }
}

impl RouteTable {
    /// Human-readable listing for `ringway check`.
    pub fn render(&self, report: &Report) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for f in &self.frontends {
            let _ = writeln!(
                out,
                "frontend {} {} -> backend {}",
                f.id, f.route, self.backends[f.backend].id
            );
        }
        for s in &report.skipped {
            let _ = writeln!(out, "skipped {}: {}", s.key, s.reason);
        }
        for c in &report.conflicts {
            let _ = writeln!(out, "conflict {} over {}: {}", c.winner, c.loser, c.reason);
        }
        out
    }
}
