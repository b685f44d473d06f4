//! Responses ringway writes itself: errors with a short body naming the reason, and
//! `100 Continue`.

use std::fmt::Write as _;

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        200 => "OK",
        302 => "Found",
        500 => "Internal Server Error",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Build an error response into `out` (cleared first).
pub fn error_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    keep_alive: bool,
    head_only: bool,
) {
    error_response_with(out, status, reason, "", keep_alive, head_only);
}

/// [`error_response`] with extra CRLF-terminated header lines (e.g. `Retry-After`).
pub fn error_response_with(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    extra_lines: &str,
    keep_alive: bool,
    head_only: bool,
) {
    out.clear();
    let body_len = reason.len() + 1;
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "HTTP/1.1 {status} {}\r\nServer: ringway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {body_len}\r\n{extra_lines}{}\r\n",
        reason_phrase(status),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    out.extend_from_slice(s.as_bytes());
    if !head_only {
        out.extend_from_slice(reason.as_bytes());
        out.push(b'\n');
    }
}

/// A circuit breaker's fallback answer into `out` (cleared first).
pub fn fallback_response(
    out: &mut Vec<u8>,
    a: &super::error::FallbackAnswer,
    keep_alive: bool,
    head_only: bool,
) {
    out.clear();
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "HTTP/1.1 {} {}\r\nServer: ringway\r\nContent-Length: {}\r\n",
        a.status,
        reason_phrase(a.status),
        a.body.len()
    );
    if let Some(ct) = &a.content_type {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    if let Some(location) = &a.location {
        let _ = write!(s, "Location: {location}\r\n");
    }
    if !keep_alive {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
    if !head_only {
        out.extend_from_slice(&a.body);
    }
}

pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_has_length_and_reason() {
        let mut out = Vec::new();
        error_response(&mut out, 404, "no route matches this request", false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 30\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nno route matches this request\n"));
    }

    #[test]
    fn extra_lines_go_into_the_head() {
        let mut out = Vec::new();
        error_response_with(
            &mut out,
            429,
            "slow down",
            "Retry-After: 1\r\n",
            true,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(
            text.contains("\r\nRetry-After: 1\r\n\r\nslow down\n"),
            "{text}"
        );
    }
}
