//! The node's resilience state, kept across route tables: each server's health (by backend id
//! and URL) and each circuit breaker (by frontend id, middleware id and settings). When a
//! table is published, its servers and breakers are pointed at the state the node already
//! has, so a refresh that leaves them alone resets nothing (vulcand resets it all whenever a
//! backend's servers change). State no table has used for five minutes is dropped.
//!
//! The maps are locked only when a table is published (control thread) and when the admin
//! endpoint reads them; workers reach the state through the table's pointers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::{Breaker, State};
use super::effects::Effects;
use super::ejection::{EjectionSettings, ServerHealth};
use crate::route::RouteTable;

/// How long state outlives the last table that used it.
const KEEP_UNUSED: Duration = Duration::from_secs(300);

type ServerKey = (Arc<str>, String);
type BreakerKey = (Arc<str>, Arc<str>, String);

/// A kept entry and since when no table uses it.
struct Kept<T> {
    state: Arc<T>,
    unused_since: Option<Instant>,
}

/// The node's resilience state. `Send + Sync`; one per node.
pub struct Registry {
    pub ejection: EjectionSettings,
    servers: Mutex<HashMap<ServerKey, Kept<ServerHealth>>>,
    breakers: Mutex<HashMap<BreakerKey, Kept<Breaker>>>,
    effects: Effects,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("ejection", &self.ejection)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(ejection: EjectionSettings, effects: Effects) -> Registry {
        Registry {
            ejection,
            servers: Mutex::default(),
            breakers: Mutex::default(),
            effects,
        }
    }

    /// Point `table`'s servers and breakers at the node's state (creating what is new).
    pub fn attach(&self, table: &mut RouteTable) {
        let now = Instant::now();
        let (Ok(mut servers), Ok(mut breakers)) = (self.servers.lock(), self.breakers.lock())
        else {
            return;
        };
        for kept in servers.values_mut() {
            kept.unused_since.get_or_insert(now);
        }
        for kept in breakers.values_mut() {
            kept.unused_since.get_or_insert(now);
        }
        table.attach_state(
            |backend, server| {
                let key = (Arc::from(backend), server.url.clone());
                let kept = servers.entry(key).or_insert_with(|| Kept {
                    state: server.health.clone(),
                    unused_since: None,
                });
                kept.unused_since = None;
                server.health = kept.state.clone();
            },
            |frontend, m| {
                let Some(fresh) = &m.breaker else { return };
                let key = (Arc::from(frontend), m.id.clone(), m.config.to_string());
                let kept = breakers.entry(key).or_insert_with(|| Kept {
                    state: fresh.clone(),
                    unused_since: None,
                });
                kept.unused_since = None;
                m.breaker = Some(kept.state.clone());
            },
        );
        servers.retain(|_, k| k.unused_since.is_none_or(|t| now - t < KEEP_UNUSED));
        breakers.retain(|_, k| k.unused_since.is_none_or(|t| now - t < KEEP_UNUSED));
    }

    /// Every breaker a table uses, for metrics and the admin endpoint.
    pub fn breakers(&self) -> Vec<Arc<Breaker>> {
        self.breakers.lock().map_or_else(
            |_| Vec::new(),
            |b| {
                b.values()
                    .filter(|k| k.unused_since.is_none())
                    .map(|k| k.state.clone())
                    .collect()
            },
        )
    }

    /// Every server a table uses: (backend id, URL, health).
    pub fn servers(&self) -> Vec<(Arc<str>, String, Arc<ServerHealth>)> {
        self.servers.lock().map_or_else(
            |_| Vec::new(),
            |s| {
                s.iter()
                    .filter(|(_, k)| k.unused_since.is_none())
                    .map(|((b, u), k)| (b.clone(), u.clone(), k.state.clone()))
                    .collect()
            },
        )
    }

    /// A breaker entered `state`: log it and run its webhook (never on the caller's thread).
    pub fn transition(&self, breaker: &Arc<Breaker>, state: State) {
        match state {
            State::Tripped => {
                tracing::warn!(frontend = %breaker.frontend, middleware = %breaker.middleware, condition = %breaker.spec.condition_text, "circuit breaker tripped: serving its fallback")
            }
            State::Recovering => {
                tracing::info!(frontend = %breaker.frontend, middleware = %breaker.middleware, "circuit breaker recovering")
            }
            State::Standby => {
                tracing::info!(frontend = %breaker.frontend, middleware = %breaker.middleware, "circuit breaker back in standby")
            }
        }
        let hook = match state {
            State::Tripped => breaker.spec.on_tripped.clone(),
            State::Standby => breaker.spec.on_standby.clone(),
            State::Recovering => None,
        };
        if let Some(hook) = hook {
            self.effects
                .send(hook, breaker.frontend.clone(), breaker.middleware.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{compile, CompileOptions, KvSet};

    fn table(servers: &[&str], breaker_condition: &str) -> RouteTable {
        let mut kv = KvSet::default();
        kv.entries.insert(
            "/vulcand/backends/b/backend".into(),
            r#"{"Type":"http"}"#.into(),
        );
        for (i, s) in servers.iter().enumerate() {
            kv.entries.insert(
                format!("/vulcand/backends/b/servers/s{i}"),
                format!(r#"{{"URL":"{s}"}}"#),
            );
        }
        kv.entries.insert(
            "/vulcand/frontends/f/frontend".into(),
            r#"{"Type":"http","BackendId":"b","Route":"PathPrefix(`/`)"}"#.into(),
        );
        kv.entries.insert(
            "/vulcand/frontends/f/middlewares/cb".into(),
            serde_json::json!({"Type":"cbreaker","Middleware":{"Condition": breaker_condition}})
                .to_string(),
        );
        let compiled = compile(&kv, &CompileOptions::default());
        assert!(
            compiled.report.skipped.is_empty(),
            "{:?}",
            compiled.report.skipped
        );
        compiled.table
    }

    fn registry() -> Registry {
        Registry::new(EjectionSettings::default(), Effects::disabled())
    }

    #[test]
    fn state_survives_a_refresh_that_leaves_it_alone() {
        let r = registry();
        let mut t1 = table(
            &["http://127.0.0.1:1", "http://127.0.0.1:2"],
            "NetworkErrorRatio() > 0.5",
        );
        r.attach(&mut t1);
        let h1 = t1.backends()[0].servers[0].health.clone();
        let b1 = t1.frontends()[0].middlewares[0].breaker.clone().unwrap();
        // A new server joins: the others keep their health, the breaker its state.
        let mut t2 = table(
            &[
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
            ],
            "NetworkErrorRatio() > 0.5",
        );
        r.attach(&mut t2);
        assert!(Arc::ptr_eq(&h1, &t2.backends()[0].servers[0].health));
        assert!(Arc::ptr_eq(
            &b1,
            t2.frontends()[0].middlewares[0].breaker.as_ref().unwrap()
        ));
        assert_eq!(r.servers().len(), 3);
        // Changed breaker settings: a fresh breaker.
        let mut t3 = table(&["http://127.0.0.1:1"], "NetworkErrorRatio() > 0.9");
        r.attach(&mut t3);
        assert!(!Arc::ptr_eq(
            &b1,
            t3.frontends()[0].middlewares[0].breaker.as_ref().unwrap()
        ));
        assert_eq!(r.breakers().len(), 1, "only breakers in use are listed");
        assert_eq!(r.servers().len(), 1);
    }

    #[test]
    fn the_registry_is_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Registry>();
    }
}
