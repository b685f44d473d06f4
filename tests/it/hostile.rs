//! Hostile requests against the real binary: request smuggling (CL.TE, TE.CL, TE.TE
//! obfuscations), strict framing of RFC 9112, malformed request lines and fields, and limits.
//! Every refused request must be answered with the status the codec documents, close the
//! client connection and reach no upstream; every tricky-but-valid request must reach the
//! origin exactly once, with exactly the body the client framed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{catch_all, find, Client, Ringway};
use crate::origin::{Origin, Seen};

/// Limits small enough to reach quickly, so the table can probe both sides of each.
const PROFILE: &str = "[limits]\nmax_head_bytes = 16384\nmax_target_bytes = 8192\n\
                       max_headers = 50\nmax_body_bytes = 1048576\n\n\
                       [timeouts]\nheader_ms = 300\n";
const MAX_HEAD: usize = 16384;
const MAX_TARGET: usize = 8192;
const MAX_HEADERS: usize = 50;

/// How long the origin gets to show a leaked byte after ringway closed the client connection.
const QUIET: Duration = Duration::from_millis(100);

/// What the client saw on one connection: every byte until EOF, and whether EOF came.
struct Settled {
    bytes: Vec<u8>,
    closed: bool,
}

/// Wait until ringway closes the connection (or `limit` passes) and return what it sent. Once
/// this returns `closed`, ringway has finished with the request, so what the origin has or has
/// not received is final (after `QUIET`).
fn settle(stream: &mut TcpStream, limit: Duration) -> Settled {
    let deadline = Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Settled {
                bytes,
                closed: false,
            };
        }
        stream.set_read_timeout(Some(left)).expect("set timeout");
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Settled {
                    bytes,
                    closed: true,
                }
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Settled {
                    bytes,
                    closed: true,
                }
            }
            Err(_) => {
                return Settled {
                    bytes,
                    closed: false,
                }
            }
        }
    }
}

/// Statuses of the complete responses in `bytes` (ringway's error responses carry a length),
/// and how many bytes were left over after them.
fn statuses(bytes: &[u8]) -> (Vec<u16>, usize) {
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(rest) else {
            return (out, rest.len());
        };
        let len = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        out.push(r.code.unwrap_or(0));
        if rest.len() < n + len {
            return (out, rest.len());
        }
        rest = &rest[n + len..];
    }
}

/// A request ringway must refuse itself.
struct Refused {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
}

fn refused(name: &'static str, raw: impl AsRef<[u8]>, status: u16) -> Refused {
    Refused {
        name,
        raw: raw.as_ref().to_vec(),
        status,
    }
}

/// `POST /` with `Host: a`, the given extra field lines (each ending in CRLF) and body.
fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}").into_bytes()
}

/// A chunked `POST /` whose body (after the head) is `body`.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(body);
    raw
}

/// `GET /` with `Host: a` and one more raw field line (CRLF added).
fn get_with(line: &[u8]) -> Vec<u8> {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    raw.extend_from_slice(line);
    raw.extend_from_slice(b"\r\n\r\n");
    raw
}

/// A second request appended to a hostile one: it must never be answered or forwarded,
/// since the connection closes after the refusal.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

fn refused_rows() -> Vec<Refused> {
    let mut rows = vec![
        // Both framings at once (RFC 9112 §6.3 point 3): every order and obfuscation is 400.
        refused(
            "cl_te",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nG",
            ),
            400,
        ),
        refused(
            "te_cl",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "te_chunked_with_cl_zero",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "te_identity_with_cl",
            post(
                "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                "hello",
            ),
            400,
        ),
        refused(
            "te_underscore_alias_with_cl",
            post(
                "Content-Length: 5\r\nTransfer_Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "cl_underscore_alias_with_te",
            post(
                "Transfer-Encoding: chunked\r\nContent_Length: 5\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "cl_underscore_alias",
            post("Content_Length: 5\r\n", "hello"),
            400,
        ),
        // TE.TE: Transfer-Encoding values one parser reads as chunked and another does not.
        refused(
            "te_xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_chunkedx",
            post("Transfer-Encoding: chunkedx\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_chunked_then_identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_identity_then_chunked_is_unsupported",
            post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
        refused(
            "te_gzip_then_chunked_is_unsupported",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
        refused(
            "te_two_lines_gzip_then_chunked",
            post(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            501,
        ),
        refused(
            "te_chunked_twice_in_one_line",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_chunked_on_two_lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "te_chunked_then_empty_line_value",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        refused(
            "te_identity_alone",
            post("Transfer-Encoding: identity\r\n", ""),
            400,
        ),
        refused(
            "te_quoted",
            post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_with_parameter",
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_empty_list_element",
            post("Transfer-Encoding: , chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused("te_empty_value", post("Transfer-Encoding:\r\n", ""), 400),
        refused(
            "te_two_words",
            post("Transfer-Encoding: x chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_vertical_tab",
            post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_form_feed",
            post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_trailing_nul",
            post("Transfer-Encoding: chunked\x00\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_obs_text",
            post("Transfer-Encoding: \u{ff}chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_space_before_colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_tab_before_colon",
            post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_obs_fold_value",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_line_folded_into_previous_field",
            post("X-Pad: x\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        refused(
            "te_on_http10",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        // Content-Length must be digits only, once.
        refused("cl_plus_sign", post("Content-Length: +5\r\n", "hello"), 400),
        refused("cl_negative", post("Content-Length: -1\r\n", ""), 400),
        refused(
            "cl_hex",
            post("Content-Length: 0x10\r\n", "0123456789abcdef"),
            400,
        ),
        refused(
            "cl_two_numbers",
            post("Content-Length: 5 5\r\n", "hello"),
            400,
        ),
        refused(
            "cl_list_same",
            post("Content-Length: 5,5\r\n", "hello"),
            400,
        ),
        refused(
            "cl_list_same_spaced",
            post("Content-Length: 5, 5\r\n", "hello"),
            400,
        ),
        refused(
            "cl_exponent",
            post("Content-Length: 1e1\r\n", "0123456789"),
            400,
        ),
        refused(
            "cl_arabic_digit",
            post("Content-Length: \u{663}\r\n", "abc"),
            400,
        ),
        refused("cl_empty", post("Content-Length:\r\n", ""), 400),
        refused(
            "cl_23_digits",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            400,
        ),
        refused(
            "cl_u64_overflow",
            post("Content-Length: 18446744073709551616\r\n", ""),
            400,
        ),
        refused(
            "cl_repeated_same_value",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            400,
        ),
        refused(
            "cl_repeated_different_values",
            post("Content-Length: 5\r\nContent-Length: 41\r\n", SMUGGLED),
            400,
        ),
        refused(
            "cl_space_before_colon",
            post("Content-Length : 5\r\n", "hello"),
            400,
        ),
        // Chunked bodies: the whole body arrives with the head, so it is checked before any
        // byte goes upstream.
        refused(
            "chunk_size_overflow",
            chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        // 2^63 and up: a server reading sizes as signed 64-bit integers sees a negative one.
        refused(
            "chunk_size_past_63_bits",
            chunked(b"8000000000000000\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_size_u64_max",
            chunked(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        // Only the size line came with the head: it announces more than `max_body_bytes`.
        refused("chunk_size_over_max_body", chunked(b"100001\r\n"), 413),
        refused(
            "chunk_size_over_max_body_partial_line",
            chunked(b"1000000000"),
            413,
        ),
        refused(
            "chunk_size_leading_space",
            chunked(b" 5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_size_trailing_space",
            chunked(b"5 \r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_size_0x_prefix",
            chunked(b"0x5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_size_negative",
            chunked(b"-5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused("chunk_size_empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
        refused("chunk_size_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
        refused(
            "chunk_ext_bare_cr",
            chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_ext_bare_lf",
            chunked(b"5;a\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_ext_ctl",
            chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_ext_ctl_in_quotes",
            chunked(b"5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_data_missing_crlf",
            chunked(b"5\r\nhelloXX0\r\n\r\n"),
            400,
        ),
        refused(
            "chunk_data_longer_than_size",
            chunked(b"3\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        refused("chunk_data_bare_lf", chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
        refused("last_chunk_bare_lf", chunked(b"0\n\n"), 400),
        refused(
            "trailer_obs_fold",
            chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"),
            400,
        ),
        refused("trailer_bare_lf", chunked(b"0\r\nX-T: a\n\r\n"), 400),
        refused("trailer_without_colon", chunked(b"0\r\nX-T a\r\n\r\n"), 400),
        // Line endings and control characters in the head.
        refused("bare_lf_line_endings", b"GET / HTTP/1.1\nHost: a\n\n", 400),
        refused(
            "bare_lf_after_one_field",
            b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
            400,
        ),
        refused("bare_cr_in_value", get_with(b"X-A: a\rb"), 400),
        refused(
            "cr_cr_lf_line_ending",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
            400,
        ),
        refused(
            "bare_cr_in_request_line",
            b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused("obs_fold_continuation", get_with(b"X-A: a\r\n  b"), 400),
        refused("obs_fold_tab_continuation", get_with(b"X-A: a\r\n\tb"), 400),
        refused("nul_in_value", get_with(b"X-A: a\x00b"), 400),
        refused("nul_in_name", get_with(b"X-\x00A: b"), 400),
        refused("soh_in_value", get_with(b"X-A: a\x01b"), 400),
        refused("del_in_value", get_with(b"X-A: a\x7fb"), 400),
        refused("escape_in_value", get_with(b"X-A: \x1b[31m"), 400),
        refused("space_in_name", get_with(b"X A: b"), 400),
        refused("empty_name", get_with(b": b"), 400),
        refused("line_without_colon", get_with(b"X-A b"), 400),
        refused(
            "empty_line_before_request_line",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "whitespace_before_first_field",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            400,
        ),
        refused(
            "connection_option_not_a_token",
            get_with(b"Connection: a b"),
            400,
        ),
        // Host: exactly one, and a valid uri-host.
        refused("host_missing", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
        refused("host_twice", get_with(b"Host: b"), 400),
        refused("host_twice_same", get_with(b"Host: a"), 400),
        refused(
            "host_with_space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        refused(
            "host_with_userinfo",
            b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
            400,
        ),
        refused("host_empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        refused(
            "host_with_path",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            400,
        ),
        refused(
            "host_long_port",
            b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n",
            400,
        ),
        refused(
            "host_non_ascii",
            "GET / HTTP/1.1\r\nHost: h\u{e9}\r\n\r\n",
            400,
        ),
        refused(
            "forwarded_for_underscore_alias",
            get_with(b"X_Forwarded_For: 10.0.0.1"),
            400,
        ),
        // Request line.
        refused(
            "absolute_form_with_userinfo",
            b"GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "absolute_form_ftp",
            b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "absolute_form_query_without_path",
            b"GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "double_space_after_method",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "tab_after_method",
            b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "space_after_version",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "lowercase_version",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused("version_1_2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        refused("version_2_0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        refused("version_0_9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        refused("version_missing", b"GET /\r\nHost: a\r\n\r\n", 400),
        refused(
            "space_in_target",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "space_in_target_bad_version",
            b"GET /a b HTTP/2.0\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "fragment_in_target",
            b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "non_ascii_target",
            "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "asterisk_form_outside_options",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "method_not_a_token",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        refused(
            "connect",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            405,
        ),
        // Limits.
        refused(
            "target_over_limit",
            format!(
                "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "t".repeat(MAX_TARGET)
            ),
            414,
        ),
        refused(
            "request_line_never_ends",
            format!("GET /{}", "t".repeat(MAX_HEAD - 5)),
            414,
        ),
        refused(
            "too_many_fields",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                "X-F: v\r\n".repeat(MAX_HEADERS)
            ),
            431,
        ),
        refused("head_over_limit", head_over_limit(), 431),
        refused(
            "body_over_limit",
            post("Content-Length: 2000000\r\n", "0123456789"),
            413,
        ),
    ];
    // Pipelining a second request behind each framing attack must not get it answered or
    // forwarded either.
    for row in &mut rows {
        if row.raw.len() < 1024 && row.raw.ends_with(b"\r\n\r\n") {
            row.raw.extend_from_slice(SMUGGLED.as_bytes());
        }
    }
    rows
}

/// Exactly `MAX_HEAD` bytes of a head that has not ended: all of it is read before ringway
/// answers, so the answer cannot be lost to a reset.
fn head_over_limit() -> Vec<u8> {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    let line = format!("X-Pad: {}\r\n", "p".repeat(500));
    while raw.len() + line.len() < MAX_HEAD {
        raw.extend_from_slice(line.as_bytes());
    }
    raw.extend_from_slice(b"X-Last: ");
    raw.resize(MAX_HEAD, b'q');
    raw
}

#[test]
fn hostile_requests_are_refused_and_reach_no_upstream() {
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    let rows = refused_rows();
    let mut failures = Vec::new();
    for row in &rows {
        let mut stream = TcpStream::connect(rw.addr).expect("connect");
        // A refused request may be answered before it is all written; that is fine.
        let _ = stream.write_all(&row.raw);
        let seen = settle(&mut stream, Duration::from_secs(3));
        std::thread::sleep(QUIET);
        let (got, leftover) = statuses(&seen.bytes);
        let mut problems = Vec::new();
        if got != [row.status] {
            problems.push(format!("statuses {got:?}, want [{}]", row.status));
        }
        if leftover != 0 {
            problems.push(format!("{leftover} bytes after the response"));
        }
        if !seen.closed {
            problems.push("connection not closed".to_string());
        }
        if origin.connections() != 0 || !origin.raw().is_empty() {
            problems.push(format!(
                "origin got {} connection(s) and {:?}",
                origin.connections(),
                String::from_utf8_lossy(&origin.raw())
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    sent {:?}\n    got  {:?}",
                row.name,
                problems.join("; "),
                String::from_utf8_lossy(&row.raw[..row.raw.len().min(200)]),
                String::from_utf8_lossy(&seen.bytes[..seen.bytes.len().min(200)]),
            ));
            // A leak would be blamed on every later row too.
            if origin.connections() != 0 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_head_that_never_ends_times_out_with_408() {
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    let cases: [(&str, &[u8], Duration); 3] = [
        (
            "unfinished_head",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            Duration::ZERO,
        ),
        (
            "trickled_head",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa",
            Duration::from_millis(40),
        ),
        ("request_line_only", b"GET / HTTP/1.1", Duration::ZERO),
    ];
    for (name, raw, gap) in cases {
        let start = Instant::now();
        let mut stream = TcpStream::connect(rw.addr).expect("connect");
        if gap.is_zero() {
            stream.write_all(raw).expect("write");
        } else {
            // One byte at a time, each well inside the deadline: the deadline covers the whole
            // head, not each read.
            for b in raw {
                if stream.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(gap);
            }
        }
        let seen = settle(&mut stream, Duration::from_secs(5));
        let elapsed = start.elapsed();
        let (got, _) = statuses(&seen.bytes);
        assert_eq!(
            got,
            [408],
            "{name}: {:?}",
            String::from_utf8_lossy(&seen.bytes)
        );
        assert!(seen.closed, "{name}: connection not closed");
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
            "{name}: answered after {elapsed:?}, header_ms is 300"
        );
    }
    std::thread::sleep(QUIET);
    assert_eq!(
        origin.connections(),
        0,
        "{}",
        String::from_utf8_lossy(&origin.raw())
    );
}

/// A request ringway must accept and forward exactly once.
struct Accepted {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    /// The client connection stays usable for another request.
    keep_alive: bool,
    /// Checks on what the origin received for this row.
    check: fn(&[Seen]) -> Result<(), String>,
}

fn accepted(
    name: &'static str,
    raw: impl AsRef<[u8]>,
    keep_alive: bool,
    check: fn(&[Seen]) -> Result<(), String>,
) -> Accepted {
    Accepted {
        name,
        raw: raw.as_ref().to_vec(),
        status: 200,
        keep_alive,
        check,
    }
}

fn one(seen: &[Seen]) -> Result<&Seen, String> {
    match seen {
        [s] => Ok(s),
        _ => Err(format!(
            "origin saw {} requests: {:?}",
            seen.len(),
            seen.iter().map(|s| &s.target).collect::<Vec<_>>()
        )),
    }
}

fn body_is(seen: &[Seen], want: &[u8]) -> Result<(), String> {
    let s = one(seen)?;
    if s.body != want {
        return Err(format!(
            "body {:?}, want {:?}",
            String::from_utf8_lossy(&s.body),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn ensure(ok: bool, what: &str, s: &Seen) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}; origin saw {:?}",
            String::from_utf8_lossy(&s.raw)
        ))
    }
}

/// A request hidden in a body; it must arrive at the origin as body bytes, never as a request.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Hidden: 1\r\n\r\n";

fn accepted_rows() -> Vec<Accepted> {
    vec![
        accepted(
            "connection_lists_content_length",
            post("Connection: Content-Length\r\nContent-Length: 5\r\n", "hello"),
            true,
            |seen| {
                body_is(seen, b"hello")?;
                let s = &seen[0];
                ensure(s.header("content-length") == Some("5"), "Content-Length kept", s)
            },
        ),
        accepted(
            "connection_lists_transfer_encoding",
            post(
                "Connection: Transfer-Encoding, X-Drop\r\nX-Drop: 1\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            true,
            |seen| {
                body_is(seen, b"hello")?;
                let s = &seen[0];
                ensure(s.header("transfer-encoding") == Some("chunked"), "TE kept", s)?;
                ensure(s.header("x-drop").is_none(), "listed field dropped", s)
            },
        ),
        accepted(
            "connection_lists_host",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n",
            true,
            |seen| {
                let s = one(seen)?;
                ensure(s.headers_named("host").len() == 1, "exactly one Host", s)
            },
        ),
        accepted(
            "chunked_with_trailers",
            chunked(b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nContent-Length: 99\r\n\r\n"),
            true,
            |seen| {
                body_is(seen, b"hello")?;
                let s = &seen[0];
                ensure(s.header("x-trailer").is_none(), "trailer not in the head", s)?;
                ensure(s.header("content-length").is_none(), "no Content-Length in head", s)?;
                ensure(
                    find(&s.raw, b"0\r\nX-Trailer: t\r\nContent-Length: 99\r\n\r\n").is_some(),
                    "trailer section relayed after the last chunk",
                    s,
                )
            },
        ),
        accepted(
            "chunked_uppercase_coding",
            post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "chunked_with_tab_ows",
            post("Transfer-Encoding:\tchunked\t\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "chunked_with_extensions",
            chunked(b"5;name=value;q=\"a b\\\"c\" ; x\r\nhello\r\n0;last\r\n\r\n"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "chunk_size_leading_zeros",
            chunked(b"0005\r\nhello\r\n000\r\n\r\n"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "chunk_hiding_a_request",
            chunked(format!("{:x}\r\n0\r\n\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len() + 5).as_bytes()),
            true,
            |seen| body_is(seen, format!("0\r\n\r\n{HIDDEN}").as_bytes()),
        ),
        accepted(
            "content_length_body_hiding_a_request",
            post(&format!("Content-Length: {}\r\n", HIDDEN.len()), HIDDEN),
            true,
            |seen| body_is(seen, HIDDEN.as_bytes()),
        ),
        accepted(
            "get_with_a_body",
            format!("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{HIDDEN}", HIDDEN.len()),
            true,
            |seen| body_is(seen, HIDDEN.as_bytes()),
        ),
        accepted(
            "content_length_with_trailing_ows",
            post("Content-Length: 5 \t\r\n", "hello"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "content_length_leading_zeros",
            post("Content-Length: 005\r\n", "hello"),
            true,
            |seen| body_is(seen, b"hello"),
        ),
        accepted(
            "content_length_zero",
            post("Content-Length: 0\r\n", ""),
            true,
            |seen| body_is(seen, b""),
        ),
        accepted(
            "expect_unknown_value",
            post("Expect: 200-ok\r\nContent-Length: 5\r\n", "hello"),
            true,
            |seen| {
                body_is(seen, b"hello")?;
                ensure(seen[0].header("expect").is_none(), "Expect not forwarded", &seen[0])
            },
        ),
        accepted(
            "expect_continue_with_body_already_sent",
            post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"),
            true,
            |seen| {
                body_is(seen, b"hello")?;
                ensure(seen[0].header("expect").is_none(), "Expect not forwarded", &seen[0])
            },
        ),
        accepted(
            "connection_close_and_keep_alive",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
            false,
            |seen| one(seen).map(|_| ()),
        ),
        accepted(
            "http10_with_body",
            b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            false,
            |seen| {
                body_is(seen, b"hello")?;
                ensure(seen[0].version == 0, "forwarded as HTTP/1.0", &seen[0])
            },
        ),
        accepted(
            "http10_without_host",
            b"GET /old HTTP/1.0\r\n\r\n",
            false,
            |seen| one(seen).and_then(|s| ensure(s.target == "/old", "target", s)),
        ),
        accepted(
            "absolute_form_target",
            b"GET http://a.example/abs?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
            true,
            |seen| one(seen).and_then(|s| ensure(s.target == "/abs?q=1", "origin-form target", s)),
        ),
        accepted(
            "target_just_under_limit",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "t".repeat(7999)),
            true,
            |seen| one(seen).and_then(|s| ensure(s.target.len() == 8000, "8000-byte target", s)),
        ),
        accepted(
            "fields_just_under_the_count_limit",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                "X-F: v\r\n".repeat(MAX_HEADERS - 1)
            ),
            true,
            |seen| one(seen).and_then(|s| ensure(s.headers_named("x-f").len() == 49, "fields", s)),
        ),
        accepted(
            "obs_text_in_a_value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n",
            true,
            |seen| {
                let s = one(seen)?;
                ensure(find(&s.raw, b"X-Latin: caf\xe9\r\n").is_some(), "value relayed as-is", s)
            },
        ),
        accepted(
            "client_hop_by_hop_fields_dropped",
            b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n",
            true,
            |seen| {
                let s = one(seen)?;
                for name in ["keep-alive", "proxy-connection", "te", "upgrade"] {
                    ensure(s.header(name).is_none(), name, s)?;
                }
                Ok(())
            },
        ),
    ]
}

#[test]
fn hostile_but_valid_requests_reach_the_origin_exactly_once() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    let rows = accepted_rows();
    let mut failures = Vec::new();
    for row in &rows {
        let before = origin.seen().len();
        let mut c = Client::connect(rw.addr);
        c.send(&row.raw);
        let resp = c.read_response(false);
        let mut problems = Vec::new();
        match &resp {
            Some(r) if r.status == row.status => {}
            other => problems.push(format!(
                "response {:?}, want {}",
                other.as_ref().map(|r| (r.status, r.text())),
                row.status
            )),
        }
        // The framing must have ended exactly where the client meant: a follow-up request on
        // the same connection is answered as itself.
        if row.keep_alive && resp.is_some() {
            c.send(b"GET /follow-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            match c.read_response(false) {
                Some(r) if r.status == 200 && r.text() == "GET /follow-up" => {}
                other => problems.push(format!(
                    "follow-up got {:?}",
                    other.map(|r| (r.status, r.text()))
                )),
            }
        }
        if !c.is_closed(Duration::from_secs(2)) {
            problems.push("connection not closed after Connection: close".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
        let seen = origin.seen();
        let mut mine: Vec<Seen> = seen[before..].to_vec();
        if row.keep_alive {
            match mine.pop() {
                Some(s) if s.target == "/follow-up" => {}
                other => problems.push(format!(
                    "last request at the origin {:?}, want the follow-up",
                    other.map(|s| s.target)
                )),
            }
        }
        if let Err(e) = (row.check)(&mine) {
            problems.push(e);
        }
        if mine.iter().any(|s| s.target == "/smuggled") {
            problems.push("a hidden request reached the origin".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", row.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n"),
        rw.log()
    );
}

#[test]
fn hostile_expect_continue_gets_100_before_the_body() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    let mut c = Client::connect(rw.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response(false).expect("an interim response");
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let resp = c.read_response(false).expect("a final response");
    assert_eq!(resp.status, 200);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("expect"), None);
}

#[test]
fn hostile_pipeline_is_answered_in_order_and_framed_per_request() {
    let origin = Origin::echo();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    let mut c = Client::connect(rw.addr);
    let mut raw = post(&format!("Content-Length: {}\r\n", HIDDEN.len()), HIDDEN);
    raw.extend_from_slice(b"POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    raw.extend_from_slice(format!("{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len()).as_bytes());
    raw.extend_from_slice(b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    c.send(&raw);
    let texts: Vec<String> = (0..3)
        .map(|i| {
            let r = c
                .read_response(false)
                .unwrap_or_else(|| panic!("response {i}"));
            assert_eq!(r.status, 200, "response {i}");
            r.text()
        })
        .collect();
    assert_eq!(texts, ["POST /", "POST /two", "GET /three"]);
    assert!(c.is_closed(Duration::from_secs(2)));
    let seen = origin.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/", "/two", "/three"]);
    assert_eq!(seen[0].body, HIDDEN.as_bytes());
    assert_eq!(seen[1].body, HIDDEN.as_bytes());
}

#[test]
fn hostile_absolute_form_target_overrides_a_passed_host() {
    let origin = Origin::echo();
    let routes = serde_json::json!({
        "/vulcand/backends/b1/backend": {"Type": "http"},
        "/vulcand/backends/b1/servers/s1": {"URL": format!("http://{}", origin.addr)},
        "/vulcand/frontends/f1/frontend": {
            "Type": "http",
            "BackendId": "b1",
            "Route": "PathPrefix(`/`)",
            "Settings": {"PassHostHeader": true}
        }
    });
    let rw = Ringway::start(&routes.to_string(), PROFILE);
    let mut c = Client::connect(rw.addr);
    // RFC 9112 §3.2.2: a proxy ignores Host when the target is in absolute form and
    // forwards the target's authority instead, or router and origin disagree on the host.
    c.send(
        b"GET http://good.example/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    let r = c.read_response(false).expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/x");
    assert_eq!(
        seen[0].headers_named("host"),
        ["good.example"],
        "{:?}",
        String::from_utf8_lossy(&seen[0].raw)
    );
}

#[test]
fn hostile_chunk_size_after_the_head_closes_both_connections() {
    // Chunk-size lines that arrive after the head went upstream: the client hears why, and
    // the upstream connection, which holds half a body, is closed, not reused.
    let cases: [(&[u8], u16); 2] = [
        (b"8000000000000000\r\nhello\r\n0\r\n\r\n", 400),
        (b"100000\r\n", 413),
    ];
    let origin = Origin::ok();
    let rw = Ringway::start(&catch_all(&[origin.addr]), PROFILE);
    for (i, (late, status)) in cases.into_iter().enumerate() {
        let mut stream = TcpStream::connect(rw.addr).expect("connect");
        stream
            .write_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            )
            .expect("write the head");
        let deadline = Instant::now() + Duration::from_secs(3);
        let arrived = |o: &Origin| {
            o.raw()
                .windows(10)
                .filter(|w| w == b"5\r\nhello\r\n")
                .count()
        };
        while arrived(&origin) <= i && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            arrived(&origin),
            i + 1,
            "the head and first chunk went upstream"
        );
        stream.write_all(late).expect("write the bad size");
        let seen = settle(&mut stream, Duration::from_secs(3));
        assert_eq!(statuses(&seen.bytes), (vec![status], 0), "case {i}");
        assert!(seen.closed, "case {i}: the client connection closes");
        let deadline = Instant::now() + Duration::from_secs(3);
        while origin.ended() <= i && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            origin.ended(),
            i + 1,
            "case {i}: the upstream connection closes"
        );
        assert!(origin.seen().is_empty(), "no request completed upstream");
        let raw = String::from_utf8_lossy(&origin.raw()).into_owned();
        // The bad size line would follow the first chunk's CRLF (request ids are random hex,
        // so the digits alone could show up in a header).
        assert!(
            !raw.contains("hello\r\n8000000000000000\r\n") && !raw.contains("hello\r\n100000\r\n"),
            "{raw}"
        );
    }
}
