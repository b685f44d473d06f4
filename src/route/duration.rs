//! Go duration strings ("5s", "1m30s", "250ms", "1.5h"), as vulcand writes its timeouts.

use std::time::Duration;

/// Parse a Go `time.ParseDuration` string. Negative durations are refused: every duration in
/// vulcand's documents is a timeout or a period.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| Err(format!("invalid duration {text:?}: {why}"));
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if let Some(magnitude) = rest.strip_prefix('-') {
        return match parse_go_duration(magnitude) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => bad("negative durations are not allowed"),
            Err(e) => Err(e),
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return bad("empty");
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return bad("expected a number");
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return bad("missing unit (one of ns, us, ms, s, m, h)"),
            _ => return bad("unknown unit (expected one of ns, us, ms, s, m, h)"),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            match int_part.parse::<u64>() {
                Ok(v) => u128::from(v),
                Err(_) => return bad("number too large"),
            }
        };
        let mut part = whole * nanos_per_unit;
        // Fractions beyond nanosecond precision are dropped, as Go does.
        let mut scale = nanos_per_unit;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += u128::from(digit - b'0') * scale;
        }
        total += part;
        if total > u128::from(u64::MAX) {
            return bad("too large");
        }
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn single_units() {
        assert_eq!(parse_go_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_go_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_go_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_go_duration("3m"), Ok(ms(180_000)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn compound_and_fractional() {
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1h2m3.004s"), Ok(ms(3_723_004)));
        assert_eq!(parse_go_duration("+2s"), Ok(ms(2_000)));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn zero_needs_no_unit() {
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_refused_with_the_text() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "1.s5",
            "-5s",
            "5s3",
            "..5s",
            "99999999999999999999s",
        ] {
            let err = parse_go_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
