//! Field syntax shared by requests, responses and chunked trailers: token tables, well-known
//! field names, digits-only Content-Length, `Transfer-Encoding` and `Connection` lists, Host.

use super::{FieldKind, HeaderField, HttpError};

/// `tchar` of RFC 9110 §5.6.2.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether `b` may appear in a token (field names, methods, codings, chunk extensions).
#[inline]
pub fn is_token_byte(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Whether `s` is a non-empty token.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

/// Whether `b` may appear in a field value: HTAB, SP, VCHAR and obs-text (no CTLs, no DEL).
#[inline]
pub fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The kind of a field by its name, and whether the name only matched a well-known field after
/// reading `_` as `-`. Such aliases (`Content_Length`, `X_Forwarded_For`) are refused: some
/// servers and CGI gateways fold `_` into `-`, so they would smuggle a second copy of a field
/// the proxy checked (or rewrote) past it.
///
/// `name` is a token (RFC 9110 §5.6.2), as every parsed field name is.
pub fn classify_name(name: &[u8]) -> (FieldKind, bool) {
    let candidates: &[(&[u8], FieldKind)] = match name.len() {
        2 => &[(b"te", FieldKind::Te)],
        4 => &[(b"host", FieldKind::Host)],
        6 => &[(b"expect", FieldKind::Expect)],
        9 => &[(b"forwarded", FieldKind::Forwarded)],
        7 => &[
            (b"upgrade", FieldKind::Upgrade),
            (b"trailer", FieldKind::Trailer),
        ],
        10 => &[
            (b"connection", FieldKind::Connection),
            (b"keep-alive", FieldKind::KeepAlive),
        ],
        12 => &[(b"x-request-id", FieldKind::XRequestId)],
        14 => &[
            (b"content-length", FieldKind::ContentLength),
            (b"http2-settings", FieldKind::Http2Settings),
        ],
        15 => &[(b"x-forwarded-for", FieldKind::XForwardedFor)],
        16 => &[
            (b"proxy-connection", FieldKind::ProxyConnection),
            (b"x-forwarded-host", FieldKind::XForwardedHost),
            (b"x-forwarded-port", FieldKind::XForwardedPort),
        ],
        17 => &[
            (b"transfer-encoding", FieldKind::TransferEncoding),
            (b"x-forwarded-proto", FieldKind::XForwardedProto),
            (b"x-client-cert-san", FieldKind::ClientCert),
        ],
        21 => &[(b"x-client-cert-subject", FieldKind::ClientCert)],
        _ => return (FieldKind::Other, false),
    };
    for &(lower, kind) in candidates {
        if token_eq_lowered(name, lower) {
            return (kind, false);
        }
    }
    // Nothing matched exactly, so a name that matches reading `_` as `-` has a `_`: an alias.
    // (Most names differ from every candidate in their first byte: no search for a `_` first.)
    for &(lower, kind) in candidates {
        let same = name
            .iter()
            .zip(lower)
            .all(|(&got, &want)| got.to_ascii_lowercase() == want || (got == b'_' && want == b'-'));
        if same {
            return (kind, true);
        }
    }
    (FieldKind::Other, false)
}

/// Whether the token `name` is `lower` (lowercase letters, digits and `-`, of the same length)
/// ignoring ASCII case, eight or four bytes at a time: setting bit 0x20 of every byte lowers
/// the letters, keeps digits and `-`, and turns no other token byte into a letter, a digit or
/// `-` (the bytes that would, such as CR, are not token bytes).
fn token_eq_lowered(name: &[u8], lower: &[u8]) -> bool {
    debug_assert_eq!(name.len(), lower.len());
    fn word(s: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"))
    }
    fn half(s: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(s[at..at + 4].try_into().expect("four bytes"))
    }
    const LOWER8: u64 = 0x2020_2020_2020_2020;
    const LOWER4: u32 = 0x2020_2020;
    let n = name.len();
    if n >= 8 {
        // Whole words, then the last eight bytes (overlapping the previous word).
        let mut at = 0;
        while at + 8 < n {
            if word(name, at) | LOWER8 != word(lower, at) {
                return false;
            }
            at += 8;
        }
        word(name, n - 8) | LOWER8 == word(lower, n - 8)
    } else if n >= 4 {
        half(name, 0) | LOWER4 == half(lower, 0) && half(name, n - 4) | LOWER4 == half(lower, n - 4)
    } else {
        name.iter()
            .zip(lower)
            .all(|(&got, &want)| got | 0x20 == want)
    }
}

/// A Content-Length value: one or more ASCII digits and nothing else (no sign, no spaces, no
/// list), fitting in a u64. `"+5".parse::<u64>()` succeeds, so this is done by hand.
pub fn content_length_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Calls `each` with every element of a comma-separated list (`#token` of RFC 9110 §5.6.1),
/// trimmed of OWS. Empty elements are passed as empty slices.
pub fn for_each_list_element(value: &[u8], mut each: impl FnMut(&[u8])) {
    for element in value.split(|&b| b == b',') {
        each(trim_ows(element));
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What the `Transfer-Encoding` lines of a message say, accumulated line by line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCodings {
    /// At least one Transfer-Encoding line was seen.
    pub present: bool,
    /// Codings seen so far, across lines.
    pub count: u32,
    /// How many of them were `chunked`.
    pub chunked: u32,
    /// The most recent coding was `chunked`.
    pub chunked_last: bool,
}

impl TransferCodings {
    /// Adds one Transfer-Encoding value. Only bare tokens are accepted: no parameters, no
    /// quotes, no empty elements, since any of those could be read differently downstream.
    pub fn add(&mut self, value: &[u8]) -> Result<(), HttpError> {
        self.present = true;
        let mut bad = false;
        for_each_list_element(value, |coding| {
            if !is_token(coding) {
                bad = true;
                return;
            }
            self.count += 1;
            self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            if self.chunked_last {
                self.chunked += 1;
            }
        });
        if bad {
            return Err(HttpError::Malformed("invalid Transfer-Encoding"));
        }
        Ok(())
    }

    /// RFC 9112 §6.1/§6.3: `chunked` exactly once and last, or the length cannot be known.
    /// Anything before `chunked` is a coding ringway does not implement.
    pub fn check(&self) -> Result<(), HttpError> {
        if self.chunked != 1 || !self.chunked_last {
            return Err(HttpError::Malformed(
                "chunked is not the final transfer coding",
            ));
        }
        if self.count > 1 {
            return Err(HttpError::UnsupportedCoding);
        }
        Ok(())
    }
}

/// What the `Connection` lines of a message say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some other field name is listed, so listed fields must be looked for.
    pub lists_other: bool,
}

impl ConnectionOptions {
    pub fn add(&mut self, value: &[u8]) -> Result<(), HttpError> {
        let mut bad = false;
        for_each_list_element(value, |option| {
            if option.is_empty() {
                return;
            }
            if !is_token(option) {
                bad = true;
            } else if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if option.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if option.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.lists_other = true;
            }
        });
        if bad {
            return Err(HttpError::Malformed("invalid Connection"));
        }
        Ok(())
    }
}

/// Marks `drop` on every field whose name a `Connection` line lists (RFC 9110 §7.6.1), except
/// the framing and routing fields Host, Content-Length and Transfer-Encoding, which a client
/// could otherwise strip before the upstream sees them. `keep` names a kind that must stay
/// (Upgrade in a 101 response).
pub fn drop_connection_listed(buf: &[u8], fields: &mut [HeaderField], keep: Option<FieldKind>) {
    for i in 0..fields.len() {
        let field = fields[i];
        if field.drop
            || Some(field.kind) == keep
            || matches!(
                field.kind,
                FieldKind::Host | FieldKind::ContentLength | FieldKind::TransferEncoding
            )
        {
            continue;
        }
        let name = field.name.of(buf);
        let listed = fields
            .iter()
            .filter(|f| f.kind == FieldKind::Connection)
            .any(|conn| {
                let mut found = false;
                for_each_list_element(conn.value.of(buf), |option| {
                    found |= option.eq_ignore_ascii_case(name);
                });
                found
            });
        fields[i].drop = listed;
    }
}

/// Whether a Host value (or the authority of an absolute-form target) is `uri-host [":" port]`
/// (RFC 3986 §3.2.2): a reg-name or IP literal, no userinfo, a port of 1 to 5 digits if any.
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = super::find_byte(b']', rest) else {
            return false;
        };
        let literal = &rest[..close];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
        if !ok {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (None, Some(port)),
            _ => return false,
        }
    } else {
        match super::find_byte(b':', value) {
            Some(colon) => (Some(&value[..colon]), Some(&value[colon + 1..])),
            None => (Some(value), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() || !is_reg_name(host) {
            return false;
        }
    }
    match port {
        None => true,
        Some(port) => !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
    }
}

fn is_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if !REG_NAME[b as usize] => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// The bytes a reg-name takes as they are (RFC 3986 §3.2.2: unreserved and sub-delims), one
/// table lookup a byte.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// The value of the first field of `kind`, if any.
pub fn find_field<'a>(buf: &'a [u8], fields: &[HeaderField], kind: FieldKind) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|f| f.kind == kind)
        .map(|f| f.value.of(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_exactly_tchar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token_byte(b), tchar, "{b:#04x}");
        }
    }

    #[test]
    fn content_length_is_digits_only() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"000", Some(0)),
            (b"42", Some(42)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"99999999999999999999", None),
            (b"", None),
            (b"+5", None),
            (b"-1", None),
            (b"5 ", None),
            (b"5, 5", None),
            (b"0x10", None),
            (b"1e3", None),
            (b"\xd9\xa3", None),
        ];
        for &(value, want) in cases {
            assert_eq!(content_length_digits(value), want, "{:?}", value);
        }
    }

    #[test]
    fn names_classify_case_insensitively_and_flag_underscore_aliases() {
        let cases: &[(&[u8], FieldKind, bool)] = &[
            (b"Host", FieldKind::Host, false),
            (b"hOsT", FieldKind::Host, false),
            (b"Content-Length", FieldKind::ContentLength, false),
            (b"Content_Length", FieldKind::ContentLength, true),
            (b"TRANSFER_ENCODING", FieldKind::TransferEncoding, true),
            (b"X_Forwarded_For", FieldKind::XForwardedFor, true),
            (b"te", FieldKind::Te, false),
            (b"X-Request-Id", FieldKind::XRequestId, false),
            (b"X_Custom_Thing", FieldKind::Other, false),
            (b"Content-Lengthy", FieldKind::Other, false),
            (b"Hostx", FieldKind::Other, false),
        ];
        for &(name, kind, aliased) in cases {
            assert_eq!(classify_name(name), (kind, aliased), "{:?}", name);
        }
    }

    #[test]
    fn names_classify_as_a_byte_by_byte_comparison_would() {
        // The word-at-a-time comparison against the plain definition, for tokens near every
        // well-known name: case flips, `_` for `-`, and any token byte anywhere.
        const TOKEN: &[u8] =
            b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let known: &[&[u8]] = &[
            b"te",
            b"host",
            b"expect",
            b"forwarded",
            b"upgrade",
            b"trailer",
            b"connection",
            b"keep-alive",
            b"x-request-id",
            b"content-length",
            b"http2-settings",
            b"x-forwarded-for",
            b"proxy-connection",
            b"x-forwarded-host",
            b"x-forwarded-port",
            b"transfer-encoding",
            b"x-forwarded-proto",
            b"x-client-cert-san",
            b"x-client-cert-subject",
        ];
        let plain = |name: &[u8]| -> (bool, bool) {
            let lower: Vec<u8> = name.iter().map(u8::to_ascii_lowercase).collect();
            let dashed: Vec<u8> = lower
                .iter()
                .map(|&b| if b == b'_' { b'-' } else { b })
                .collect();
            let exact = known.contains(&&lower[..]);
            (exact, !exact && known.contains(&&dashed[..]))
        };
        let mut rng = crate::http::test_rng::Rng(0x7e57_c1a5_51f1_ed00);
        let mut checked = 0;
        for _ in 0..40_000 {
            let mut name = known[rng.below(known.len())].to_vec();
            for _ in 0..rng.below(4) {
                let at = rng.below(name.len());
                name[at] = match rng.below(3) {
                    0 => name[at].to_ascii_uppercase(),
                    1 if name[at] == b'-' => b'_',
                    _ => TOKEN[rng.below(TOKEN.len())],
                };
            }
            let (kind, aliased) = classify_name(&name);
            let (exact, alias) = plain(&name);
            let shown = String::from_utf8_lossy(&name);
            assert_eq!(kind != FieldKind::Other, exact || alias, "{shown}");
            assert_eq!(aliased, alias, "{shown}");
            checked += usize::from(exact || alias);
        }
        assert!(
            checked > 10_000,
            "{checked} well-known names among the draws"
        );
    }

    #[test]
    fn hosts_follow_uri_host_and_port() {
        let good: &[&[u8]] = &[
            b"example.com",
            b"example.com:8080",
            b"10.0.0.1:80",
            b"[::1]",
            b"[::1]:443",
            b"[fe80::1.2.3.4]",
            b"my_service.local",
            b"a%2Eb",
        ];
        for host in good {
            assert!(is_valid_host(host), "{:?}", host);
        }
        let bad: &[&[u8]] = &[
            b"",
            b":80",
            b"example.com:",
            b"example.com:123456",
            b"example.com:8o",
            b"user@example.com",
            b"exa mple.com",
            b"example.com/",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::g]",
            b"a%2",
            b"a%zz",
            b"h\xc3\xa9",
            b"a,b:1:2",
        ];
        for host in bad {
            assert!(!is_valid_host(host), "{:?}", host);
        }
    }

    #[test]
    fn transfer_codings_need_a_single_final_chunked() {
        type Case = (&'static [&'static [u8]], Result<(), HttpError>);
        let cases: &[Case] = &[
            (&[b"chunked"], Ok(())),
            (&[b"Chunked"], Ok(())),
            (&[b"gzip, chunked"], Err(HttpError::UnsupportedCoding)),
            (&[b"gzip", b"chunked"], Err(HttpError::UnsupportedCoding)),
            (&[b"chunked, gzip"], Err(HttpError::Malformed(""))),
            (&[b"chunked", b"chunked"], Err(HttpError::Malformed(""))),
            (&[b"gzip"], Err(HttpError::Malformed(""))),
            (&[b"chunked;x"], Err(HttpError::Malformed(""))),
            (&[b"\"chunked\""], Err(HttpError::Malformed(""))),
            (&[b"chunked,"], Err(HttpError::Malformed(""))),
            (&[b""], Err(HttpError::Malformed(""))),
        ];
        for (values, want) in cases {
            let mut te = TransferCodings::default();
            let got = values
                .iter()
                .try_for_each(|v| te.add(v))
                .and_then(|()| te.check());
            let same = match (&got, want) {
                (Err(HttpError::Malformed(_)), Err(HttpError::Malformed(_))) => true,
                _ => got == *want,
            };
            assert!(same, "{values:?}: got {got:?}, want {want:?}");
        }
    }
}
