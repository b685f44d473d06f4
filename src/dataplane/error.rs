//! What can go wrong while proxying one request: whose fault it is, what the client is told,
//! and whether another server may be tried.

use thiserror::Error;

use crate::http::HttpError;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Proxy,
}

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(#[from] HttpError),
    #[error("client sent nothing in time")]
    ClientTimeout,
    #[error("client closed the connection")]
    ClientGone,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("no route for this request")]
    NoRoute,
    #[error("backend has no live server")]
    NoServer,
    #[error("cannot connect to upstream: {0}")]
    Connect(std::io::Error),
    #[error("upstream connect timed out")]
    ConnectTimeout,
    #[error("pooled upstream connection was closed by the server")]
    Stale,
    #[error("upstream failed: {0}")]
    UpstreamIo(std::io::Error),
    /// The upstream stopped reading the request body (it may have answered early, e.g. 413).
    /// Not held against the server: a client's upload cannot take a server out of rotation.
    #[error("upstream stopped reading the request body: {0}")]
    BodyWrite(std::io::Error),
    #[error("upstream closed before a complete response")]
    UpstreamClosed,
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("invalid response from upstream: {0}")]
    BadResponse(HttpError),
    #[error("path not exposed on this edge listener")]
    NotExposed,
    #[error("method not allowed on this listener (Allow: {0})")]
    MethodNotAllowed(Box<str>),
    #[error("throttled: {0}")]
    Throttled(crate::throttle::Rejection),
    /// Not a failure: a `rewrite` middleware with `Redirect` answers 302 to this URL.
    #[error("redirected to {0}")]
    Redirect(Box<str>),
    #[error("a rewrite middleware produced an invalid request target")]
    BadRewrite,
    /// A tripped circuit breaker answers in the service's place.
    #[error("circuit breaker {0} is open: fallback answered")]
    Fallback(Box<FallbackAnswer>),
}

/// What a tripped circuit breaker answers: its `response`, or a 302 for its `redirect`.
#[derive(Debug)]
pub struct FallbackAnswer {
    pub breaker: std::sync::Arc<str>,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

impl std::fmt::Display for FallbackAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.breaker)
    }
}

impl ProxyError {
    pub fn blame(&self) -> Blame {
        use ProxyError::*;
        match self {
            BadRequest(_) | ClientTimeout | ClientGone | BodyTooLarge(_) | Throttled(_)
            | NotExposed | MethodNotAllowed(_) => Blame::Client,
            NoRoute | NoServer | Redirect(_) | BadRewrite | Fallback(_) => Blame::Proxy,
            Connect(_) | ConnectTimeout | Stale | UpstreamIo(_) | UpstreamClosed
            | UpstreamTimeout | BadResponse(_) | BodyWrite(_) => Blame::Upstream,
        }
    }

    /// Status and short reason for the client, when nothing of a response was sent yet.
    /// `None` means the client cannot be answered (it is gone).
    pub fn response(&self) -> Option<(u16, &str)> {
        use ProxyError::*;
        Some(match self {
            BadRequest(e) => {
                let status = e.request_status();
                (
                    status,
                    match status {
                        414 => "request target too long",
                        431 => "request header fields too large",
                        501 => "transfer coding not implemented",
                        405 => "method not allowed",
                        505 => "HTTP version not supported",
                        _ => "bad request",
                    },
                )
            }
            ClientTimeout => (408, "request timeout"),
            BodyTooLarge(_) => (413, "request body too large"),
            // The same answer as a missing route: a hidden path looks like no path at all.
            NoRoute | NotExposed => (404, "no route matches this request"),
            MethodNotAllowed(_) => (405, "method not allowed"),
            NoServer => (503, "no live server for this route"),
            Connect(_) | Stale | UpstreamIo(_) | UpstreamClosed => {
                (502, "upstream connection failed")
            }
            BodyWrite(_) => (502, "upstream stopped reading the request body"),
            ConnectTimeout => (504, "upstream connect timed out"),
            BadResponse(_) => (502, "invalid response from upstream"),
            UpstreamTimeout => (504, "upstream timed out"),
            Throttled(r) => (r.status, &*r.message),
            Redirect(_) => (302, "found"),
            Fallback(a) => (a.status, ""),
            BadRewrite => (500, "rewrite produced an invalid request target"),
            ClientGone => return None,
        })
    }

    /// Header lines of the error response beyond the usual ones (`Retry-After` when
    /// throttled), CRLF-terminated.
    pub fn header_lines(&self) -> Option<String> {
        match self {
            ProxyError::Throttled(r) => Some(r.header_lines()),
            ProxyError::MethodNotAllowed(allow) => Some(format!("Allow: {allow}\r\n")),
            ProxyError::Redirect(location) => Some(format!("Location: {location}\r\n")),
            _ => None,
        }
    }

    /// The status vulcand's `ResponseCode()` reports for an attempt that ended this way
    /// without a response (502, or 504 for timeouts); `None` for failures that are not the
    /// upstream's and never earn another attempt.
    pub fn network_status(&self) -> Option<u16> {
        use ProxyError::*;
        match self {
            Connect(_) | Stale | UpstreamIo(_) | UpstreamClosed | BadResponse(_) | BodyWrite(_) => {
                Some(502)
            }
            ConnectTimeout | UpstreamTimeout => Some(504),
            _ => None,
        }
    }

    /// Whether the failure counts against the server (passive health).
    pub fn marks_server(&self) -> bool {
        use ProxyError::*;
        matches!(
            self,
            Connect(_)
                | ConnectTimeout
                | UpstreamIo(_)
                | UpstreamClosed
                | UpstreamTimeout
                | BadResponse(_)
        )
    }
}
