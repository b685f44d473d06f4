//! Request heads: never panic, spans stay inside the head, and feeding the bytes in pieces
//! (passing `scanned` back) gives the same answer as feeding them at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{parse_request, HeadLimits, Parsed};

fuzz_target!(|data: &[u8]| {
    let Some((&step, raw)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    let whole = parse_request(raw, 0, &limits, &mut fields);
    let whole_len = match &whole {
        Ok(Parsed::Complete(head)) => {
            assert!(head.head_len <= raw.len());
            for span in [
                head.method_span,
                head.target,
                head.path_and_query,
                head.path,
                head.host,
            ] {
                assert!(span.start <= span.end && span.end as usize <= head.head_len);
            }
            for field in &fields {
                assert!(field.line.start <= field.name.start);
                assert!(field.name.end <= field.value.start);
                assert!(field.value.end <= field.line.end);
                assert!(field.line.end as usize <= head.head_len);
            }
            Some(head.head_len)
        }
        _ => None,
    };
    // A request line longer than the 414 cut-off can be refused early when incomplete.
    if raw.len() > limits.max_target_bytes {
        return;
    }
    let step = usize::from(step % 16) + 1;
    let mut scanned = 0;
    let mut len = 0;
    let split = loop {
        len = (len + step).min(raw.len());
        match parse_request(&raw[..len], scanned, &limits, &mut fields) {
            Ok(Parsed::Complete(head)) => break Ok(Some(head.head_len)),
            Ok(Parsed::Partial { scanned: now }) => {
                assert!(now >= scanned && now <= len);
                scanned = now;
                if len == raw.len() {
                    break Ok(None);
                }
            }
            Err(err) => break Err(err),
        }
    };
    match (&whole, split) {
        (Ok(_), Ok(split_len)) => assert_eq!(whole_len, split_len),
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (whole, split) => panic!("whole {whole:?}, split {split:?}"),
    }
});
