//! Machinery shared by the request and response parsers: finding the end of a head without
//! re-scanning, mapping httparse's verdicts, and turning httparse's fields into offsets with
//! ringway's own checks on top.

use std::mem::MaybeUninit;

use super::fields::{classify_name, ConnectionOptions, TransferCodings};
use super::{content_length_digits, FieldKind, HeaderField, HttpError, Span};

/// Most header fields a head may have whatever the profile says: the httparse field array
/// lives on the stack (32 bytes a field).
pub(crate) const MAX_FIELDS: usize = 256;

pub(crate) type FieldArray<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_FIELDS];

pub(crate) fn field_array<'b>() -> FieldArray<'b> {
    [const { MaybeUninit::uninit() }; MAX_FIELDS]
}

/// Where the search for the end of a head got.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scan {
    /// The head ends (blank line included) at this offset.
    Complete(usize),
    /// No end yet; everything up to this offset was checked.
    Partial(usize),
    /// No end within the size limit.
    TooLarge,
}

/// Looks for the CRLF CRLF that ends a head, resuming near `scanned`, and refuses bare LF and
/// bare CR on the way so a head that can never be valid is dropped before it is complete.
///
/// A head usually arrives whole and well formed, so the search stops once a line, at its LF,
/// and a head whose every LF follows a CR is taken as complete at once. A bare CR in it is
/// left to the parser, which refuses every CR that does not start a CRLF; the parsers then ask
/// [`first_bare_cr_or_lf`] for the verdict the byte-by-byte scan ([`scan_exact`], which any
/// other head gets) would have given, so no verdict depends on how the head was split.
///
/// A head may not start with an empty line: RFC 9112 §2.2 lets a server skip CRLFs before a
/// request line, but on a proxy they only show up when a client miscounted a body, so they are
/// refused rather than guessed about.
pub(crate) fn scan_head(
    buf: &[u8],
    scanned: usize,
    max_head_bytes: usize,
) -> Result<Scan, HttpError> {
    match buf.first() {
        None => return Ok(Scan::Partial(0)),
        Some(b'\r' | b'\n') => return Err(HttpError::Malformed("empty line before the head")),
        Some(_) => {}
    }
    let window = &buf[..buf.len().min(max_head_bytes)];
    // The end marker is four bytes, and a CR at the very end could not be judged yet.
    let start = scanned.saturating_sub(3).min(window.len());
    for at in memchr::memchr_iter(b'\n', &window[start..]) {
        let i = start + at;
        // i >= 1: the first byte is neither CR nor LF.
        if window[i - 1] != b'\r' {
            break;
        }
        if i >= 3 && window[i - 3] == b'\r' && window[i - 2] == b'\n' {
            return Ok(Scan::Complete(i + 1));
        }
    }
    scan_exact(window, start, buf.len() >= max_head_bytes)
}

/// Whether a head httparse took as complete, `head` (its bytes, blank line included) with
/// `fields`, is one [`scan_head`] passes whole: it does not start with an empty line and every
/// line ends in CRLF. A head that arrived whole is parsed at once and checked this way, with
/// no separate scan for its end.
///
/// That is the same verdict because httparse ends a line at every LF and refuses every CR
/// not followed by an LF, so each LF of a head it completes ends one of its lines. The line
/// before each field line ends just before the field's name, and the last two lines (the last
/// field line, or the start line, and the blank line) end the head.
pub(crate) fn lines_end_in_crlf(head: &[u8], fields: &[httparse::Header<'_>]) -> bool {
    let base = head.as_ptr() as usize;
    head.len() >= 4
        && !matches!(head[0], b'\r' | b'\n')
        && head.ends_with(b"\r\n\r\n")
        && fields.iter().all(|f| {
            let start = f.name.as_ptr() as usize - base;
            start >= 2 && head[start - 2] == b'\r' && head[start - 1] == b'\n'
        })
}

/// For a complete head the parser refused: the bare CR (or LF) [`scan_exact`] would have
/// refused it for first, if there is one.
pub(crate) fn first_bare_cr_or_lf(head: &[u8]) -> Option<HttpError> {
    scan_exact(head, 0, false).err()
}

/// [`scan_head`] byte by byte from `start`: the first bare LF or bare CR, the end of the head,
/// or how far it got.
fn scan_exact(window: &[u8], start: usize, at_limit: bool) -> Result<Scan, HttpError> {
    for at in memchr::memchr2_iter(b'\r', b'\n', &window[start..]) {
        let i = start + at;
        if window[i] == b'\n' {
            // i >= 1: the first byte is neither CR nor LF.
            if window[i - 1] != b'\r' {
                return Err(HttpError::Malformed("bare LF"));
            }
            if i >= 3 && window[i - 3] == b'\r' && window[i - 2] == b'\n' {
                return Ok(Scan::Complete(i + 1));
            }
        } else if window.get(i + 1).is_some_and(|&next| next != b'\n') {
            return Err(HttpError::Malformed("bare CR"));
        }
    }
    if at_limit {
        Ok(Scan::TooLarge)
    } else {
        Ok(Scan::Partial(window.len()))
    }
}

/// Maps an httparse error. `version` is the version token as received, so a well-formed but
/// unknown version (`HTTP/2.0`, `HTTP/1.2`) gets 505 and garbage gets 400.
pub(crate) fn httparse_error(err: httparse::Error, version: &[u8]) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::HeadTooLarge("too many header fields"),
        httparse::Error::Version => match version {
            // 1.0 and 1.1 are supported: httparse refusing one means the line around it is bad.
            b"HTTP/1.0" | b"HTTP/1.1" => HttpError::Malformed("malformed start line"),
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                HttpError::UnsupportedVersion
            }
            _ => HttpError::Malformed("invalid HTTP version"),
        },
        httparse::Error::HeaderName => HttpError::Malformed("invalid field name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid field value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status line"),
        httparse::Error::Token => HttpError::Malformed("invalid request line"),
    }
}

/// Which side a head came from; decides which fields are dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Request,
    Response { status: u16 },
}

/// What the fields of a head say about framing, routing and the connection.
#[derive(Default)]
pub(crate) struct FieldFacts {
    pub host: Option<Span>,
    pub host_count: u32,
    pub content_length: Option<u64>,
    pub content_length_count: u32,
    pub content_length_differs: bool,
    pub codings: TransferCodings,
    pub connection: ConnectionOptions,
    pub has_upgrade: bool,
    pub expect_continue: bool,
}

/// Turns httparse's fields (parsed from `buf[..head_len]`) into offsets appended to `fields`
/// (which the caller cleared), applying the checks httparse leaves out.
pub(crate) fn collect_fields(
    buf: &[u8],
    head_len: usize,
    headers: &[httparse::Header<'_>],
    role: Role,
    fields: &mut Vec<HeaderField>,
) -> Result<FieldFacts, HttpError> {
    let base = buf.as_ptr() as usize;
    let mut facts = FieldFacts::default();
    let switching = role == Role::Response { status: 101 };
    for header in headers {
        let name = header.name.as_bytes();
        let value = header.value;
        let name_start = name.as_ptr() as usize - base;
        let value_start = value.as_ptr() as usize - base;
        if let Some(previous) = fields.last_mut() {
            previous.line.end = name_start as u32;
        }
        let (kind, aliased) = classify_name(name);
        if aliased {
            return Err(HttpError::Malformed(
                "underscore in a well-known field name",
            ));
        }
        let mut drop = false;
        match kind {
            FieldKind::Host => {
                ascii_only(value, "non-ASCII Host")?;
                facts.host_count += 1;
                facts
                    .host
                    .get_or_insert(Span::new(value_start, value_start + value.len()));
            }
            FieldKind::ContentLength => {
                let n = content_length_digits(value)
                    .ok_or(HttpError::Malformed("invalid Content-Length"))?;
                facts.content_length_count += 1;
                match facts.content_length {
                    None => facts.content_length = Some(n),
                    Some(first) => {
                        facts.content_length_differs |= first != n;
                        // Forward one copy of a repeated (identical) length only.
                        drop = true;
                    }
                }
            }
            FieldKind::TransferEncoding => facts.codings.add(value)?,
            FieldKind::Connection => {
                facts.connection.add(value)?;
                drop = !switching;
            }
            FieldKind::Upgrade => {
                facts.has_upgrade = true;
                drop = !switching;
            }
            FieldKind::KeepAlive
            | FieldKind::ProxyConnection
            | FieldKind::Te
            | FieldKind::Http2Settings
            | FieldKind::ClientCert => drop = true,
            FieldKind::Expect => {
                facts.expect_continue |= value.eq_ignore_ascii_case(b"100-continue")
            }
            FieldKind::XForwardedFor
            | FieldKind::XForwardedProto
            | FieldKind::XForwardedHost
            | FieldKind::XForwardedPort
            | FieldKind::Forwarded
            | FieldKind::XRequestId
            | FieldKind::Trailer
            | FieldKind::Other => {}
        }
        fields.push(HeaderField {
            name: Span::new(name_start, name_start + name.len()),
            value: Span::new(value_start, value_start + value.len()),
            line: Span::new(name_start, head_len - 2),
            drop,
            kind,
        });
    }
    if facts.connection.lists_other {
        let keep = switching.then_some(FieldKind::Upgrade);
        super::fields::drop_connection_listed(buf, fields, keep);
    }
    Ok(facts)
}

fn ascii_only(value: &[u8], why: &'static str) -> Result<(), HttpError> {
    if value.is_ascii() {
        Ok(())
    } else {
        Err(HttpError::Malformed(why))
    }
}

#[cfg(test)]
mod tests {
    use super::{scan_exact, scan_head, Scan};
    use crate::http::test_rng::Rng;
    use crate::http::{parse_request, parse_response, HeadLimits, HttpError};

    #[test]
    fn the_line_at_a_time_scan_agrees_with_the_byte_at_a_time_one() {
        // Heads of CR, LF and a little text, resumed from any offset. The fast path answers
        // what the exact scan answers, except that it takes a head with a bare CR (and no bare
        // LF) as complete; the parsers must then refuse it with the exact scan's verdict.
        let alphabet = b"\r\n\r\nab: ";
        let mut rng = Rng(0x0dd_c0de_5ca1_ab1e);
        let mut fields = Vec::new();
        let mut handed_to_the_parsers = 0;
        for round in 0..20_000 {
            let len = 1 + rng.below(40);
            let mut buf: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            buf[0] = b'G';
            let limit = 8 + rng.below(40);
            let scanned = if round % 2 == 0 {
                0
            } else {
                rng.below(len + 1)
            };
            let window = &buf[..len.min(limit)];
            let start = scanned.saturating_sub(3).min(window.len());
            let fast = scan_head(&buf, scanned, limit);
            let exact = scan_exact(window, start, len >= limit);
            let shown = String::from_utf8_lossy(&buf);
            if fast == exact {
                continue;
            }
            let bare_cr = HttpError::Malformed("bare CR");
            assert_eq!(exact, Err(bare_cr.clone()), "{shown:?} from {scanned}");
            assert!(matches!(fast, Ok(Scan::Complete(_))), "{shown:?}: {fast:?}");
            if scanned > 0 {
                continue; // the parsers look at the whole head: only a fresh start compares
            }
            handed_to_the_parsers += 1;
            let limits = HeadLimits {
                max_head_bytes: limit,
                ..HeadLimits::default()
            };
            let refused = parse_request(&buf, 0, &limits, &mut fields).err();
            assert_eq!(refused, Some(bare_cr.clone()), "{shown:?} as a request");
            let mut response = b"HTTP/1.1 200".to_vec();
            response.extend_from_slice(&buf[1..]);
            let limits = HeadLimits {
                max_head_bytes: limit + 11,
                ..HeadLimits::default()
            };
            let refused = parse_response(&response, 0, false, &limits, &mut fields).err();
            assert_eq!(refused, Some(bare_cr), "{shown:?} as a response");
        }
        assert!(
            handed_to_the_parsers > 40,
            "{handed_to_the_parsers} heads compared"
        );
    }

    /// A head built from `start`, some of `lines` and an end, each line ended by a terminator
    /// that is usually CRLF, with now and then one byte replaced by a troublesome one.
    fn mangled_head(rng: &mut Rng, start: &[&str], lines: &[&str]) -> Vec<u8> {
        const ENDS: [&[u8]; 6] = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"];
        let end = |rng: &mut Rng| ENDS[if rng.below(12) == 0 { rng.below(6) } else { 0 }];
        let mut buf = Vec::new();
        if rng.below(30) == 0 {
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(start[rng.below(start.len())].as_bytes());
        buf.extend_from_slice(end(rng));
        if rng.below(4) != 0 {
            buf.extend_from_slice(b"Host: a\r\n");
        }
        for _ in 0..rng.below(5) {
            buf.extend_from_slice(lines[rng.below(lines.len())].as_bytes());
            buf.extend_from_slice(end(rng));
        }
        buf.extend_from_slice(end(rng));
        if rng.below(3) == 0 {
            buf.extend_from_slice(b"abc\r\nGET");
        }
        if rng.below(5) == 0 {
            let odd = b"\r\n :\t\0\x7f\xe9_,";
            let at = rng.below(buf.len());
            buf[at] = odd[rng.below(odd.len())];
        }
        buf
    }

    #[test]
    fn a_head_parsed_whole_gets_the_verdict_of_the_scan_first() {
        // `scanned == 0` lets a parser try httparse on the whole buffer first; from 1 on (the
        // scan still starts at 0) every head takes the scan. Both must answer alike, fields
        // included, for heads with bare CRs and LFs, odd bytes, body bytes after the head,
        // heads cut short and limits that cut them off.
        let starts = [
            "GET / HTTP/1.1",
            "POST /a?b=1 HTTP/1.0",
            "GET http://h:8/x HTTP/1.1",
            "GET /x HTTP/1.2",
            "OPTIONS * HTTP/1.1",
        ];
        let lines = [
            "Host: b:80",
            "Content-Length: 5",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            "Connection: close, x",
            "x: y",
            "x: y",
            "Accept: */*",
            "X_Forwarded_For: 1",
            " folded",
            "Bad Name: v",
            "A:\tb ",
            "Upgrade: x",
            "Expect: 100-continue",
            "Empty:",
            "Blank: ",
        ];
        let statuses = [
            "HTTP/1.1 200 OK",
            "HTTP/1.0 204 No Content",
            "HTTP/1.1 101 Switching",
            "HTTP/1.1 304 x",
            "HTTP/1.1 99 x",
            "HTTP/2.0 200 OK",
        ];
        let mut rng = Rng(0x5eed_0ff1_e1d5);
        let (mut complete, mut refused) = (0, 0);
        let mut fields = Vec::new();
        let mut fields_scanned = Vec::new();
        for round in 0..30_000 {
            let response = round % 2 == 1;
            let mut buf = if response {
                mangled_head(&mut rng, &statuses, &lines)
            } else {
                mangled_head(&mut rng, &starts, &lines)
            };
            if rng.below(8) == 0 {
                buf.truncate(rng.below(buf.len() + 1));
            }
            let limits = HeadLimits {
                max_head_bytes: if rng.below(6) == 0 {
                    8 + rng.below(60)
                } else {
                    16 * 1024
                },
                max_headers: 2 + rng.below(12),
                max_target_bytes: 6 + rng.below(20),
            };
            let shown = String::from_utf8_lossy(&buf);
            let (whole, scanned) = if response {
                let head_request = round % 6 == 1;
                let whole = parse_response(&buf, 0, head_request, &limits, &mut fields);
                let scanned = parse_response(&buf, 1, head_request, &limits, &mut fields_scanned);
                (format!("{whole:?}"), format!("{scanned:?}"))
            } else {
                let whole = parse_request(&buf, 0, &limits, &mut fields);
                let scanned = parse_request(&buf, 1, &limits, &mut fields_scanned);
                (format!("{whole:?}"), format!("{scanned:?}"))
            };
            assert_eq!(whole, scanned, "{shown:?} with {limits:?}");
            if whole.starts_with("Ok(Complete") {
                assert_eq!(fields, fields_scanned, "{shown:?}");
                complete += 1;
            } else if whole.starts_with("Err") {
                refused += 1;
            }
        }
        // About 6,000 complete and 21,000 refused, for some 30 different reasons.
        assert!(
            complete > 4_000 && refused > 10_000,
            "{complete} complete, {refused} refused"
        );
    }

    #[test]
    fn every_short_ending_gets_the_same_verdict_both_ways() {
        // Every ending of up to four bytes from a troublesome alphabet after heads cut at
        // their most delicate points, with and without pipelined bytes after it.
        let alphabet = b"\r\n: a\t\x7f\x80\0";
        let prefixes: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a",
            b"GET / HTTP/1.1",
            b"HTTP/1.1 200 OK\r\nA: b\r\n",
            b"HTTP/1.1 200 OK\r\nA:",
            b"HTTP/1.1 200",
        ];
        let limits = HeadLimits::default();
        let (mut fields, mut fields_scanned) = (Vec::new(), Vec::new());
        let mut complete = 0;
        for prefix in prefixes {
            let response = prefix.starts_with(b"HTTP");
            for len in 0..=4u32 {
                for mut code in 0..alphabet.len().pow(len) {
                    let mut buf = prefix.to_vec();
                    for _ in 0..len {
                        buf.push(alphabet[code % alphabet.len()]);
                        code /= alphabet.len();
                    }
                    for tail in [&b""[..], b"\r\n\r\nGET / HTTP/1.1\r\n"] {
                        buf.extend_from_slice(tail);
                        let (whole, scanned) = if response {
                            let whole = parse_response(&buf, 0, false, &limits, &mut fields);
                            let scanned =
                                parse_response(&buf, 1, false, &limits, &mut fields_scanned);
                            (format!("{whole:?}"), format!("{scanned:?}"))
                        } else {
                            let whole = parse_request(&buf, 0, &limits, &mut fields);
                            let scanned = parse_request(&buf, 1, &limits, &mut fields_scanned);
                            (format!("{whole:?}"), format!("{scanned:?}"))
                        };
                        let shown = String::from_utf8_lossy(&buf);
                        assert_eq!(whole, scanned, "{shown:?}");
                        assert_eq!(fields, fields_scanned, "{shown:?}");
                        complete += usize::from(whole.starts_with("Ok(Complete"));
                        buf.truncate(buf.len() - tail.len());
                    }
                }
            }
        }
        assert!(complete > 1_000, "{complete} complete heads compared");
    }

    fn status_of(raw: &[u8]) -> Option<u16> {
        let mut fields = Vec::new();
        match parse_request(raw, 0, &HeadLimits::default(), &mut fields) {
            Ok(_) => None,
            Err(e) => Some(e.request_status()),
        }
    }

    #[test]
    fn only_a_well_formed_unknown_version_is_505() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /a b HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            (b"GET /\r\nHost: a\r\n\r\n", 400),
        ];
        for &(raw, want) in cases {
            assert_eq!(
                status_of(raw),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
