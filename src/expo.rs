//! Prometheus text exposition (format 0.0.4), written the way Go's client_golang writes it.
//!
//! Owns number formatting (Go's `strconv.FormatFloat(f, 'g', -1, 64)` with expfmt's special
//! cases), HELP and label escaping, and family headers. `/probe` output is compared line by line
//! with blackbox_exporter's, so this must match Go exactly; it knows nothing about which metrics
//! exist.

use std::fmt::Write;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric family types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Counter,
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Appends `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, help: &str, metric_type: MetricType) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(metric_type.as_str());
    out.push('\n');
}

/// Appends one sample line; `labels` must already be in the order they should appear.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (index, (label, label_value)) in labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, label_value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    go_float(out, value);
    out.push('\n');
}

/// Appends a whole single-sample family.
pub fn single(out: &mut String, name: &str, help: &str, metric_type: MetricType, value: f64) {
    family(out, name, help, metric_type);
    sample(out, name, &[], value);
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Formats a float like Go's expfmt: `1`, `0`, `-1`, `NaN`, `+Inf`, `-Inf`, else `%g` shortest.
pub fn go_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if value == 0.0 {
        out.push_str(if value.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Rust's `{:e}` yields the shortest round-trip digits, like Go's shortest mode.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // Go's 'g' in shortest mode switches to %e when the exponent is < -4 or >= 6.
    if !(-4..6).contains(&exponent) {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exponent.abs());
        return;
    }
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(value: f64) -> String {
        let mut out = String::new();
        go_float(&mut out, value);
        out
    }

    #[test]
    fn floats_match_go_strconv_g() {
        assert_eq!(fmt(3_668_918_509.0), "3.668918509e+09");
        assert_eq!(fmt(1.2e-5), "1.2e-05");
        assert_eq!(fmt(119.5), "119.5");
        assert_eq!(fmt(0.000412), "0.000412");
        assert_eq!(fmt(1.0), "1");
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(64.0), "64");
        assert_eq!(fmt(123_456.0), "123456");
        assert_eq!(fmt(1_234_567.0), "1.234567e+06");
        assert_eq!(fmt(1e6), "1e+06");
        assert_eq!(fmt(0.0001), "0.0001");
        assert_eq!(fmt(0.00001), "1e-05");
        assert_eq!(fmt(-2.5), "-2.5");
        assert_eq!(fmt(f64::NAN), "NaN");
        assert_eq!(fmt(f64::INFINITY), "+Inf");
        assert_eq!(fmt(1e100), "1e+100");
    }

    #[test]
    fn escapes_help_and_labels() {
        let mut out = String::new();
        family(&mut out, "m", "a\\b\nc \"q\"", MetricType::Gauge);
        sample(&mut out, "m", &[("l", "x\"y\\z\n")], 2.0);
        assert_eq!(
            out,
            "# HELP m a\\\\b\\nc \"q\"\n# TYPE m gauge\nm{l=\"x\\\"y\\\\z\\n\"} 2\n"
        );
    }
}
