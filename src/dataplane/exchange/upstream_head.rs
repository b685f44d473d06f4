//! The forwarded request head: the request line and kept fields as received, then the proxy's
//! own lines (Host, X-Forwarded-*, X-Request-Id), written out as one buffer.

use super::super::conn::Conn;
use super::super::gather::Gather;
use super::super::worker::Worker;
use super::{BodyState, Target};
use crate::http::{FieldKind, RequestHead, Version};

/// The forwarded head, in `c.extra`: the request line and kept fields copied from `rbuf`,
/// then the proxy's own lines; the body bytes already received follow it as a range of
/// `rbuf`. One buffer rather than slices of `rbuf` between the proxy's lines: the kernel sends
/// a single buffer cheaper than an iovec array, by more than the copy of the head costs
/// (`bench/results/profile.md`, tenth pass). `rbuf` is left as received (a retry builds the
/// head from it again).
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
    let rbuf = &c.rbuf;
    let trusted = c.trusted_hop;
    let pass_host = fe.settings.pass_host_header;

    // The request line: a rewrite middleware's whole target (which already includes the
    // edge's rewrite), an edge rule's new prefix before the rest of the received path and
    // query, or the received target byte for byte.
    let as_received = c.target.is_empty()
        && rewrite.is_none()
        && head.version == Version::Http11
        && head.path_and_query == head.target;
    if as_received {
        let line_end = head.target.end as usize + b" HTTP/1.1\r\n".len();
        extra.extend_from_slice(&rbuf[..line_end]);
    } else {
        extra.extend_from_slice(head.method_span.of(rbuf));
        extra.push(b' ');
        if !c.target.is_empty() {
            extra.extend_from_slice(&c.target);
        } else if let Some(r) = rewrite {
            extra.extend_from_slice(r.prefix);
            extra.extend_from_slice(
                &rbuf[head.path.start as usize + r.cut..head.path_and_query.end as usize],
            );
        } else {
            extra.extend_from_slice(head.path_and_query.of(rbuf));
        }
        extra.extend_from_slice(version_tail(head.version));
    }

    // An absolute-form target's authority overrides the Host field (RFC 9112 §3.2.2).
    let absolute_form = head.path_and_query != head.target;
    let host_replaced = !pass_host || absolute_form;
    for f in &c.fields {
        // A mesh hop keeps the previous hop's X-Forwarded-Proto/Host and X-Request-Id (unless
        // `Connection` named them) and rebuilds X-Forwarded-For with the peer appended.
        let skip = f.drop
            || matches!(f.kind, FieldKind::Expect | FieldKind::XForwardedFor)
            || (f.kind == FieldKind::Host && host_replaced)
            || (!trusted && f.kind.is_forwarding());
        if !skip {
            extra.extend_from_slice(f.line.of(rbuf));
        }
    }

    let mut has_proto = false;
    let mut has_fwd_host = false;
    let mut has_request_id = false;
    let mut xff_started = false;
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

    extra.extend_from_slice(b"\r\n");

    let mut g = Gather::new(
        std::mem::take(&mut c.rbuf),
        extra,
        std::mem::take(&mut c.iov),
    );
    let head_end = g.extra.len();
    g.push_extra(0, head_end);
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
