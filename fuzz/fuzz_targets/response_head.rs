//! Response heads: never panic, spans stay inside the head, split input agrees with whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{parse_response, BodyFraming, HeadLimits, Parsed};

fuzz_target!(|data: &[u8]| {
    let Some((&control, raw)) = data.split_first() else {
        return;
    };
    let head_request = control & 1 == 1;
    let limits = HeadLimits::default();
    let mut fields = Vec::new();
    let whole = parse_response(raw, 0, head_request, &limits, &mut fields);
    let whole_len = match &whole {
        Ok(Parsed::Complete(head)) => {
            assert!(head.head_len <= raw.len());
            assert!(head.status_line.end as usize <= head.head_len);
            assert!((100..=599).contains(&head.status));
            if head.framing == BodyFraming::UntilClose {
                assert!(!head.keep_alive);
            }
            for field in &fields {
                assert!(field.value.end <= field.line.end);
                assert!(field.line.end as usize <= head.head_len);
            }
            Some(head.head_len)
        }
        _ => None,
    };
    let step = usize::from(control >> 1) % 16 + 1;
    let mut scanned = 0;
    let mut len = 0;
    let split = loop {
        len = (len + step).min(raw.len());
        match parse_response(&raw[..len], scanned, head_request, &limits, &mut fields) {
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
