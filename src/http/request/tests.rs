use super::*;

fn status_of(raw: &[u8]) -> Option<u16> {
    let mut fields = Vec::new();
    match parse_request(raw, 0, &HeadLimits::default(), &mut fields) {
        Ok(_) => None,
        Err(e) => Some(e.request_status()),
    }
}

#[test]
fn only_a_well_formed_unknown_version_is_505() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /a b HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        (b"GET /\r\nHost: a\r\n\r\n", 400),
    ];
    for &(raw, want) in cases {
        assert_eq!(
            status_of(raw),
            Some(want),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}
