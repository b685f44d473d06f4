//! Durations written the way Go's `time.Duration.String` writes them (`250ms`, `1.5s`,
//! `1m0s`, `24h0m0s`), as vulcand's `X-Retry-In` header and rate descriptions do.

use std::fmt::Write as _;

/// `ms` milliseconds in Go's notation (millisecond resolution, so always ASCII).
pub fn go_duration_ms(ms: u64) -> String {
    let mut out = String::new();
    if ms == 0 {
        out.push_str("0s");
    } else if ms < 1000 {
        let _ = write!(out, "{ms}ms");
    } else {
        let secs = ms / 1000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            let _ = write!(out, "{h}h");
        }
        if h > 0 || m > 0 {
            let _ = write!(out, "{m}m");
        }
        let _ = write!(out, "{s}");
        let frac = ms % 1000;
        if frac > 0 {
            let digits = format!("{frac:03}");
            let _ = write!(out, ".{}", digits.trim_end_matches('0'));
        }
        out.push('s');
    }
    out
}

/// Nanoseconds rounded up to whole milliseconds, in Go's notation.
pub fn go_duration_ns(ns: u64) -> String {
    go_duration_ms(ns.div_ceil(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration_ms(0), "0s");
        assert_eq!(go_duration_ms(250), "250ms");
        assert_eq!(go_duration_ms(1000), "1s");
        assert_eq!(go_duration_ms(1500), "1.5s");
        assert_eq!(go_duration_ms(60_000), "1m0s");
        assert_eq!(go_duration_ms(90_250), "1m30.25s");
        assert_eq!(go_duration_ms(86_400_000), "24h0m0s");
        assert_eq!(go_duration_ns(1), "1ms");
        assert_eq!(go_duration_ns(333_333_334), "334ms");
    }
}
