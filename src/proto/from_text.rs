//! Converts meshprobe's own text exposition (as `expo.rs` writes it) into `MetricFamily`
//! messages, so `/probe` and the exporter's own families carry exactly the same samples in
//! both formats without a second renderer.
//!
//! Owns only this conversion. It reads the text that meshprobe itself produced (`# HELP`,
//! `# TYPE`, one sample per line, Go-formatted floats that parse back to the same `f64`), not
//! arbitrary exposition input: it never panics on odd lines, but it skips what it cannot read.
//! Histograms with classic buckets are regrouped from their `_bucket`/`_sum`/`_count` lines.

use super::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Untyped,
};

/// Converts a text exposition into families, in the order they appear.
pub fn families(text: &str) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(MetricFamily {
                name: Some(name.to_string()),
                help: Some(unescape_help(help)),
                r#type: Some(MetricType::Untyped as i32),
                metric: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, type_name) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let metric_type = match type_name.trim() {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                _ => MetricType::Untyped,
            };
            match families.last_mut() {
                Some(family) if family.name.as_deref() == Some(name) => {
                    family.r#type = Some(metric_type as i32);
                }
                _ => families.push(MetricFamily {
                    name: Some(name.to_string()),
                    help: None,
                    r#type: Some(metric_type as i32),
                    metric: Vec::new(),
                }),
            }
        } else if !line.starts_with('#')
            && !line.trim().is_empty()
            && let (Some(sample), Some(family)) = (parse_sample(line), families.last_mut())
        {
            add_sample(family, sample);
        }
    }
    families
}

struct Sample {
    name: String,
    labels: Vec<LabelPair>,
    value: f64,
}

fn add_sample(family: &mut MetricFamily, sample: Sample) {
    let family_name = family.name.clone().unwrap_or_default();
    let metric_type = family.r#type.unwrap_or(MetricType::Untyped as i32);
    if metric_type == MetricType::Histogram as i32 {
        add_histogram_sample(family, &family_name, sample);
        return;
    }
    if sample.name != family_name {
        return;
    }
    let mut metric = Metric {
        label: sample.labels,
        ..Metric::default()
    };
    let value = Some(sample.value);
    if metric_type == MetricType::Counter as i32 {
        metric.counter = Some(Counter { value });
    } else if metric_type == MetricType::Gauge as i32 {
        metric.gauge = Some(Gauge { value });
    } else {
        metric.untyped = Some(Untyped { value });
    }
    family.metric.push(metric);
}

fn add_histogram_sample(family: &mut MetricFamily, family_name: &str, sample: Sample) {
    let Some(suffix) = sample.name.strip_prefix(family_name) else {
        return;
    };
    let mut labels = sample.labels;
    let le = labels
        .iter()
        .position(|pair| pair.name.as_deref() == Some("le"))
        .map(|index| labels.remove(index));
    let existing = family.metric.iter().position(|m| m.label == labels);
    let index = existing.unwrap_or_else(|| {
        family.metric.push(Metric {
            label: labels,
            histogram: Some(Histogram::default()),
            ..Metric::default()
        });
        family.metric.len() - 1
    });
    let Some(histogram) = family.metric[index].histogram.as_mut() else {
        return;
    };
    match suffix {
        "_bucket" => {
            let upper = le
                .and_then(|pair| pair.value)
                .and_then(|text| parse_float(&text));
            // client_golang leaves the +Inf bucket out; `_count` carries it.
            if let Some(upper) = upper.filter(|upper| upper.is_finite()) {
                histogram.bucket.push(Bucket {
                    cumulative_count: Some(sample.value as u64),
                    upper_bound: Some(upper),
                });
            }
        }
        "_sum" => histogram.sample_sum = Some(sample.value),
        "_count" => histogram.sample_count = Some(sample.value as u64),
        _ => {}
    }
}

/// `name{a="b",c="d"} value` (no timestamp: meshprobe never writes one).
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after_name) = rest.split_once("=\"")?;
            let (value, after_value) = read_label_value(after_name)?;
            labels.push(LabelPair::new(label, &value));
            rest = after_value;
        }
    }
    let value = parse_float(rest.trim())?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Reads an escaped label value up to its closing quote; returns it and what follows.
fn read_label_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[index + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn unescape_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Go's text floats: `+Inf`, `-Inf`, `NaN`, or anything Rust's parser reads.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expo::{self, MetricType as TextType};

    #[test]
    fn converts_what_expo_writes_exactly() {
        let mut text = String::new();
        expo::family(&mut text, "g", "a \\ help\nline", TextType::Gauge);
        expo::sample(
            &mut text,
            "g",
            &[("phase", "rtt"), ("x", "q\"\\\n")],
            1.2e-5,
        );
        expo::sample(&mut text, "g", &[], 3_668_918_509.0);
        expo::single(&mut text, "c_total", "counts", TextType::Counter, 7.0);
        expo::family(&mut text, "h", "hist", TextType::Histogram);
        expo::sample(&mut text, "h_bucket", &[("p", "a"), ("le", "0.001")], 1.0);
        expo::sample(&mut text, "h_bucket", &[("p", "a"), ("le", "+Inf")], 3.0);
        expo::sample(&mut text, "h_sum", &[("p", "a")], 0.5);
        expo::sample(&mut text, "h_count", &[("p", "a")], 3.0);
        let families = families(&text);
        assert_eq!(families.len(), 3);
        let gauge = &families[0];
        assert_eq!(gauge.help.as_deref(), Some("a \\ help\nline"));
        assert_eq!(gauge.r#type, Some(MetricType::Gauge as i32));
        assert_eq!(
            gauge.metric[0].label,
            vec![
                LabelPair::new("phase", "rtt"),
                LabelPair::new("x", "q\"\\\n")
            ]
        );
        assert_eq!(
            gauge.metric[0].gauge,
            Some(Gauge {
                value: Some(1.2e-5)
            })
        );
        assert_eq!(
            gauge.metric[1].gauge,
            Some(Gauge {
                value: Some(3_668_918_509.0)
            })
        );
        assert_eq!(
            families[1].metric[0].counter,
            Some(Counter { value: Some(7.0) })
        );
        let histogram = families[2].metric[0].histogram.clone().unwrap_or_default();
        assert_eq!(families[2].metric[0].label, vec![LabelPair::new("p", "a")]);
        assert_eq!(histogram.sample_count, Some(3));
        assert_eq!(histogram.sample_sum, Some(0.5));
        assert_eq!(
            histogram.bucket,
            vec![Bucket {
                cumulative_count: Some(1),
                upper_bound: Some(0.001)
            }]
        );
    }

    #[test]
    fn odd_lines_are_skipped_not_fatal() {
        let families = families("x 1\n# HELP a b\na{l=\"unterminated 1\na{} nope\na 2\n");
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].metric.len(), 1);
        assert_eq!(
            families[0].metric[0].untyped,
            Some(Untyped { value: Some(2.0) })
        );
    }
}
