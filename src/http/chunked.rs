//! Validation of a chunked body as it streams past: the bytes are forwarded unchanged, this
//! state machine only checks the framing and finds where the body ends.

use super::HttpError;

/// How far one call to [`ChunkedDecoder::advance`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that belong to this chunked body (all of it unless `done`).
    pub consumed: usize,
    /// The last chunk and the trailer section ended within the input.
    pub done: bool,
}

/// Streaming validator of the chunked transfer coding (RFC 9112 §7.1).
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    data_len: u64,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder::default()
    }

    /// Feed the next bytes of the body.
    pub fn advance(&mut self, input: &[u8]) -> Result<ChunkProgress, HttpError> {
        let _ = input;
        Err(HttpError::Malformed("chunked decoder not built yet"))
    }

    /// Total chunk-data bytes seen so far (for body size limits).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }
}
