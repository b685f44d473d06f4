//! Request head parsing: httparse for the grammar, then ringway's own strict checks
//! (framing, Host, field syntax) that a proxy needs and httparse leaves out.

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
    /// `Empty`, `Length(n)` or `Chunked`; never `UntilClose` for requests.
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
pub fn parse_request(
    buf: &[u8],
    scanned: usize,
    limits: &HeadLimits,
    fields: &mut Vec<HeaderField>,
) -> Result<Parsed<RequestHead>, HttpError> {
    let _ = (
        buf,
        scanned,
        limits,
        fields,
        Span::EMPTY,
        Version::Http11,
        BodyFraming::Empty,
    );
    Err(HttpError::Malformed("request parser not built yet"))
}
