//! Request head parsing: httparse for the grammar, then ringway's own strict checks
//! (framing, Host, field syntax) that a proxy needs and httparse leaves out.

use super::fields::is_valid_host;
use super::head::{
    collect_fields, field_array, first_bare_cr_or_lf, httparse_error, lines_end_in_crlf, scan_head,
    Role, Scan, MAX_FIELDS,
};
use super::{BodyFraming, HeadLimits, HeaderField, HttpError, Parsed, Span, Version};

/// Request method, with the ones the proxy treats differently named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    Other,
}

impl Method {
    /// The method named by a token; methods are case-sensitive (RFC 9110 §9.1).
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Every method with a name, in declaration order.
    pub const NAMED: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Patch,
        Method::Trace,
        Method::Connect,
    ];

    /// The method's token, for the methods ringway names (`None` for [`Method::Other`]).
    pub fn name(self) -> Option<&'static [u8]> {
        Some(match self {
            Method::Get => b"GET",
            Method::Head => b"HEAD",
            Method::Post => b"POST",
            Method::Put => b"PUT",
            Method::Delete => b"DELETE",
            Method::Options => b"OPTIONS",
            Method::Patch => b"PATCH",
            Method::Trace => b"TRACE",
            Method::Connect => b"CONNECT",
            Method::Other => return None,
        })
    }

    /// RFC 9110 §9.2.2: a retry cannot change the outcome.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// A parsed request head. Every span points into the buffer passed to [`parse_request`];
/// the header fields are in the `Vec` the caller passed.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead {
    pub method: Method,
    pub method_span: Span,
    /// The request target as received.
    pub target: Span,
    /// Path plus query in origin form: equal to `target` for origin-form, the part after the
    /// authority for absolute-form (`http://host/p?q` -> `/p?q`).
    pub path_and_query: Span,
    /// The path alone (no query).
    pub path: Span,
    pub version: Version,
    /// Bytes from the start of the buffer to the end of the blank line that ends the head.
    pub head_len: usize,
    /// Host value (authority of an absolute-form target, else the Host field); `EMPTY` only
    /// for an HTTP/1.0 request without Host.
    pub host: Span,
    /// `Empty`, `Length(n)` or `Chunked`; never `UntilClose` for requests, never `Length(0)`
    /// (`Content-Length: 0` is reported as `Empty`).
    pub framing: BodyFraming,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was present.
    pub expect_continue: bool,
    /// `Connection: upgrade` together with an `Upgrade` field: a protocol switch is requested.
    pub upgrade: bool,
}

/// Parse a request head from the start of `buf`.
///
/// `scanned` is the value returned in the last `Parsed::Partial` for this buffer (0 at first).
/// Fields are written into `fields` (cleared first) so the caller can reuse its allocation.
///
/// Refused with 400: a head starting with an empty line, bare CR or LF, obs-fold, CTLs in
/// values, a missing, repeated or invalid Host (HTTP/1.1), a fragment or non-ASCII byte in the
/// target, `_` aliases of well-known field names, and every framing ambiguity of RFC 9112 §6.
pub fn parse_request(
    buf: &[u8],
    scanned: usize,
    limits: &HeadLimits,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<RequestHead>, HttpError> {
    fields.clear();
    let max_fields = limits.max_headers.min(MAX_FIELDS);
    if scanned == 0 {
        // A head that arrived whole is parsed at once (see `lines_end_in_crlf`); anything
        // else takes the scan below, which gives every verdict.
        let window = &buf[..buf.len().min(limits.max_head_bytes)];
        let mut storage = field_array();
        let mut request = httparse::Request::new(&mut []);
        if let Ok(httparse::Status::Complete(len)) =
            request.parse_with_uninit_headers(window, &mut storage[..max_fields])
        {
            if lines_end_in_crlf(&window[..len], request.headers) {
                return finish_request(buf, len, &request, limits, fields);
            }
        }
    }
    let head_len = match scan_head(buf, scanned, limits.max_head_bytes)? {
        Scan::Complete(len) => len,
        Scan::Partial(scanned) => {
            check_request_line_length(buf, limits)?;
            return Ok(Parsed::Partial { scanned });
        }
        Scan::TooLarge => {
            check_request_line_length(buf, limits)?;
            return Err(HttpError::HeadTooLarge("request head too large"));
        }
    };
    let head = &buf[..head_len];
    let mut storage = field_array();
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut storage[..max_fields]) {
        Ok(httparse::Status::Complete(len)) if len == head_len => {}
        Ok(_) => return Err(HttpError::Malformed("incomplete request head")),
        Err(err) => {
            return Err(first_bare_cr_or_lf(head)
                .unwrap_or_else(|| httparse_error(err, request_version_token(head))))
        }
    }
    finish_request(buf, head_len, &request, limits, fields)
}

/// The checks after httparse's, on a complete head of `head_len` bytes at the start of `buf`.
fn finish_request(
    buf: &[u8],
    head_len: usize,
    request: &httparse::Request<'_, '_>,
    limits: &HeadLimits,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<RequestHead>, HttpError> {
    let base = buf.as_ptr() as usize;
    let (Some(method_str), Some(target_str), Some(minor)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let method = Method::from_token(method_str.as_bytes());
    if method == Method::Connect {
        return Err(HttpError::MethodNotAllowed);
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let target_start = target_str.as_ptr() as usize - base;
    let target = Span::new(target_start, target_start + target_str.len());
    if target.len() > limits.max_target_bytes {
        return Err(HttpError::TargetTooLong);
    }
    let form = split_target(buf, target, method)?;

    let facts = collect_fields(buf, head_len, request.headers, Role::Request, fields)?;
    let host = match (version, facts.host_count) {
        (_, 1) => {
            let host = facts.host.unwrap_or(Span::EMPTY);
            if !is_valid_host(host.of(buf)) {
                return Err(HttpError::Malformed("invalid Host"));
            }
            form.authority.unwrap_or(host)
        }
        (Version::Http10, 0) => form.authority.unwrap_or(Span::EMPTY),
        (_, 0) => return Err(HttpError::Malformed("missing Host")),
        _ => return Err(HttpError::Malformed("repeated Host")),
    };

    let framing = if facts.codings.present {
        if version == Version::Http10 {
            return Err(HttpError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if facts.content_length_count > 0 {
            return Err(HttpError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        facts.codings.check()?;
        BodyFraming::Chunked
    } else {
        match (facts.content_length_count, facts.content_length) {
            (0, _) | (1, Some(0)) => BodyFraming::Empty,
            (1, Some(n)) => BodyFraming::Length(n),
            _ => return Err(HttpError::Malformed("repeated Content-Length")),
        }
    };

    let conn = facts.connection;
    let http11 = version == Version::Http11;
    Ok(Parsed::Complete(RequestHead {
        method,
        method_span: Span::new(0, method_str.len()),
        target,
        path_and_query: form.path_and_query,
        path: form.path,
        version,
        head_len,
        host,
        framing,
        keep_alive: !conn.close && (http11 || conn.keep_alive),
        expect_continue: http11 && facts.expect_continue,
        upgrade: http11 && conn.upgrade && facts.has_upgrade,
    }))
}

/// A request line that is still unfinished past the longest allowed target plus room for the
/// method and version can only end in 414, so say so before the head is complete.
fn check_request_line_length(buf: &[u8], limits: &HeadLimits) -> Result<(), HttpError> {
    let cap = limits.max_target_bytes.saturating_add(64);
    let probe = &buf[..buf.len().min(cap.saturating_add(1))];
    if probe.len() > cap && memchr::memchr(b'\n', probe).is_none() {
        return Err(HttpError::TargetTooLong);
    }
    Ok(())
}

/// What follows the target in the request line (everything after its second SP), for telling
/// 505 from 400. Not the last word: in `GET /a b HTTP/1.1` httparse stops at `b`, and the
/// line is malformed, not of an unsupported version.
fn request_version_token(head: &[u8]) -> &[u8] {
    let line = &head[..memchr::memchr(b'\r', head).unwrap_or(head.len())];
    let mut spaces = memchr::memchr_iter(b' ', line);
    match (spaces.next(), spaces.next()) {
        (Some(_), Some(sp)) => &line[sp + 1..],
        _ => b"",
    }
}

/// The parts of a request target the proxy routes on.
struct TargetForm {
    path_and_query: Span,
    path: Span,
    /// The authority of an absolute-form target.
    authority: Option<Span>,
}

/// Splits a target in origin-form, absolute-form (`http` and `https` only) or asterisk-form
/// (OPTIONS only). Authority-form is CONNECT's, which was refused before.
fn split_target(buf: &[u8], target: Span, method: Method) -> Result<TargetForm, HttpError> {
    let bytes = target.of(buf);
    // httparse refuses CTLs, SP and DEL; raw non-ASCII and fragments are refused here, since
    // an upstream could decode or cut them differently from the router.
    if !bytes.is_ascii() {
        return Err(HttpError::Malformed("non-ASCII byte in request target"));
    }
    if super::find_byte(b'#', bytes).is_some() {
        return Err(HttpError::Malformed("fragment in request target"));
    }
    let start = target.start as usize;
    if bytes.first() == Some(&b'/') {
        return Ok(TargetForm {
            path_and_query: target,
            path: path_of(bytes, start),
            authority: None,
        });
    }
    if bytes == b"*" {
        if method != Method::Options {
            return Err(HttpError::Malformed("asterisk-form target outside OPTIONS"));
        }
        return Ok(TargetForm {
            path_and_query: target,
            path: target,
            authority: None,
        });
    }
    let scheme_len = if starts_with_ignore_case(bytes, b"http://") {
        7
    } else if starts_with_ignore_case(bytes, b"https://") {
        8
    } else {
        return Err(HttpError::Malformed("invalid request target"));
    };
    let rest = &bytes[scheme_len..];
    let authority_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority_start = start + scheme_len;
    let authority = Span::new(authority_start, authority_start + authority_len);
    if !is_valid_host(authority.of(buf)) {
        return Err(HttpError::Malformed("invalid authority in request target"));
    }
    let tail = &rest[authority_len..];
    let tail_start = authority.end as usize;
    let (path_and_query, path) = match tail.first() {
        Some(b'/') => (
            Span::new(tail_start, target.end as usize),
            path_of(tail, tail_start),
        ),
        // `http://host` means path `/`: point at the last `/` of `://`.
        None => {
            let slash = Span::new(authority_start - 1, authority_start);
            (slash, slash)
        }
        // `http://host?q` would need a `/` the buffer does not hold; nobody sends it.
        Some(_) => {
            return Err(HttpError::Malformed(
                "query without a path in request target",
            ))
        }
    };
    Ok(TargetForm {
        path_and_query,
        path,
        authority: Some(authority),
    })
}

fn path_of(path_and_query: &[u8], start: usize) -> Span {
    let len = super::find_byte(b'?', path_and_query).unwrap_or(path_and_query.len());
    Span::new(start, start + len)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests;
