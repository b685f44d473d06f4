//! Chunked body behaviour, including every way the input can be split.

use super::*;
use crate::http::test_rng::Rng;

/// The whole input in one call.
fn run(input: &[u8]) -> Result<(ChunkProgress, u64), HttpError> {
    let mut decoder = ChunkedDecoder::new();
    let progress = decoder.advance(input)?;
    Ok((progress, decoder.data_len()))
}

/// The input cut at `cuts` (sorted offsets), feeding each piece until the body is done, the
/// way the data plane does. Returns the same shape as [`run`].
fn run_split(input: &[u8], cuts: &[usize]) -> Result<(ChunkProgress, u64), HttpError> {
    let mut decoder = ChunkedDecoder::new();
    let mut start = 0;
    let mut consumed = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let progress = decoder.advance(&input[start..end])?;
        consumed += progress.consumed;
        if progress.done {
            return Ok((
                ChunkProgress {
                    consumed,
                    done: true,
                },
                decoder.data_len(),
            ));
        }
        assert_eq!(
            progress.consumed,
            end - start,
            "a body that is not done consumes everything"
        );
        start = end;
    }
    Ok((
        ChunkProgress {
            consumed,
            done: false,
        },
        decoder.data_len(),
    ))
}

fn byte_at_a_time(input: &[u8]) -> Result<(ChunkProgress, u64), HttpError> {
    let cuts: Vec<usize> = (1..input.len()).collect();
    run_split(input, &cuts)
}

fn same_kind(
    a: &Result<(ChunkProgress, u64), HttpError>,
    b: &Result<(ChunkProgress, u64), HttpError>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => false,
    }
}

/// `(what, body, data bytes)`: complete bodies; a pipelined request follows each.
const VALID: &[(&str, &[u8], u64)] = &[
    ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", 5),
    ("empty body", b"0\r\n\r\n", 0),
    ("two chunks", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 5),
    (
        "hex digits in both cases",
        b"a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n",
        21,
    ),
    ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", 5),
    (
        "data that looks like framing",
        b"7\r\n0\r\n\r\n\n\r\r\n0\r\n\r\n",
        7,
    ),
    ("extension", b"5;name\r\nhello\r\n0\r\n\r\n", 5),
    (
        "extension with token value",
        b"5;name=value;x=1\r\nhello\r\n0\r\n\r\n",
        5,
    ),
    (
        "extension with quoted value",
        b"5;n=\"a \\\"q\\\" ;=\"\r\nhello\r\n0\r\n\r\n",
        5,
    ),
    (
        "extension with BWS",
        b"5 ; n = v ;m\t=\t\"x\" \t; k\r\nhello\r\n0\r\n\r\n",
        5,
    ),
    ("extension on the last chunk", b"0;done\r\n\r\n", 0),
    ("trailer", b"2\r\nhi\r\n0\r\nX-Sum: abc\r\n\r\n", 2),
    (
        "trailers with odd values",
        b"0\r\nA:\r\nB: x \t y\r\nC: caf\xc3\xa9\r\n\r\n",
        0,
    ),
];

const PIPELINED: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

#[test]
fn valid_bodies_end_exactly_where_they_end() {
    for &(what, body, data) in VALID {
        let mut input = body.to_vec();
        input.extend_from_slice(PIPELINED);
        let want = (
            ChunkProgress {
                consumed: body.len(),
                done: true,
            },
            data,
        );
        assert_eq!(run(&input), Ok(want), "{what}");
        assert_eq!(byte_at_a_time(&input), Ok(want), "{what} byte by byte");
        for cut in 0..=input.len() {
            assert_eq!(run_split(&input, &[cut]), Ok(want), "{what} cut at {cut}");
        }
    }
}

/// `(what, body)`: refused as `Malformed`.
const MALFORMED: &[(&str, &[u8])] = &[
    ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
    ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("minus sign", b"-1\r\nhello\r\n0\r\n\r\n"),
    ("space before size", b" 5\r\nhello\r\n0\r\n\r\n"),
    ("space after size", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("tab after size", b"5\t\r\nhello\r\n0\r\n\r\n"),
    ("non-hex size", b"g\r\n"),
    ("size overflow", b"10000000000000000\r\n"),
    ("size past 63 bits", b"8000000000000000\r\n"),
    ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
    ("CR CR after size", b"5\r\rhello\r\n0\r\n\r\n"),
    ("data too long", b"5\r\nhelloX\r\n0\r\n\r\n"),
    ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
    ("CR only after data", b"5\r\nhello\r0\r\n\r\n"),
    ("no CRLF after data", b"5\r\nhello0\r\n\r\n"),
    ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n"),
    ("extension without name", b"5;=v\r\nhello\r\n0\r\n\r\n"),
    ("extension without value", b"5;n=\r\nhello\r\n0\r\n\r\n"),
    ("CR in extension", b"5;n\rx\r\nhello\r\n0\r\n\r\n"),
    ("LF in extension", b"5;n\nhello\r\n0\r\n\r\n"),
    ("CTL in extension", b"5;n=\x01\r\nhello\r\n0\r\n\r\n"),
    ("DEL in extension", b"5;n\x7f\r\nhello\r\n0\r\n\r\n"),
    (
        "CR in quoted extension",
        b"5;n=\"a\rb\"\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "LF in quoted extension",
        b"5;n=\"a\nb\"\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "NUL in quoted extension",
        b"5;n=\"a\x00\"\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "text after quoted extension",
        b"5;n=\"a\"b\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "space before CRLF in extension",
        b"5;n \r\nhello\r\n0\r\n\r\n",
    ),
    (
        "space before CRLF after value",
        b"5;n=v \r\nhello\r\n0\r\n\r\n",
    ),
    ("bare LF ending the trailer section", b"0\r\n\n"),
    ("bare LF after a trailer", b"0\r\nX: y\n\r\n"),
    ("obs-fold in trailers", b"0\r\nX: y\r\n z\r\n\r\n"),
    ("trailer without colon", b"0\r\nX\r\n\r\n"),
    ("space before trailer colon", b"0\r\nX : y\r\n\r\n"),
    ("CTL in trailer", b"0\r\nX: a\x01b\r\n\r\n"),
    ("bare CR in trailer", b"0\r\nX: a\rb\r\n\r\n"),
    ("garbage after the last chunk", b"0\r\n\r\r"),
];

#[test]
fn invalid_framing_is_refused_however_it_is_split() {
    for &(what, body) in MALFORMED {
        let whole = run(body);
        assert!(
            matches!(whole, Err(HttpError::Malformed(_))),
            "{what}: {whole:?}"
        );
        assert!(
            same_kind(&byte_at_a_time(body), &whole),
            "{what} byte by byte"
        );
        for cut in 0..=body.len() {
            assert!(
                same_kind(&run_split(body, &[cut]), &whole),
                "{what} cut at {cut}"
            );
        }
    }
}

#[test]
fn largest_chunk_size_is_accepted() {
    let mut decoder = ChunkedDecoder::new();
    let progress = decoder.advance(b"7FFFFFFFFFFFFFFF\r\nabc").unwrap();
    assert_eq!(
        progress,
        ChunkProgress {
            consumed: 21,
            done: false
        }
    );
    assert_eq!(decoder.data_len(), 3);
    assert_eq!(decoder.announced_len(), i64::MAX as u64);
    let mut decoder = ChunkedDecoder::new();
    assert!(decoder.advance(b"00000000000000000000001\r\n").is_ok());
}

#[test]
fn chunk_sizes_past_63_bits_are_refused_before_the_line_ends() {
    // A server reading sizes into a signed 64-bit integer would take these as negative.
    for size in [
        &b"8000000000000000"[..],
        b"FFFFFFFFFFFFFFFF",
        b"10000000000000000",
    ] {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.advance(size),
            Err(HttpError::Malformed("chunk size overflows")),
            "{}",
            String::from_utf8_lossy(size)
        );
    }
}

#[test]
fn the_announced_length_counts_the_chunk_being_declared() {
    let mut decoder = ChunkedDecoder::new();
    decoder.advance(b"5\r\nhel").unwrap();
    assert_eq!((decoder.data_len(), decoder.announced_len()), (3, 5));
    decoder.advance(b"lo\r\n1").unwrap();
    assert_eq!((decoder.data_len(), decoder.announced_len()), (5, 6));
    // A size line still arriving already counts with the digits seen.
    decoder.advance(b"00").unwrap();
    assert_eq!(decoder.announced_len(), 5 + 0x100);
    decoder.advance(b"\r\n").unwrap();
    assert_eq!(decoder.announced_len(), 5 + 0x100);
    let mut decoder = ChunkedDecoder::new();
    decoder.advance(b"0\r\nX: y\r\n\r\n").unwrap();
    assert_eq!(decoder.announced_len(), 0);
}

#[test]
fn data_is_skipped_in_one_step_and_counted() {
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.advance(b"100000\r\n").unwrap().consumed, 8);
    let megabyte = vec![b'\n'; 0x100000];
    assert_eq!(
        decoder.advance(&megabyte).unwrap(),
        ChunkProgress {
            consumed: 0x100000,
            done: false
        }
    );
    assert_eq!(decoder.data_len(), 0x100000);
    let end = decoder.advance(b"\r\n0\r\n\r\nnext").unwrap();
    assert_eq!(
        end,
        ChunkProgress {
            consumed: 7,
            done: true
        }
    );
    assert!(decoder.is_done());
}

#[test]
fn after_the_end_nothing_more_is_consumed() {
    let mut decoder = ChunkedDecoder::new();
    assert!(decoder.advance(b"0\r\n\r\n").unwrap().done);
    assert_eq!(
        decoder.advance(b"more").unwrap(),
        ChunkProgress {
            consumed: 0,
            done: true
        }
    );
    assert_eq!(
        decoder.advance(b"").unwrap(),
        ChunkProgress {
            consumed: 0,
            done: true
        }
    );
}

#[test]
fn after_an_error_every_call_fails() {
    let mut decoder = ChunkedDecoder::new();
    assert!(decoder.advance(b"z").is_err());
    assert!(decoder.advance(b"5\r\nhello\r\n0\r\n\r\n").is_err());
    assert!(decoder.advance(b"").is_err());
}

#[test]
fn oversized_trailers_and_extensions_are_refused() {
    let mut body = b"0\r\n".to_vec();
    while body.len() < 17 * 1024 {
        body.extend_from_slice(b"X-Trailer: 0123456789abcdef0123456789abcdef\r\n");
    }
    body.extend_from_slice(b"\r\n");
    assert!(matches!(run(&body), Err(HttpError::HeadTooLarge(_))));
    assert!(matches!(
        byte_at_a_time(&body),
        Err(HttpError::HeadTooLarge(_))
    ));

    let mut line = b"1;".to_vec();
    line.resize(5000, b'e');
    line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    assert!(matches!(run(&line), Err(HttpError::Malformed(_))));
}

#[test]
fn random_splits_never_change_the_outcome() {
    let mut rng = Rng(0xc0ff_ee00_1234_5678);
    for _ in 0..500 {
        // A random valid body, then the pipelined request.
        let mut body = Vec::new();
        let mut data = 0;
        for _ in 0..rng.below(5) {
            let len = 1 + rng.below(40);
            data += len as u64;
            body.extend_from_slice(format!("{len:x}").as_bytes());
            if rng.below(3) == 0 {
                body.extend_from_slice(b" ;k=\"v\"");
            }
            body.extend_from_slice(b"\r\n");
            body.extend((0..len).map(|_| rng.next() as u8));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        if rng.below(2) == 0 {
            body.extend_from_slice(b"T: v\r\n");
        }
        body.extend_from_slice(b"\r\n");
        let body_len = body.len();
        body.extend_from_slice(PIPELINED);
        let mut cuts: Vec<usize> = (0..rng.below(8))
            .map(|_| rng.below(body.len() + 1))
            .collect();
        cuts.sort_unstable();
        let want = (
            ChunkProgress {
                consumed: body_len,
                done: true,
            },
            data,
        );
        assert_eq!(
            run_split(&body, &cuts),
            Ok(want),
            "{body:?} cut at {cuts:?}"
        );
    }
}

#[test]
fn garbage_never_panics_and_splits_agree() {
    let mut rng = Rng(0x0bad_f00d);
    let alphabet = b"0123456789abcdefxXg \t;=\"\\\r\n:\x00\x7f\xff";
    for _ in 0..3000 {
        let input: Vec<u8> = (0..rng.below(48))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let whole = run(&input);
        let cut = rng.below(input.len() + 1);
        assert!(
            same_kind(&run_split(&input, &[cut]), &whole),
            "{input:?} cut at {cut}"
        );
        assert!(
            same_kind(&byte_at_a_time(&input), &whole),
            "{input:?} byte by byte"
        );
    }
}
