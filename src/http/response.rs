//! Response head parsing, with the strictness needed to never relay an ambiguous upstream
//! response to a client.

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
    /// Whether the upstream connection may be reused after this response.
    pub keep_alive: bool,
}

/// Parse a response head from the start of `buf`. `head_request` says whether the request was
/// HEAD (then no body follows whatever the fields say).
pub fn parse_response(
    buf: &[u8],
    scanned: usize,
    head_request: bool,
    limits: &HeadLimits,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<ResponseHead>, HttpError> {
    let _ = (
        buf,
        scanned,
        head_request,
        limits,
        fields,
        Span::EMPTY,
        Version::Http11,
        BodyFraming::Empty,
    );
    Err(HttpError::Malformed("response parser not built yet"))
}
