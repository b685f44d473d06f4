//! The forwarded request head: the request line and kept fields as slices of the received
//! bytes, then the proxy's own lines (Host, X-Forwarded-*, X-Request-Id), in one gather list.

use super::super::conn::Conn;
use super::super::gather::Gather;
use super::super::worker::Worker;
use super::{BodyState, Target};
use crate::http::{FieldKind, RequestHead, Version};

/// The forwarded head: the request line and kept fields as slices of `rbuf`, then the proxy's
/// own lines, then the body bytes already received.
pub(super) fn build_upstream_head(
    c: &mut Conn,
    w: &Worker,
    head: &RequestHead,
    target: Target<'_>,
    body: &BodyState,
) -> Gather {
    let Target {
        fe,
        server,
        rewrite,
        ..
    } = target;
    let mut extra = std::mem::take(&mut c.extra);
    extra.clear();
    // A rewritten target (a middleware's whole target, or an edge rule's new prefix) goes
    // first in `extra`; the proxy's lines follow it.
    let target_start = extra.len();
    if !c.target.is_empty() {
        extra.extend_from_slice(&c.target);
    } else if let Some(r) = rewrite {
        extra.extend_from_slice(r.prefix);
    }
    let target_end = extra.len();
    let lines_start = extra.len();
    let rbuf = &c.rbuf;
    let trusted = c.trusted_hop;
    let pass_host = fe.settings.pass_host_header;
    let mut has_proto = false;
    let mut has_fwd_host = false;
    let mut has_request_id = false;
    let mut xff_started = false;

    // An absolute-form target's authority overrides the Host field (RFC 9112 §3.2.2).
    let absolute_form = head.path_and_query != head.target;
    let host_replaced = !pass_host || absolute_form;
    if !pass_host {
        extra.extend_from_slice(b"Host: ");
        match &fe.settings.hostname {
            Some(h) => extra.extend_from_slice(h.as_bytes()),
            None => extra.extend_from_slice(server.authority.as_bytes()),
        }
        extra.extend_from_slice(b"\r\n");
    } else if absolute_form {
        extra.extend_from_slice(b"Host: ");
        extra.extend_from_slice(head.host.of(rbuf));
        extra.extend_from_slice(b"\r\n");
    }
    // From an untrusted peer (an edge client) forwarding fields are replaced, not extended.
    for f in c.fields.iter().filter(|f| !f.drop && trusted) {
        match f.kind {
            FieldKind::XForwardedFor => {
                extra.extend_from_slice(if xff_started {
                    b", "
                } else {
                    b"X-Forwarded-For: "
                });
                extra.extend_from_slice(f.value.of(rbuf));
                xff_started = true;
            }
            FieldKind::XForwardedProto => has_proto = true,
            FieldKind::XForwardedHost => has_fwd_host = true,
            FieldKind::XRequestId => has_request_id = true,
            _ => {}
        }
    }
    extra.extend_from_slice(if xff_started {
        b", "
    } else {
        b"X-Forwarded-For: "
    });
    extra.extend_from_slice(c.peer_ip.as_bytes());
    extra.extend_from_slice(b"\r\n");
    let tls = c.stream.is_tls();
    if !has_proto {
        extra.extend_from_slice(if tls {
            b"X-Forwarded-Proto: https\r\n"
        } else {
            b"X-Forwarded-Proto: http\r\n"
        });
    }
    if !has_fwd_host && !head.host.is_empty() {
        extra.extend_from_slice(b"X-Forwarded-Host: ");
        extra.extend_from_slice(head.host.of(rbuf));
        extra.extend_from_slice(b"\r\n");
    }
    if !trusted {
        extra.extend_from_slice(b"X-Forwarded-Port: ");
        extra.extend_from_slice(c.listener.port_text.as_bytes());
        extra.extend_from_slice(b"\r\nForwarded: for=");
        if c.peer.is_ipv6() {
            extra.extend_from_slice(b"\"[");
            extra.extend_from_slice(c.peer_ip.as_bytes());
            extra.extend_from_slice(b"]\"");
        } else {
            extra.extend_from_slice(c.peer_ip.as_bytes());
        }
        extra.extend_from_slice(if tls {
            b";proto=https\r\n"
        } else {
            b";proto=http\r\n"
        });
    }
    if let Some(id) = c.stream.identity() {
        extra.extend_from_slice(b"X-Client-Cert-Subject: ");
        extra.extend_from_slice(&id.subject);
        extra.extend_from_slice(b"\r\nX-Client-Cert-San: ");
        extra.extend_from_slice(&id.san);
        extra.extend_from_slice(b"\r\n");
    }
    if !has_request_id {
        extra.extend_from_slice(b"X-Request-Id: ");
        // One id per request: a retry on another server carries the same one.
        let id = match c.request_id {
            Some(id) => id,
            None => {
                let id = w.next_request_id();
                c.request_id = Some(id);
                c.rec.generated_request_id(&id);
                id
            }
        };
        extra.extend_from_slice(&id);
        extra.extend_from_slice(b"\r\n");
    }
    if !c.upgrade_offer.is_empty() {
        extra.extend_from_slice(b"Upgrade: ");
        extra.extend_from_slice(&c.upgrade_offer);
        extra.extend_from_slice(b"\r\nConnection: upgrade\r\n");
    }

    let mut g = Gather::new(
        std::mem::take(&mut c.rbuf),
        extra,
        std::mem::take(&mut c.iov),
    );
    let line_end = head.target.end as usize + b" HTTP/1.1\r\n".len();
    if !c.target.is_empty() {
        // A rewrite middleware's target (which already includes the edge's rewrite).
        g.push_data(
            head.method_span.start as usize,
            head.method_span.end as usize,
        );
        g.push_static(b" ");
        g.push_extra(target_start, target_end);
        g.push_static(version_tail(head.version));
    } else if let Some(r) = rewrite {
        // New prefix, then the rest of the received path and the query, byte for byte.
        g.push_data(
            head.method_span.start as usize,
            head.method_span.end as usize,
        );
        g.push_static(b" ");
        g.push_extra(target_start, target_end);
        g.push_data(
            head.path.start as usize + r.cut,
            head.path_and_query.end as usize,
        );
        g.push_static(version_tail(head.version));
    } else if head.version == Version::Http11 && head.path_and_query == head.target {
        g.push_data(0, line_end);
    } else {
        g.push_data(
            head.method_span.start as usize,
            head.method_span.end as usize,
        );
        g.push_static(b" ");
        g.push_data(
            head.path_and_query.start as usize,
            head.path_and_query.end as usize,
        );
        g.push_static(version_tail(head.version));
    }
    for f in &c.fields {
        // A mesh hop keeps the previous hop's X-Forwarded-Proto/Host and X-Request-Id (unless
        // `Connection` named them) and rebuilds X-Forwarded-For with the peer appended.
        let skip = f.drop
            || matches!(f.kind, FieldKind::Expect | FieldKind::XForwardedFor)
            || (f.kind == FieldKind::Host && host_replaced)
            || (!trusted && f.kind.is_forwarding());
        if !skip {
            g.push_data(f.line.start as usize, f.line.end as usize);
        }
    }
    let extra_len = g.extra.len();
    g.push_extra(lines_start, extra_len);
    g.push_static(b"\r\n");
    g.push_data(head.head_len, body.buffered_end);
    g
}

fn version_tail(v: Version) -> &'static [u8] {
    match v {
        Version::Http10 => b" HTTP/1.0\r\n",
        Version::Http11 => b" HTTP/1.1\r\n",
    }
}

/// A request id for a request that has none: the worker's seed then the counter, each as 16
/// hex digits.
pub fn request_id(seed: u64, counter: u64) -> [u8; 32] {
    // By hand, a byte (two digits) per lookup: `core::fmt` hex formatting showed up in
    // profiles of small requests.
    let mut id = [0u8; 32];
    for (half, word) in id.chunks_exact_mut(16).zip([seed, counter]) {
        for (pair, byte) in half.chunks_exact_mut(2).zip(word.to_be_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
        }
    }
    id
}

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_seed_then_counter_in_fixed_width_hex() {
        let id = super::request_id(0x0123_4567_89ab_cdef, 42);
        assert_eq!(&id, b"0123456789abcdef000000000000002a");
    }
}
