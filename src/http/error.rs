//! Errors of the HTTP codec: each knows the status the client should see.

use thiserror::Error;

/// Why a head or body could not be accepted. Every variant maps to one status code.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The message is malformed or ambiguous (400 for requests, 502 for responses).
    #[error("bad message: {0}")]
    Malformed(&'static str),
    /// Request target longer than the limit (414).
    #[error("request target too long")]
    TargetTooLong,
    /// Head larger than the limit, or too many fields (431 for requests, 502 for responses).
    #[error("header section too large: {0}")]
    HeadTooLarge(&'static str),
    /// A transfer coding ringway does not implement (501).
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    /// A method a reverse proxy does not serve, such as CONNECT (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// HTTP version other than 1.0 / 1.1 (505).
    #[error("HTTP version not supported")]
    UnsupportedVersion,
}

impl HttpError {
    /// The status a client gets when its request fails with this error.
    pub fn request_status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TargetTooLong => 414,
            HttpError::HeadTooLarge(_) => 431,
            HttpError::UnsupportedCoding => 501,
            HttpError::MethodNotAllowed => 405,
            HttpError::UnsupportedVersion => 505,
        }
    }
}
