//! Protocol upgrades (RFC 9110 §7.8): which of the protocols a client offers in `Upgrade` a
//! listener passes on, and whether an upstream's `101 Switching Protocols` switched to one of
//! them. A switched connection is a byte tunnel that no later rule sees into, so only what the
//! listener allows is offered upstream and only what was offered may be switched to.

use super::fields::{for_each_list_element, is_token};
use super::{FieldKind, HeaderField};

/// The cleartext HTTP/2 upgrade. RFC 9113 removed it; a proxy that relays it hands the client
/// an HTTP/2 connection to the upstream on which no rule of the proxy applies any more.
pub const H2C: &[u8] = b"h2c";

/// Which upgrade protocols a listener forwards.
#[derive(Clone, Copy, Debug)]
pub enum UpgradePolicy<'a> {
    /// A mesh listener: every protocol but h2c.
    AnyButH2c,
    /// An edge expose rule: only the protocol names listed (lowercase), never h2c.
    Only(&'a [Box<[u8]>]),
}

impl UpgradePolicy<'_> {
    /// Whether a protocol (`name` or `name/version`) may be offered upstream.
    pub fn allows(&self, protocol: &[u8]) -> bool {
        let name = protocol_name(protocol);
        if name.eq_ignore_ascii_case(H2C) {
            return false;
        }
        match self {
            UpgradePolicy::AnyButH2c => true,
            UpgradePolicy::Only(names) => names.iter().any(|n| name.eq_ignore_ascii_case(n)),
        }
    }
}

/// What [`filter_offer`] kept and left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfferFilter {
    pub kept: usize,
    pub dropped: usize,
}

/// Collects the protocols of the request's `Upgrade` fields that `policy` allows into `out`
/// (cleared first), as a list for a new `Upgrade` line (`websocket, foo/2`). Elements that are
/// not `token ["/" token]` are dropped with the disallowed ones.
pub fn filter_offer(
    buf: &[u8],
    fields: &[HeaderField],
    policy: UpgradePolicy<'_>,
    out: &mut Vec<u8>,
) -> OfferFilter {
    out.clear();
    let mut counts = OfferFilter::default();
    for f in fields.iter().filter(|f| f.kind == FieldKind::Upgrade) {
        for_each_list_element(f.value.of(buf), |protocol| {
            if protocol.is_empty() {
                return;
            }
            if !is_protocol(protocol) || !policy.allows(protocol) {
                counts.dropped += 1;
                return;
            }
            if counts.kept > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(protocol);
            counts.kept += 1;
        });
    }
    counts
}

/// Whether a 101's `Upgrade` fields name at least one protocol and only protocols from
/// `offer` (the list [`filter_offer`] built): a server may switch only to a protocol the
/// client asked for. Names compare case-insensitively; a version the client gave must match.
pub fn switched_to_offered(buf: &[u8], fields: &[HeaderField], offer: &[u8]) -> bool {
    let mut named = 0;
    let mut all_offered = true;
    for f in fields.iter().filter(|f| f.kind == FieldKind::Upgrade) {
        for_each_list_element(f.value.of(buf), |chosen| {
            if chosen.is_empty() {
                return;
            }
            named += 1;
            let mut offered = false;
            for_each_list_element(offer, |o| offered |= same_protocol(o, chosen));
            all_offered &= offered && is_protocol(chosen);
        });
    }
    named > 0 && all_offered
}

/// `name` of `name/version`.
pub fn protocol_name(protocol: &[u8]) -> &[u8] {
    match memchr::memchr(b'/', protocol) {
        Some(i) => &protocol[..i],
        None => protocol,
    }
}

fn protocol_version(protocol: &[u8]) -> Option<&[u8]> {
    memchr::memchr(b'/', protocol).map(|i| &protocol[i + 1..])
}

/// `protocol = protocol-name ["/" protocol-version]`, both tokens.
fn is_protocol(protocol: &[u8]) -> bool {
    is_token(protocol_name(protocol)) && protocol_version(protocol).is_none_or(is_token)
}

/// Whether the server's `chosen` protocol is the `offered` one.
fn same_protocol(offered: &[u8], chosen: &[u8]) -> bool {
    protocol_name(offered).eq_ignore_ascii_case(protocol_name(chosen))
        && match (protocol_version(offered), protocol_version(chosen)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, HeadLimits, Parsed};

    /// The `Upgrade` offer a request makes under `policy`, as forwarded.
    fn offer(upgrade_lines: &str, policy: UpgradePolicy<'_>) -> (String, OfferFilter) {
        let raw =
            format!("GET / HTTP/1.1\r\nHost: a\r\n{upgrade_lines}Connection: upgrade\r\n\r\n");
        let mut fields = Vec::new();
        let Ok(Parsed::Complete(_)) =
            parse_request(raw.as_bytes(), 0, &HeadLimits::default(), &mut fields)
        else {
            panic!("parses: {raw:?}");
        };
        let mut out = Vec::new();
        let counts = filter_offer(raw.as_bytes(), &fields, policy, &mut out);
        (String::from_utf8(out).unwrap(), counts)
    }

    #[test]
    fn h2c_is_never_offered_and_other_protocols_follow_the_policy() {
        let mesh = UpgradePolicy::AnyButH2c;
        let ws: [Box<[u8]>; 1] = [b"websocket".as_slice().into()];
        let edge = UpgradePolicy::Only(&ws);
        let none = UpgradePolicy::Only(&[]);
        let cases: &[(&str, UpgradePolicy<'_>, &str, usize)] = &[
            ("Upgrade: h2c\r\n", mesh, "", 1),
            ("Upgrade: H2C\r\n", mesh, "", 1),
            ("Upgrade: h2c/1\r\n", mesh, "", 1),
            ("Upgrade: websocket\r\n", mesh, "websocket", 0),
            ("Upgrade: h2c, websocket\r\n", mesh, "websocket", 1),
            (
                "Upgrade: foo/2, h2c\r\nUpgrade: bar\r\n",
                mesh,
                "foo/2, bar",
                1,
            ),
            ("Upgrade: WebSocket\r\n", edge, "WebSocket", 0),
            ("Upgrade: websocket/13\r\n", edge, "websocket/13", 0),
            ("Upgrade: foo, websocket\r\n", edge, "websocket", 1),
            ("Upgrade: h2c\r\n", edge, "", 1),
            ("Upgrade: websocket\r\n", none, "", 1),
            ("Upgrade: a/b/c, \"q\", x/\r\n", mesh, "", 3),
            ("Upgrade: ,, websocket ,\r\n", mesh, "websocket", 0),
        ];
        for (lines, policy, want, dropped) in cases {
            let (got, counts) = offer(lines, *policy);
            assert_eq!(got, *want, "{lines:?} under {policy:?}");
            assert_eq!(counts.dropped, *dropped, "{lines:?} under {policy:?}");
            assert_eq!(
                counts.kept,
                want.split(", ").filter(|s| !s.is_empty()).count()
            );
        }
    }

    fn switched(response_upgrade: &str, offer: &str) -> bool {
        let raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n{response_upgrade}\r\n"
        );
        let mut fields = Vec::new();
        let Ok(Parsed::Complete(_)) = crate::http::parse_response(
            raw.as_bytes(),
            0,
            false,
            &HeadLimits::default(),
            &mut fields,
        ) else {
            panic!("parses: {raw:?}");
        };
        switched_to_offered(raw.as_bytes(), &fields, offer.as_bytes())
    }

    #[test]
    fn a_101_must_switch_to_an_offered_protocol() {
        assert!(switched("Upgrade: websocket\r\n", "websocket"));
        assert!(switched("Upgrade: WebSocket\r\n", "websocket"));
        assert!(switched("Upgrade: foo/2\r\n", "websocket, foo/2"));
        assert!(switched("Upgrade: foo/2\r\n", "foo"));
        assert!(switched("Upgrade: foo\r\n", "foo/2"));
        assert!(!switched("Upgrade: foo/3\r\n", "foo/2"));
        assert!(!switched("Upgrade: h2c\r\n", "websocket"));
        assert!(!switched("Upgrade: websocket, h2c\r\n", "websocket"));
        assert!(!switched("", "websocket"));
        assert!(!switched("Upgrade: \r\n", "websocket"));
        assert!(!switched("Upgrade: websocket\r\n", ""));
        assert!(!switched("Upgrade: web socket\r\n", "web"));
    }
}
