//! The Prometheus protobuf exposition format: `io.prometheus.client.MetricFamily` messages,
//! length-delimited, which is the only format that carries native histograms.
//!
//! Owns the message types (prost derive structs written from prometheus/client_model's
//! `metrics.proto`, so no `protoc` is needed at build time), content negotiation on the `Accept`
//! header (client_golang's `expfmt.Negotiate` rules), the content type, and the conversion of
//! meshprobe's own text output into messages ([`from_text`]). It knows nothing about which
//! metrics exist; the mesh encodes its per-target families directly (`mesh::stats_proto`).

pub mod from_text;

use prost::Message;

/// The content type client_golang answers with for `encoding=delimited` (expfmt's
/// `FmtProtoDelim`; client_golang ≥ 1.20 appends `; escaping=…`, which Prometheus ignores).
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text format 0.0.4 (the default for anything else, as in client_golang).
    Text,
    /// Length-delimited `MetricFamily` protobuf messages.
    Protobuf,
}

/// Picks the format for an `Accept` header the way client_golang's `expfmt.Negotiate` does:
/// media ranges in order of decreasing quality (stable for equal quality); the first that is
/// the delimited protobuf format wins, the first `text/plain` (version 0.0.4 or none) means
/// text, anything else is skipped; text when nothing matches. Ranges with `q=0` are refused.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut ranges: Vec<(f64, &str)> = accept
        .split(',')
        .map(|range| {
            let quality = range
                .split(';')
                .skip(1)
                .filter_map(|param| param.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, value)| value.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            (quality, range)
        })
        .filter(|(quality, _)| *quality > 0.0)
        .collect();
    // Stable sort: equal qualities keep the client's order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, range) in ranges {
        let mut parts = range.split(';');
        let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let param = |name: &str| {
            range
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().trim_matches('"').to_string())
        };
        if media_type == "application/vnd.google.protobuf"
            && param("proto").as_deref() == Some("io.prometheus.client.MetricFamily")
            && param("encoding").as_deref() == Some("delimited")
        {
            return Format::Protobuf;
        }
        if media_type == "text/plain" && matches!(param("version").as_deref(), None | Some("0.0.4"))
        {
            return Format::Text;
        }
    }
    Format::Text
}

/// Appends one length-delimited family; families without metrics are left out, as
/// client_golang never sends them.
pub fn write_family(out: &mut Vec<u8>, family: &MetricFamily) {
    if family.metric.is_empty() {
        return;
    }
    // Writing into a Vec cannot run out of space.
    let _ = family.encode_length_delimited(out);
}

/// Decodes a whole length-delimited body (tests and tools).
pub fn decode_all(mut body: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut families = Vec::new();
    while !body.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut body)?);
    }
    Ok(families)
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

impl LabelPair {
    pub fn new(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: Some(name.to_string()),
            value: Some(value.to_string()),
        }
    }
}

/// `MetricType` of metrics.proto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Untyped = 3,
    Histogram = 4,
    GaugeHistogram = 5,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Untyped {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// A classic bucket: cumulative count up to an inclusive upper bound.
#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

/// A run of `length` consecutive native buckets, `offset` after the previous run (or at
/// `offset` for the first).
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// A histogram: classic buckets (`bucket`), native buckets (`schema` onwards), or both.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Count of each bucket minus the previous bucket's (the first: minus zero).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Untyped>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

impl MetricFamily {
    pub fn new(name: &str, help: &str, metric_type: MetricType) -> MetricFamily {
        MetricFamily {
            name: Some(name.to_string()),
            help: Some(help.to_string()),
            r#type: Some(metric_type as i32),
            metric: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_client_golang() {
        // Prometheus 2.42 with --enable-feature=native-histograms.
        let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::Protobuf);
        // Without the feature flag.
        let classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(classic)), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("garbage;;;=,")), Format::Text);
        // Quality decides, not position.
        let text_first = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.3,text/plain;q=0.6";
        assert_eq!(negotiate(Some(text_first)), Format::Text);
        // Other protobuf encodings and protocols are not served.
        let text_proto =
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text";
        assert_eq!(negotiate(Some(text_proto)), Format::Text);
        assert_eq!(
            negotiate(Some(
                "application/vnd.google.protobuf; proto=other.Message; encoding=delimited"
            )),
            Format::Text
        );
        // q=0 means "not acceptable".
        let refused = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0";
        assert_eq!(negotiate(Some(refused)), Format::Text);
    }

    #[test]
    fn families_round_trip_and_empty_ones_are_left_out() {
        let mut family = MetricFamily::new("m", "help", MetricType::Gauge);
        let mut out = Vec::new();
        write_family(&mut out, &family);
        assert!(out.is_empty());
        family.metric.push(Metric {
            label: vec![LabelPair::new("a", "b")],
            gauge: Some(Gauge { value: Some(1.5) }),
            ..Metric::default()
        });
        write_family(&mut out, &family);
        write_family(&mut out, &family);
        assert_eq!(decode_all(&out), Ok(vec![family.clone(), family]));
        assert!(decode_all(&out[..out.len() - 1]).is_err());
    }
}
