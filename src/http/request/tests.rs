//! Request head behaviour, case by case.

use super::*;
use crate::http::test_rng::Rng;
use crate::http::{find_field, FieldKind, HeaderField};

fn parse_with(
    raw: &[u8],
    limits: &HeadLimits,
) -> Result<(RequestHead, Vec<HeaderField>), HttpError> {
    let mut fields = Vec::new();
    match parse_request(raw, 0, limits, &mut fields)? {
        Parsed::Complete(head) => Ok((head, fields)),
        Parsed::Partial { .. } => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
    }
}

fn parse(raw: &[u8]) -> Result<(RequestHead, Vec<HeaderField>), HttpError> {
    parse_with(raw, &HeadLimits::default())
}

fn ok(raw: &[u8]) -> (RequestHead, Vec<HeaderField>) {
    match parse(raw) {
        Ok(parsed) => parsed,
        Err(err) => panic!("{:?} refused: {err}", String::from_utf8_lossy(raw)),
    }
}

fn text(buf: &[u8], span: Span) -> &str {
    std::str::from_utf8(span.of(buf)).unwrap()
}

/// `(what, request, status)`: every one of these is refused with that status.
const REFUSED: &[(&str, &[u8], u16)] = &[
    // Line endings and layout.
    ("bare LF after the request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("bare LF after a field", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    ("bare LF as the blank line", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    ("bare CR inside a value", b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    ("bare CR before CRLF", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
    ("bare CR in the target", b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare CR in the method", b"G\rET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare CR after the version", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
    ("bare CR in a field name", b"GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", 400),
    ("bare CR before the blank line", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n", 400),
    ("bare CR at a value's end", b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\r\n\r\n", 400),
    ("leading CRLF", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("leading LF", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("obs-fold with tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
    ("space before the first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab before the colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    ("TE with space before the colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    ("line without colon", b"GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", 400),
    ("empty field name", b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
    ("non-token field name", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", 400),
    ("quote in field name", b"GET / HTTP/1.1\r\nHost: a\r\nX\"y: z\r\n\r\n", 400),
    ("slash in field name", b"GET / HTTP/1.1\r\nHost: a\r\nX/y: z\r\n\r\n", 400),
    ("non-ASCII field name", b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: z\r\n\r\n", 400),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("SOH in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    ("vertical tab in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", 400),
    ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    // Request line.
    ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("space after the version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    ("no version", b"GET /\r\nHost: a\r\n\r\n", 400),
    ("lowercase version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("garbage version", b"GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    ("HTTP/0.9 style", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    ("non-token method", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    // Target.
    ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("raw UTF-8 in the target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("raw obs-text in the target", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("DEL in the target", b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tab in the target", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("relative target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk outside OPTIONS", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("authority-form outside CONNECT", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("ftp scheme", b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("userinfo in absolute-form", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("empty authority", b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("query without path", b"GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    // Host.
    ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
    ("no Host with absolute-form", b"GET http://a/ HTTP/1.1\r\n\r\n", 400),
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("two Host fields in HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400),
    ("empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
    ("blank Host", b"GET / HTTP/1.1\r\nHost:   \r\n\r\n", 400),
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("Host with two ports", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
    ("Host with a list", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
    ("Host with obs-text", b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400),
    // Content-Length.
    ("signed length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
    ("negative length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("hex length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    ("space inside length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", 400),
    ("length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
    ("length list without space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n", 400),
    ("empty length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    ("exponent length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400),
    ("overflowing length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
    ("two identical lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    ("two different lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    ("Content_Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n", 400),
    ("X_Forwarded_For", b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n", 400),
    // Transfer-Encoding.
    ("TE with CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    ("CL with TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("TE without chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    ("chunked on two lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("chunked with a parameter", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x\r\n\r\n", 400),
    ("quoted chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
    ("chunked with form feed", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0cchunked\r\n\r\n", 400),
    ("chunked with vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400),
    ("chunked with trailing comma", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400),
    ("empty TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
    ("chunked with obs-text", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xff\r\n\r\n", 400),
    ("Transfer_Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", 400),
    ("gzip then chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("gzip line then chunked line", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    // Connection.
    ("Connection with junk", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close;x\r\n\r\n", 400),
    ("Connection with obs-text", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: clos\xe9\r\n\r\n", 400),
];

#[test]
fn refuses_every_ambiguous_or_invalid_request() {
    for &(what, raw, status) in REFUSED {
        match parse(raw) {
            Err(err) => assert_eq!(err.request_status(), status, "{what}: {err}"),
            Ok((head, _)) => panic!("{what}: accepted as {head:?}"),
        }
    }
}

/// `(what, request, framing, keep_alive)` for requests that must be accepted.
const FRAMED: &[(&str, &[u8], BodyFraming, bool)] = &[
    (
        "plain GET",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n",
        BodyFraming::Length(42),
        true,
    ),
    (
        "length with OWS",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 42 \t\r\n\r\n",
        BodyFraming::Length(42),
        true,
    ),
    (
        "length with leading zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
        BodyFraming::Length(7),
        true,
    ),
    (
        "zero length is empty",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "largest length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
        BodyFraming::Length(u64::MAX),
        true,
    ),
    (
        "chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        BodyFraming::Chunked,
        true,
    ),
    (
        "Chunked in capitals",
        b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n",
        BodyFraming::Chunked,
        true,
    ),
    (
        "close",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        BodyFraming::Empty,
        false,
    ),
    (
        "Close among others",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a, , CLOSE\r\n\r\n",
        BodyFraming::Empty,
        false,
    ),
    (
        "HTTP/1.0 closes by default",
        b"GET / HTTP/1.0\r\n\r\n",
        BodyFraming::Empty,
        false,
    ),
    (
        "HTTP/1.0 keep-alive",
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "HTTP/1.0 with length",
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
        BodyFraming::Length(3),
        false,
    ),
    (
        "lowercase method is just another method",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "underscore in an ordinary name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom_Id: 7\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "obs-text in an ordinary value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "Host with port",
        b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "IPv6 Host",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "unknown Expect is left to the caller",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
    (
        "empty value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
        BodyFraming::Empty,
        true,
    ),
];

#[test]
fn accepts_valid_requests_with_their_framing() {
    for &(what, raw, framing, keep_alive) in FRAMED {
        let (head, _) = parse(raw).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(head.framing, framing, "{what}");
        assert_eq!(head.keep_alive, keep_alive, "{what}");
        assert_eq!(head.head_len, raw.len(), "{what}");
    }
}

#[test]
fn origin_form_spans_point_into_the_buffer() {
    let raw = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let (head, fields) = ok(raw);
    assert_eq!(head.method, Method::Get);
    assert_eq!(text(raw, head.method_span), "GET");
    assert_eq!(text(raw, head.target), "/a/b?x=1&y");
    assert_eq!(text(raw, head.path_and_query), "/a/b?x=1&y");
    assert_eq!(text(raw, head.path), "/a/b");
    assert_eq!(text(raw, head.host), "example.com");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.head_len, raw.len());
    assert!(!head.expect_continue && !head.upgrade);
    assert_eq!(fields.len(), 2);
    assert_eq!(text(raw, fields[0].name), "Host");
    assert_eq!(text(raw, fields[0].value), "example.com");
    assert_eq!(text(raw, fields[0].line), "Host: example.com\r\n");
    assert_eq!(fields[0].kind, FieldKind::Host);
    assert_eq!(text(raw, fields[1].line), "Accept: */*\r\n");
    assert_eq!(fields[1].kind, FieldKind::Other);
    assert!(fields.iter().all(|f| !f.drop));
}

#[test]
fn values_are_trimmed_but_lines_are_whole() {
    let raw = b"GET / HTTP/1.1\r\nHost:a\r\nX-Pad: \t  v a l \t \r\nX-Empty:   \r\n\r\n";
    let (_, fields) = ok(raw);
    assert_eq!(text(raw, fields[0].value), "a");
    assert_eq!(text(raw, fields[1].value), "v a l");
    assert_eq!(text(raw, fields[1].line), "X-Pad: \t  v a l \t \r\n");
    assert!(fields[2].value.is_empty());
    assert_eq!(text(raw, fields[2].line), "X-Empty:   \r\n");
}

#[test]
fn pipelined_request_is_left_in_the_buffer() {
    let raw = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: b\r\n\r\n";
    let (first, _) = ok(raw);
    assert_eq!(first.head_len, 30);
    assert_eq!(text(raw, first.target), "/one");
    let rest = &raw[first.head_len..];
    let (second, _) = ok(rest);
    assert_eq!(text(rest, second.target), "/two");
    assert_eq!(text(rest, second.host), "b");
}

#[test]
fn absolute_form_takes_the_authority_as_host() {
    let raw = b"GET http://Svc.internal:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let (head, _) = ok(raw);
    assert_eq!(text(raw, head.host), "Svc.internal:8080");
    assert_eq!(text(raw, head.target), "http://Svc.internal:8080/a/b?q=1");
    assert_eq!(text(raw, head.path_and_query), "/a/b?q=1");
    assert_eq!(text(raw, head.path), "/a/b");

    let raw = b"GET HTTPS://svc HTTP/1.1\r\nHost: svc\r\n\r\n";
    let (head, _) = ok(raw);
    assert_eq!(text(raw, head.host), "svc");
    assert_eq!(text(raw, head.path_and_query), "/");
    assert_eq!(text(raw, head.path), "/");

    let raw = b"GET http://[::1]:81/x HTTP/1.0\r\n\r\n";
    let (head, _) = ok(raw);
    assert_eq!(text(raw, head.host), "[::1]:81");
    assert_eq!(text(raw, head.path), "/x");
}

#[test]
fn asterisk_form_is_for_options() {
    let raw = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    let (head, _) = ok(raw);
    assert_eq!(head.method, Method::Options);
    assert_eq!(text(raw, head.path), "*");
    assert_eq!(text(raw, head.path_and_query), "*");
}

#[test]
fn methods_are_case_sensitive_tokens() {
    let cases = [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("PATCH", Method::Patch),
        ("TRACE", Method::Trace),
        ("PROPFIND", Method::Other),
        ("Get", Method::Other),
    ];
    for (token, method) in cases {
        let raw = format!("{token} / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (head, _) = ok(raw.as_bytes());
        assert_eq!(head.method, method, "{token}");
        assert_eq!(head.method_span.len(), token.len());
    }
}

fn long_target_request(target_len: usize) -> Vec<u8> {
    let mut raw = b"GET /".to_vec();
    raw.resize(4 + target_len, b'a');
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    raw
}

#[test]
fn long_targets_up_to_the_limit_are_accepted() {
    let raw = long_target_request(8000);
    let (head, _) = ok(&raw);
    assert_eq!(head.target.len(), 8000);
    let raw = long_target_request(8192);
    assert_eq!(ok(&raw).0.target.len(), 8192);
}

#[test]
fn targets_past_the_limit_get_414() {
    let raw = long_target_request(8193);
    assert_eq!(parse(&raw).unwrap_err(), HttpError::TargetTooLong);
    // Still arriving: refused once the line cannot fit any more.
    let partial = &long_target_request(9000)[..8300];
    let mut fields = Vec::new();
    let got = parse_request(partial, 0, &HeadLimits::default(), &mut fields);
    assert_eq!(got.unwrap_err(), HttpError::TargetTooLong);
    let partial = &long_target_request(9000)[..8200];
    let got = parse_request(partial, 0, &HeadLimits::default(), &mut fields);
    assert!(matches!(got, Ok(Parsed::Partial { .. })));
}

#[test]
fn a_head_of_exactly_the_limit_is_accepted() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    raw.resize(16 * 1024 - 4, b'p');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(ok(&raw).0.head_len, 16 * 1024);
    raw.insert(40, b'p');
    assert!(matches!(parse(&raw), Err(HttpError::HeadTooLarge(_))));
}

#[test]
fn oversized_heads_and_too_many_fields_get_431() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    while raw.len() < 17 * 1024 {
        raw.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&raw), Err(HttpError::HeadTooLarge(_))));
    // Without its end yet, too.
    let mut fields = Vec::new();
    let got = parse_request(
        &raw[..16 * 1024 + 10],
        0,
        &HeadLimits::default(),
        &mut fields,
    );
    assert!(matches!(got, Err(HttpError::HeadTooLarge(_))));

    let limits = HeadLimits {
        max_headers: 3,
        ..HeadLimits::default()
    };
    let three = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(parse_with(three, &limits).unwrap().1.len(), 3);
    let four = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let err = parse_with(four, &limits).unwrap_err();
    assert_eq!(err.request_status(), 431);
}

#[test]
fn hop_by_hop_fields_are_dropped_and_forwarding_fields_left_to_the_proxy() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
        Proxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.1.1.1\r\n\
        X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: r\r\nTrailer: x\r\nAccept: *\r\n\r\n";
    let (_, fields) = ok(raw);
    let kept: Vec<&str> = fields
        .iter()
        .filter(|f| !f.drop)
        .map(|f| text(raw, f.name))
        .collect();
    assert_eq!(
        kept,
        [
            "Host",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Request-Id",
            "Trailer",
            "Accept"
        ]
    );
}

#[test]
fn connection_listed_fields_are_dropped_but_never_framing_ones() {
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, host\r\nX-Secret: 1\r\n\
        x-other: 2\r\nconnection: X-OTHER,Content-Length , transfer-encoding\r\nContent-Length: 3\r\n\
        X-Kept: 4\r\n\r\n";
    let (head, fields) = ok(raw);
    assert_eq!(head.framing, BodyFraming::Length(3));
    let kept: Vec<&str> = fields
        .iter()
        .filter(|f| !f.drop)
        .map(|f| text(raw, f.name))
        .collect();
    assert_eq!(kept, ["Host", "Content-Length", "X-Kept"]);
}

#[test]
fn framing_fields_are_forwarded_as_received() {
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (_, fields) = ok(raw);
    let te = fields
        .iter()
        .find(|f| f.kind == FieldKind::TransferEncoding)
        .unwrap();
    assert!(!te.drop);
    assert_eq!(
        find_field(raw, &fields, FieldKind::TransferEncoding),
        Some(&b"chunked"[..])
    );
    assert_eq!(find_field(raw, &fields, FieldKind::Expect), None);
}

#[test]
fn expect_continue_only_in_http11() {
    let cases: &[(&[u8], bool)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
        (
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
    ];
    for &(raw, want) in cases {
        assert_eq!(
            ok(raw).0.expect_continue,
            want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn upgrade_needs_the_connection_option_and_the_field() {
    let cases: &[(&[u8], bool)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
    ];
    for &(raw, want) in cases {
        assert_eq!(
            ok(raw).0.upgrade,
            want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn http10_without_host_has_an_empty_host() {
    let raw = b"GET /x HTTP/1.0\r\nAccept: */*\r\n\r\n";
    let (head, _) = ok(raw);
    assert_eq!(head.version, Version::Http10);
    assert_eq!(head.host, Span::EMPTY);
    let raw = b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n";
    assert_eq!(text(raw, ok(raw).0.host), "h");
}

#[test]
fn fields_vec_is_cleared_and_reused() {
    let mut fields = vec![HeaderField::default(); 5];
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let got = parse_request(raw, 0, &HeadLimits::default(), &mut fields).unwrap();
    assert!(matches!(got, Parsed::Complete(_)));
    assert_eq!(fields.len(), 1);
}

/// Feeds `raw` one growing prefix at a time, passing `scanned` back, and returns the result
/// for the whole input.
fn parse_incrementally(raw: &[u8], step: usize) -> Result<Option<RequestHead>, HttpError> {
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    let mut scanned = 0;
    let mut len = 0;
    loop {
        len = (len + step).min(raw.len());
        match parse_request(&raw[..len], scanned, &limits, &mut fields)? {
            Parsed::Complete(head) => return Ok(Some(head)),
            Parsed::Partial { scanned: now } => {
                assert!(
                    now >= scanned && now <= len,
                    "scanned went from {scanned} to {now} at {len}"
                );
                scanned = now;
            }
        }
        if len == raw.len() {
            return Ok(None);
        }
    }
}

#[test]
fn partial_heads_resume_where_they_stopped() {
    let raw = b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nX-A: b\r\n\r\nbody";
    let (whole, _) = ok(raw);
    for step in [1, 2, 3, 5, 7, 64] {
        let head = parse_incrementally(raw, step).unwrap().unwrap();
        assert_eq!(head.head_len, whole.head_len, "step {step}");
        assert_eq!(head.framing, whole.framing);
        assert_eq!(head.target, whole.target);
    }
    let mut fields = Vec::new();
    let got = parse_request(&raw[..20], 0, &HeadLimits::default(), &mut fields).unwrap();
    assert!(matches!(got, Parsed::Partial { scanned: 20 }));
}

#[test]
fn broken_line_endings_are_refused_before_the_head_is_complete() {
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    let bare_lf = b"GET / HTTP/1.1\nHost";
    assert!(parse_request(bare_lf, 0, &limits, &mut fields).is_err());
    // A CR at the end cannot be judged yet...
    let got = parse_request(b"GET / HTTP/1.1\r", 0, &limits, &mut fields).unwrap();
    let Parsed::Partial { scanned } = got else {
        panic!("complete?")
    };
    // ...but is once the next byte is there.
    let got = parse_request(b"GET / HTTP/1.1\rX", scanned, &limits, &mut fields);
    assert!(matches!(got, Err(HttpError::Malformed(_))));
    assert!(parse_request(b"\r", 0, &limits, &mut fields).is_err());
    assert!(matches!(
        parse_request(b"", 0, &limits, &mut fields),
        Ok(Parsed::Partial { scanned: 0 })
    ));
}

const INTERESTING: &[u8] = b"\r\n :\t_-,;\"\x00\x7f\x80\xff0aZ/?#*@[]";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut raw = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(raw.len() + 1);
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        match rng.below(3) {
            0 if at < raw.len() => raw[at] = byte,
            1 if at < raw.len() => {
                raw.remove(at);
            }
            _ => raw.insert(at, byte),
        }
    }
    raw
}

#[test]
fn garbage_never_panics_and_results_do_not_depend_on_splits() {
    let seeds: &[&[u8]] = &[
        b"GET /a?b HTTP/1.1\r\nHost: a:1\r\nConnection: x, close\r\nX: y\r\n\r\n",
        b"POST http://h/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT / HTTP/1.0\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    for round in 0..3000 {
        let raw = if round % 4 == 0 {
            (0..rng.below(80)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        let whole = parse_request(&raw, 0, &limits, &mut fields);
        if let Ok(Parsed::Complete(head)) = &whole {
            assert!(head.head_len <= raw.len());
            for f in &fields {
                assert!(f.line.end as usize <= head.head_len);
                assert!(f.name.start <= f.value.start && f.value.end <= f.line.end);
            }
        }
        let step = 1 + rng.below(9);
        let split = parse_incrementally(&raw, step);
        match (&whole, &split) {
            (Ok(Parsed::Complete(a)), Ok(Some(b))) => assert_eq!(a.head_len, b.head_len),
            (Ok(Parsed::Partial { .. }), Ok(None)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "{raw:?}"),
            _ => panic!("{raw:?}: whole {whole:?}, split {split:?}"),
        }
    }
}
