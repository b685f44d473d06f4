//! Chunked bodies: never panic, and cutting the input anywhere changes nothing: the same
//! verdict, the same end of body, the same count of data bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{ChunkedDecoder, HttpError};

/// `(consumed, done, data_len)` or the error, feeding `pieces` in turn until done.
fn feed<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Result<(usize, bool, u64), HttpError> {
    let mut decoder = ChunkedDecoder::new();
    let mut consumed = 0;
    for piece in pieces {
        let progress = decoder.advance(piece)?;
        assert!(progress.consumed <= piece.len());
        consumed += progress.consumed;
        if progress.done {
            return Ok((consumed, true, decoder.data_len()));
        }
        assert_eq!(progress.consumed, piece.len());
    }
    Ok((consumed, false, decoder.data_len()))
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the cuts; the rest is the body.
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 8);
    if rest.len() < cuts {
        return;
    }
    let (offsets, body) = rest.split_at(cuts);
    let mut points: Vec<usize> = offsets
        .iter()
        .map(|&o| usize::from(o) * body.len() / 255)
        .collect();
    points.sort_unstable();
    points.push(body.len());

    let whole = feed(std::iter::once(body));
    let mut start = 0;
    let split = feed(points.iter().map(|&end| {
        let piece = &body[start..end];
        start = end;
        piece
    }));
    let bytes = feed(body.chunks(1));
    for other in [&split, &bytes] {
        match (&whole, other) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b))
            }
            (a, b) => panic!("whole {a:?}, split {b:?}"),
        }
    }
});
