//! Response head parsing, with the strictness needed to never relay an ambiguous upstream
//! response to a client.

use super::head::{
    collect_fields, field_array, first_bare_cr_or_lf, httparse_error, lines_end_in_crlf, scan_head,
    Role, Scan, MAX_FIELDS,
};
use super::{BodyFraming, HeadLimits, HeaderField, HttpError, Parsed, Span, Version};

/// A parsed response head; spans point into the buffer passed to [`parse_response`].
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    /// The status line without its CRLF.
    pub status_line: Span,
    pub head_len: usize,
    /// How the body is delimited, already taking the request method (HEAD) and the status
    /// (1xx, 204, 304) into account.
    pub framing: BodyFraming,
    /// Whether the upstream connection may be reused after this response (never after 101 or
    /// a body delimited by close).
    pub keep_alive: bool,
}

/// Parse a response head from the start of `buf`. `head_request` says whether the request was
/// HEAD (then no body follows whatever the fields say).
///
/// The same field rules as for requests apply (no bare CR or LF, no obs-fold, no CTLs).
/// Framing follows RFC 9112 §6.3, refusing what it leaves to judgement:
/// - 1xx, 204, 304 and answers to HEAD have no body; a valid Content-Length (the length of the
///   representation) is accepted there, an invalid or conflicting one is still refused;
/// - Transfer-Encoding together with Content-Length, or in an HTTP/1.0 response: `Malformed`;
/// - `chunked` must be the final coding (`gzip, chunked` is fine: the client decodes gzip);
///   Transfer-Encoding without a final `chunked` would mean "read until close", which is
///   refused as `Malformed` rather than relayed;
/// - repeated identical Content-Length lines are accepted (the repeats get `drop`), differing
///   ones are `Malformed`; `Content-Length: 0` is reported as `Empty`;
/// - no length at all: `UntilClose`, and the connection is not kept.
pub fn parse_response(
    buf: &[u8],
    scanned: usize,
    head_request: bool,
    limits: &HeadLimits,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<ResponseHead>, HttpError> {
    fields.clear();
    let max_fields = limits.max_headers.min(MAX_FIELDS);
    let config = httparse::ParserConfig::default();
    if scanned == 0 {
        // A head that arrived whole is parsed at once (see `lines_end_in_crlf`).
        let window = &buf[..buf.len().min(limits.max_head_bytes)];
        let mut storage = field_array();
        let mut response = httparse::Response::new(&mut []);
        if let Ok(httparse::Status::Complete(len)) = config.parse_response_with_uninit_headers(
            &mut response,
            window,
            &mut storage[..max_fields],
        ) {
            if lines_end_in_crlf(&window[..len], response.headers) {
                return finish_response(buf, len, &response, head_request, fields);
            }
        }
    }
    let head_len = match scan_head(buf, scanned, limits.max_head_bytes)? {
        Scan::Complete(len) => len,
        Scan::Partial(scanned) => return Ok(Parsed::Partial { scanned }),
        Scan::TooLarge => return Err(HttpError::HeadTooLarge("response head too large")),
    };
    let head = &buf[..head_len];
    let mut storage = field_array();
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        config.parse_response_with_uninit_headers(&mut response, head, &mut storage[..max_fields]);
    match parsed {
        Ok(httparse::Status::Complete(len)) if len == head_len => {}
        Ok(_) => return Err(HttpError::Malformed("incomplete response head")),
        Err(err) => {
            return Err(first_bare_cr_or_lf(head)
                .unwrap_or_else(|| httparse_error(err, response_version_token(head))))
        }
    }
    finish_response(buf, head_len, &response, head_request, fields)
}

/// The checks after httparse's, on a complete head of `head_len` bytes at the start of `buf`.
fn finish_response(
    buf: &[u8],
    head_len: usize,
    response: &httparse::Response<'_, '_>,
    head_request: bool,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<ResponseHead>, HttpError> {
    let head = &buf[..head_len];
    let (Some(minor), Some(status)) = (response.version, response.code) else {
        return Err(HttpError::Malformed("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(HttpError::Malformed("status code out of range"));
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let status_line_len = super::find_byte(b'\r', head).unwrap_or(0);

    let facts = collect_fields(
        buf,
        head_len,
        response.headers,
        Role::Response { status },
        fields,
    )?;
    if facts.codings.present && facts.content_length_count > 0 {
        return Err(HttpError::Malformed(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if facts.codings.present && version == Version::Http10 {
        return Err(HttpError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    if facts.content_length_differs {
        return Err(HttpError::Malformed("conflicting Content-Length"));
    }
    let codings = facts.codings;
    if codings.present && (codings.chunked != 1 || !codings.chunked_last) {
        return Err(HttpError::Malformed(
            "chunked is not the final transfer coding",
        ));
    }
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        BodyFraming::Empty
    } else if codings.present {
        BodyFraming::Chunked
    } else {
        match facts.content_length {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::UntilClose,
        }
    };

    let conn = facts.connection;
    let keep_alive = !conn.close
        && (version == Version::Http11 || conn.keep_alive)
        && framing != BodyFraming::UntilClose
        // After 101 the connection carries another protocol.
        && status != 101;
    Ok(Parsed::Complete(ResponseHead {
        status,
        version,
        status_line: Span::new(0, status_line_len),
        head_len,
        framing,
        keep_alive,
    }))
}

/// The first word of the status line, for telling 505 from a malformed line.
fn response_version_token(head: &[u8]) -> &[u8] {
    let end = head
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(head.len());
    &head[..end]
}

#[cfg(test)]
mod tests;
