//! Response head behaviour, case by case.

use super::*;
use crate::http::{FieldKind, HeaderField};

fn parse_as(raw: &[u8], head_request: bool) -> Result<(ResponseHead, Vec<HeaderField>), HttpError> {
    let mut fields = Vec::new();
    match parse_response(raw, 0, head_request, &HeadLimits::default(), &mut fields)? {
        Parsed::Complete(head) => Ok((head, fields)),
        Parsed::Partial { .. } => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
    }
}

fn ok(raw: &[u8]) -> (ResponseHead, Vec<HeaderField>) {
    parse_as(raw, false).unwrap_or_else(|err| panic!("{:?}: {err}", String::from_utf8_lossy(raw)))
}

fn text(buf: &[u8], span: Span) -> &str {
    std::str::from_utf8(span.of(buf)).unwrap()
}

/// `(what, response)`: every one of these is refused as `Malformed`.
const MALFORMED: &[(&str, &[u8])] = &[
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
    (
        "bare LF after a field",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
    ),
    (
        "bare CR",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "bare CR in the reason",
        b"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "bare CR in a field name",
        b"HTTP/1.1 200 OK\r\nConte\rnt-Length: 0\r\n\r\n",
    ),
    (
        "bare CR before the blank line",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\r\n\r\n",
    ),
    (
        "leading CRLF",
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "space before the colon",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
    ),
    (
        "NUL in a value",
        b"HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "DEL in a value",
        b"HTTP/1.1 200 OK\r\nX: \x7f\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "status below 100",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "status above 599",
        b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "two-digit status",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "four-digit status",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "non-digit status",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    ),
    ("garbage version", b"HTTP/x 200 OK\r\n\r\n"),
    (
        "TE with CL",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ),
    (
        "TE with CL on 304",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ),
    (
        "differing lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ),
    (
        "signed length",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
    ),
    (
        "length list",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
    ),
    (
        "invalid length on 204",
        b"HTTP/1.1 204 No Content\r\nContent-Length: abc\r\n\r\n",
    ),
    (
        "negative length",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ),
    (
        "TE without chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    ),
    (
        "chunked not last",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    ),
    (
        "chunked twice",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "chunked with a parameter",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
    ),
    (
        "TE in HTTP/1.0",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "Content_Length",
        b"HTTP/1.1 200 OK\r\nContent_Length: 5\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "Connection with junk",
        b"HTTP/1.1 200 OK\r\nConnection: a b\r\nContent-Length: 0\r\n\r\n",
    ),
];

#[test]
fn refuses_ambiguous_or_invalid_responses() {
    for &(what, raw) in MALFORMED {
        for head_request in [false, true] {
            match parse_as(raw, head_request) {
                Err(HttpError::Malformed(_)) => {}
                other => panic!("{what} (HEAD: {head_request}): {other:?}"),
            }
        }
    }
}

#[test]
fn unknown_versions_and_oversized_heads_have_their_own_errors() {
    let got = parse_as(b"HTTP/2.0 200 OK\r\n\r\n", false);
    assert_eq!(got.unwrap_err(), HttpError::UnsupportedVersion);
    let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
    while raw.len() < 17 * 1024 {
        raw.extend_from_slice(b"Set-Cookie: 0123456789012345678901234567890123456789\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse_as(&raw, false),
        Err(HttpError::HeadTooLarge(_))
    ));
    let limits = HeadLimits {
        max_headers: 1,
        ..HeadLimits::default()
    };
    let mut fields = Vec::new();
    let got = parse_response(
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n",
        0,
        false,
        &limits,
        &mut fields,
    );
    assert!(matches!(got, Err(HttpError::HeadTooLarge(_))));
}

/// `(what, response, HEAD request, framing, keep_alive)`.
const FRAMED: &[(&str, &[u8], bool, BodyFraming, bool)] = &[
    (
        "length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
        false,
        BodyFraming::Length(12),
        true,
    ),
    (
        "zero length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "repeated identical length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        false,
        BodyFraming::Length(3),
        true,
    ),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        BodyFraming::Chunked,
        true,
    ),
    (
        "gzip then chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        false,
        BodyFraming::Chunked,
        true,
    ),
    (
        "no length reads until close",
        b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n",
        false,
        BodyFraming::UntilClose,
        false,
    ),
    (
        "close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        false,
        BodyFraming::Length(1),
        false,
    ),
    (
        "HTTP/1.0 closes by default",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        false,
        BodyFraming::Length(1),
        false,
    ),
    (
        "HTTP/1.0 keep-alive",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
        false,
        BodyFraming::Length(1),
        true,
    ),
    (
        "HTTP/1.0 keep-alive without length",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
        false,
        BodyFraming::UntilClose,
        false,
    ),
    (
        "204",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "204 with a length",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "304 with the entity length",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "HEAD with a length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
        true,
        BodyFraming::Empty,
        true,
    ),
    (
        "HEAD with chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
        BodyFraming::Empty,
        true,
    ),
    (
        "HEAD without length",
        b"HTTP/1.1 200 OK\r\n\r\n",
        true,
        BodyFraming::Empty,
        true,
    ),
    (
        "100 Continue",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "103 Early Hints",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "101 is never reused",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        false,
        BodyFraming::Empty,
        false,
    ),
    (
        "no reason phrase",
        b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "obs-text reason",
        b"HTTP/1.1 200 \xc3\x89t\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        false,
        BodyFraming::Empty,
        true,
    ),
    (
        "599",
        b"HTTP/1.1 599 Custom\r\nContent-Length: 2\r\n\r\n",
        false,
        BodyFraming::Length(2),
        true,
    ),
];

#[test]
fn framing_follows_status_method_and_fields() {
    for &(what, raw, head_request, framing, keep_alive) in FRAMED {
        let (head, _) = parse_as(raw, head_request).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(head.framing, framing, "{what}");
        assert_eq!(head.keep_alive, keep_alive, "{what}");
        assert_eq!(head.head_len, raw.len(), "{what}");
    }
}

#[test]
fn status_line_and_fields_are_spans() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer:  s \r\n\r\nhello";
    let (head, fields) = ok(raw);
    assert_eq!(head.status, 200);
    assert_eq!(head.version, Version::Http11);
    assert_eq!(text(raw, head.status_line), "HTTP/1.1 200 OK");
    assert_eq!(head.head_len, raw.len() - 5);
    assert_eq!(text(raw, fields[1].value), "s");
    assert_eq!(text(raw, fields[1].line), "Server:  s \r\n");
    assert_eq!(fields[0].kind, FieldKind::ContentLength);
}

#[test]
fn repeated_length_lines_are_forwarded_once() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
    let (_, fields) = ok(raw);
    assert_eq!(
        fields.iter().map(|f| f.drop).collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn hop_by_hop_fields_are_dropped() {
    let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal, Content-Length\r\nKeep-Alive: 5\r\n\
        Upgrade: h2c\r\nProxy-Connection: x\r\nX-Internal: 1\r\nContent-Length: 0\r\n\
        X-Forwarded-For: 1.1.1.1\r\nX-Request-Id: r\r\n\r\n";
    let (_, fields) = ok(raw);
    let kept: Vec<&str> = fields
        .iter()
        .filter(|f| !f.drop)
        .map(|f| text(raw, f.name))
        .collect();
    assert_eq!(kept, ["Content-Length", "X-Forwarded-For", "X-Request-Id"]);
}

#[test]
fn switching_protocols_keeps_connection_and_upgrade() {
    let raw = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Accept: x\r\n\r\n";
    let (head, fields) = ok(raw);
    assert_eq!(head.status, 101);
    assert!(fields.iter().all(|f| !f.drop));
}

#[test]
fn partial_responses_resume() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX: y\r\n\r\nbody";
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    for step in [1, 3, 8] {
        let mut scanned = 0;
        let mut len = 0;
        let head = loop {
            len = (len + step).min(raw.len());
            match parse_response(&raw[..len], scanned, false, &limits, &mut fields).unwrap() {
                Parsed::Complete(head) => break head,
                Parsed::Partial { scanned: now } => scanned = now,
            }
        };
        assert_eq!(head.head_len, raw.len() - 4, "step {step}");
        assert_eq!(head.framing, BodyFraming::Length(4));
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = crate::http::test_rng::Rng(0xfeed_0042);
    let seed =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x\r\nX: y\r\n\r\n";
    let alphabet = b"\r\n :\t,;\x00\x7f\xff0129aZ";
    let mut fields = Vec::new();
    for round in 0..3000 {
        let mut raw = seed.to_vec();
        if round % 4 == 0 {
            raw = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        }
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(raw.len() + 1);
            raw.insert(at, alphabet[rng.below(alphabet.len())]);
        }
        let head_request = round % 2 == 0;
        if let Ok(Parsed::Complete(head)) =
            parse_response(&raw, 0, head_request, &HeadLimits::default(), &mut fields)
        {
            assert!(head.head_len <= raw.len());
            assert!(head.status_line.end as usize <= head.head_len);
        }
    }
}
