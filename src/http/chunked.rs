//! Validation of a chunked body as it streams past: the bytes are forwarded unchanged, this
//! state machine only checks the framing and finds where the body ends.

use super::fields::{is_field_value_byte, is_token_byte};
use super::HttpError;

/// Longest chunk-size line (size plus extensions), in bytes.
const MAX_CHUNK_LINE: u32 = 4096;
/// Largest trailer section (fields plus the final CRLF), in bytes.
const MAX_TRAILER_BYTES: u32 = 16 * 1024;
/// Largest chunk size: one that fits in 63 bits.
const MAX_CHUNK_SIZE: u64 = i64::MAX as u64;

/// How far one call to [`ChunkedDecoder::advance`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that belong to this chunked body (all of it unless `done`).
    pub consumed: usize,
    /// The last chunk and the trailer section ended within the input.
    pub done: bool,
}

/// Where in the grammar of RFC 9112 §7.1 the decoder is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Expecting the first HEXDIG of a chunk-size.
    #[default]
    SizeStart,
    /// In the chunk-size: more HEXDIG, `;`, BWS or CR.
    Size,
    /// BWS after the size: only more whitespace or `;` may follow.
    SizeWs,
    /// After `;`: BWS, then an extension name.
    ExtNameStart,
    ExtName,
    /// BWS after an extension name: `=` or `;` must follow.
    ExtNameWs,
    /// After `=`: BWS, then a token or a quoted-string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// Right after a closing quote: `;`, BWS or CR.
    ExtValueEnd,
    /// BWS after a value: only more whitespace or `;` may follow.
    ExtValueWs,
    /// CR of the chunk-size line seen.
    SizeLf,
    /// Inside chunk data; `remaining` bytes are left.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer field line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    /// An error was returned; the body stays refused.
    Failed,
}

impl State {
    fn in_size_line(self) -> bool {
        matches!(
            self,
            State::SizeStart
                | State::Size
                | State::SizeWs
                | State::ExtNameStart
                | State::ExtName
                | State::ExtNameWs
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtValueEnd
                | State::ExtValueWs
                | State::SizeLf
        )
    }
}

/// Streaming validator of the chunked transfer coding (RFC 9112 §7.1).
///
/// Chunk extensions are checked against the grammar (tokens or quoted-strings, BWS only around
/// `;` and `=`) and ignored; trailer fields must be `token ":" value` lines without CTLs. Chunk
/// data is skipped without being looked at. Input may be split anywhere.
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    data_len: u64,
    state: State,
    /// The chunk-size being read, then the data bytes left in the chunk.
    remaining: u64,
    line_len: u32,
    trailer_len: u32,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder::default()
    }

    /// Feed the next bytes of the body.
    ///
    /// After an error every later call fails too. After `done`, later calls consume nothing.
    pub fn advance(&mut self, input: &[u8]) -> Result<ChunkProgress, HttpError> {
        if self.state == State::Failed {
            return Err(HttpError::Malformed("chunked body already refused"));
        }
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Data => {
                    let left = input.len() - i;
                    let take = if self.remaining < left as u64 {
                        self.remaining as usize
                    } else {
                        left
                    };
                    i += take;
                    self.remaining -= take as u64;
                    self.data_len = self.data_len.saturating_add(take as u64);
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::Done => break,
                _ => {
                    let byte = input[i];
                    i += 1;
                    if let Err(err) = self.step(byte) {
                        self.state = State::Failed;
                        return Err(err);
                    }
                }
            }
        }
        Ok(ChunkProgress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// Total chunk-data bytes seen so far (for body size limits).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Chunk-data bytes seen so far plus the rest of the chunk being read, or the size (so
    /// far) of the chunk whose size line is being read: the least the body will hold, for
    /// refusing a body over a size limit as soon as a chunk-size line announces it.
    pub fn announced_len(&self) -> u64 {
        self.data_len.saturating_add(self.remaining)
    }

    /// Whether the whole body, trailers included, has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use State::*;
        if self.state.in_size_line() {
            self.line_len += 1;
            if self.line_len > MAX_CHUNK_LINE {
                return Err(HttpError::Malformed("chunk extensions too long"));
            }
        } else if self.state != Data && self.state != DataCr && self.state != DataLf {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILER_BYTES {
                return Err(HttpError::HeadTooLarge("trailer section too large"));
            }
        }
        let ws = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            (SizeStart, _) => match hex_value(b) {
                Some(digit) => {
                    self.remaining = digit;
                    Size
                }
                None => return Err(HttpError::Malformed("invalid chunk size")),
            },
            (Size, _) if b.is_ascii_hexdigit() => {
                // 63 bits at most: a server that reads the size into a signed 64-bit integer
                // would see a negative length and frame the body differently.
                if self.remaining > MAX_CHUNK_SIZE >> 4 {
                    return Err(HttpError::Malformed("chunk size overflows"));
                }
                self.remaining = self.remaining << 4 | hex_value(b).unwrap_or(0);
                Size
            }
            (Size | ExtName | ExtToken | ExtValueEnd, b'\r') => SizeLf,
            (Size | SizeWs | ExtName | ExtNameWs | ExtToken | ExtValueEnd | ExtValueWs, b';') => {
                ExtNameStart
            }
            (Size | SizeWs, _) if ws => SizeWs,
            (ExtNameStart, _) if ws => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_token_byte(b) => ExtName,
            (ExtName | ExtNameWs, _) if ws => ExtNameWs,
            (ExtName | ExtNameWs, b'=') => ExtValueStart,
            (ExtValueStart, _) if ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if is_token_byte(b) => ExtToken,
            (ExtToken | ExtValueEnd | ExtValueWs, _) if ws => ExtValueWs,
            (ExtQuoted, b'"') => ExtValueEnd,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted | ExtQuotedPair, _) if is_field_value_byte(b) => ExtQuoted,
            (SizeLf, b'\n') => {
                self.line_len = 0;
                if self.remaining == 0 {
                    self.trailer_len = 0;
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeStart,
            (DataCr | DataLf, _) => {
                return Err(HttpError::Malformed("chunk data not followed by CRLF"))
            }
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart | TrailerName, _) if is_token_byte(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_field_value_byte(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (FinalLf, b'\n') => Done,
            (TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf, _) => {
                return Err(HttpError::Malformed("invalid trailer section"))
            }
            _ => return Err(HttpError::Malformed("invalid chunk-size line")),
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
