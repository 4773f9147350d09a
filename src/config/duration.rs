//! Go `time.ParseDuration` syntax (`5s`, `1m30s`, `500ms`, `1.5h`), as blackbox's `timeout` uses.
//!
//! Owns parsing and printing only. Units: ns, us, µs, μs, ms, s, m, h. A bare `0` is zero.
//! Negative durations are rejected because no meshprobe setting can use one.

use std::time::Duration;

/// Parses a Go duration string.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let original = text;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    } else if rest.starts_with('-') {
        return Err(format!("duration {original:?} is negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {original:?}"))?;
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("invalid duration {original:?}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {original:?}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ns = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {original:?}")),
            unit => return Err(format!("unknown unit {unit:?} in duration {original:?}")),
        };
        total_ns += value * unit_ns;
        rest = &rest[unit_len..];
    }
    if !total_ns.is_finite() || total_ns > 9.2e18 {
        return Err(format!("duration {original:?} is out of range"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Formats a duration the way Go's `Duration.String` would for whole units (used in `/config`).
pub fn format_go_duration(duration: Duration) -> String {
    let ns = duration.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns.is_multiple_of(1_000_000_000) {
        let secs = ns / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{s}s"));
        out
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}µs", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_examples() {
        assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("9.5s"), Ok(Duration::from_millis(9500)));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "5", "5x", "1d", "s", "-1s", "1..5s", ".s", "1w"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["5s", "1m30s", "500ms", "1h0m0s", "250µs"] {
            let parsed = parse_go_duration(text).expect("valid");
            assert_eq!(format_go_duration(parsed), text);
        }
    }
}
