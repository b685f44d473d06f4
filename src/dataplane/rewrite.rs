//! A frontend's `rewrite` middlewares applied to one request, in priority order: each sees
//! `scheme://Host` + the target the previous one (or the edge's prefix rewrite) left, and may
//! give a new target to forward or a redirect to answer.

use super::conn::Conn;
use super::error::ProxyError;
use crate::edge::Rewrite;
use crate::http::RequestHead;
use crate::route::rewrite::Rewritten;
use crate::route::Frontend;

/// Apply `fe`'s rewrite middlewares. Leaves the new target in `c.target` (empty when no rule
/// changed it); `Err` is the answer instead of forwarding: a redirect, or a rule that produced
/// an unusable target.
#[inline]
pub fn apply(
    c: &mut Conn,
    head: &RequestHead,
    fe: &Frontend,
    edge: Option<Rewrite<'_>>,
) -> Result<(), ProxyError> {
    c.target.clear();
    let mut rules = fe.middlewares.iter().filter_map(|m| m.rewrite.as_deref());
    let Some(first) = rules.next() else {
        return Ok(());
    };
    // A listener with TLS will say https here.
    const SCHEME: &[u8] = b"http://";
    let mut url = Vec::new();
    for rule in std::iter::once(first).chain(rules) {
        url.clear();
        url.extend_from_slice(SCHEME);
        url.extend_from_slice(head.host.of(&c.rbuf));
        if !c.target.is_empty() {
            url.extend_from_slice(&c.target);
        } else if edge.is_some() {
            url.extend_from_slice(&c.rewritten);
            url.extend_from_slice(
                &c.rbuf[head.path.end as usize..head.path_and_query.end as usize],
            );
        } else {
            url.extend_from_slice(head.path_and_query.of(&c.rbuf));
        }
        match rule.apply(&url) {
            Rewritten::Unchanged => {}
            Rewritten::Target(t) => c.target = t,
            Rewritten::Redirect(location) => {
                let location = String::from_utf8(location)
                    .expect("a rewritten URL is checked to be visible ASCII");
                return Err(ProxyError::Redirect(location.into()));
            }
            Rewritten::Invalid => return Err(ProxyError::BadRewrite),
        }
    }
    Ok(())
}
