//! Pure HTTP/1.1 codec: request and response heads parsed into offsets, strict framing, chunked
//! body validation. No I/O here; the data plane feeds bytes in and writes slices out.

pub mod chunked;
pub mod error;
pub mod fields;
mod head;
pub mod request;
pub mod response;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod upgrade;

pub use chunked::{ChunkProgress, ChunkedDecoder};
pub use error::HttpError;
pub use fields::{content_length_digits, find_field};
pub use request::{parse_request, RequestHead};
pub use response::{parse_response, ResponseHead};

/// The first `needle` in `hay`: a plain loop over the short strings heads are made of (a host,
/// a path, a status line), memchr's vector search over longer ones.
#[inline]
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < 32 {
        hay.iter().position(|&b| b == needle)
    } else {
        memchr::memchr(needle, hay)
    }
}

/// A byte range inside the buffer a head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub const EMPTY: Span = Span { start: 0, end: 0 };

    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes this span covers in `buf` (the buffer the head was parsed from).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One header field of a parsed head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderField {
    /// Field name as received (case preserved).
    pub name: Span,
    /// Field value with surrounding whitespace trimmed.
    pub value: Span,
    /// The whole line including its CRLF, as forwarded when the field is kept.
    pub line: Span,
    /// True when the proxy must not forward this line: hop-by-hop fields and fields named in
    /// `Connection`. Fields the proxy rewrites (`X-Forwarded-*`, `X-Request-Id`) are left to
    /// the data plane, which knows them by `kind`.
    pub drop: bool,
    /// Which well-known field this is, so the data plane never compares names again.
    pub kind: FieldKind,
}

/// Header fields the proxy treats specially. Everything else is `Other`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldKind {
    #[default]
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Upgrade,
    Te,
    /// The h2c upgrade's settings (RFC 7540 §3.2.1): never forwarded, as h2c is not.
    Http2Settings,
    Trailer,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XForwardedPort,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    XRequestId,
    /// `X-Client-Cert-Subject` / `X-Client-Cert-San`: only ringway says what client
    /// certificate a TLS listener verified; a client's own values are never forwarded.
    ClientCert,
}

impl FieldKind {
    /// The fields that say who sent a request and through what (`X-Forwarded-*`,
    /// `Forwarded`, `X-Request-Id`): the proxy adds its own, and an edge listener replaces
    /// those of an untrusted peer.
    pub fn is_forwarding(self) -> bool {
        matches!(
            self,
            FieldKind::XForwardedFor
                | FieldKind::XForwardedProto
                | FieldKind::XForwardedHost
                | FieldKind::XForwardedPort
                | FieldKind::Forwarded
                | FieldKind::XRequestId
        )
    }
}

/// HTTP version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body of a message is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; validate with [`ChunkedDecoder`].
    Chunked,
    /// Response body runs until the upstream closes the connection.
    UntilClose,
}

/// Limits on what a head may contain, from the profile.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Largest head (request line or status line plus fields plus the blank line), in bytes.
    pub max_head_bytes: usize,
    /// Longest request target, in bytes (414 beyond it).
    pub max_target_bytes: usize,
    /// Most header fields (431 beyond it). The parsers honour at most 256.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 16 * 1024,
            max_target_bytes: 8 * 1024,
            max_headers: 100,
        }
    }
}

/// Result of feeding a buffer to a head parser.
#[derive(Debug)]
pub enum Parsed<T> {
    /// A whole head was found; its length is in the value.
    Complete(T),
    /// More bytes are needed. `scanned` is how far the buffer was checked, so the next call
    /// can resume its search for the end of the head there instead of from byte 0.
    Partial { scanned: usize },
}
