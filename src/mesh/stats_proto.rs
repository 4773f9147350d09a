//! The per-target mesh families in the protobuf exposition, where the RTT histogram can be
//! native.
//!
//! Owns only the encoding: the same families, names, help strings, label sets and values as the
//! text rendering in `stats.rs` (whose [`FAMILIES`] table it walks), with
//! `meshprobe_mesh_rtt_seconds` as one `Histogram` message per target that carries the native
//! buckets, the classic buckets, or both ([`HistogramMode`]). Families are encoded metric by
//! metric straight from the rows (no `MetricFamily` of 100 000 metrics is built), so a scrape
//! can be streamed in 64 KiB chunks.

use std::ops::ControlFlow;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::labels::LabelSet;
use super::stats::{Column, FAMILIES, TargetStats};
use crate::config::mesh::HistogramMode;
use crate::icmp::stats::ICMP_ERROR_KINDS;
use crate::proto::{Bucket, Counter, Gauge, Histogram, MetricFamily, MetricType};

/// One target for the protobuf rendering: its labels in exposition order, and a consistent
/// copy of its stats.
pub struct ProtoRow<'a> {
    pub labels: &'a LabelSet,
    pub stats: TargetStats,
}

/// Bytes buffered before the renderer hands its output to the sink (e.g. a gzip stream).
const FLUSH_AT: usize = 64 * 1024;

/// `Metric` field numbers (prometheus/client_model's metrics.proto).
const METRIC_LABEL: u32 = 1;
const METRIC_GAUGE: u32 = 2;
const METRIC_COUNTER: u32 = 3;
const METRIC_HISTOGRAM: u32 = 7;
/// `MetricFamily.metric`, and the two string fields of `LabelPair`.
const FAMILY_METRIC: u32 = 4;
const PAIR_NAME: u32 = 1;
const PAIR_VALUE: u32 = 2;

/// A label outside the target's own set (the error `type`): name and value.
type ExtraLabel<'a> = Option<(&'a str, &'a str)>;

/// The value part of one `Metric`.
enum Value {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// Appends every per-target family, length-delimited, in the text rendering's order, handing
/// `out` to `flush` whenever it holds 64 KiB; stops when `flush` answers `Break`.
///
/// A family's length prefix comes before its metrics, so each family is walked twice: once to
/// add up the encoded lengths, once to write the metrics one by one. The bytes are exactly
/// prost's encoding of the whole `MetricFamily` (a unit test compares them), without ever
/// holding the family in memory.
pub fn render(
    out: &mut Vec<u8>,
    rows: &[ProtoRow<'_>],
    buckets: &[f64],
    mode: HistogramMode,
    flush: &mut dyn FnMut(&mut Vec<u8>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for (name, help, column) in &FAMILIES {
        let metric_type = match column {
            Column::Counter(_) | Column::Errors => MetricType::Counter,
            Column::LastRtt => MetricType::Gauge,
            Column::Histogram => MetricType::Histogram,
        };
        let mut metrics_len = 0usize;
        let mut metric_count = 0usize;
        for row in rows {
            each_metric(row, column, buckets, mode, &mut |extra, value| {
                let len = metric_len(row.labels, extra, value);
                metrics_len += key_len(FAMILY_METRIC) + encoded_len_varint(len as u64) + len;
                metric_count += 1;
            });
        }
        // An empty family is left out, as `proto::write_family` does.
        if metric_count == 0 {
            continue;
        }
        let header = MetricFamily::new(name, help, metric_type);
        encode_varint((header.encoded_len() + metrics_len) as u64, out);
        // Fields 1–3; the metrics (field 4) follow, so this is the family's own prefix.
        header.encode_raw(out);
        for row in rows {
            each_metric(row, column, buckets, mode, &mut |extra, value| {
                write_metric(out, row.labels, extra, value);
            });
            if out.len() >= FLUSH_AT {
                flush(out)?;
            }
        }
    }
    ControlFlow::Continue(())
}

/// Calls `emit` for each metric `row` has in the family of `column`, with the extra label it
/// carries (the error `type`): one per row, except that errors have one per ICMP error type
/// seen and the last-RTT gauge none before the first reply.
fn each_metric(
    row: &ProtoRow<'_>,
    column: &Column,
    buckets: &[f64],
    mode: HistogramMode,
    emit: &mut dyn FnMut(ExtraLabel<'_>, &Value),
) {
    let stats = &row.stats;
    match column {
        Column::Counter(get) => emit(
            None,
            &Value::Counter(Counter {
                value: Some(get(stats) as f64),
            }),
        ),
        Column::Errors => {
            for (index, kind) in ICMP_ERROR_KINDS.iter().enumerate() {
                let count = stats.icmp_errors()[index];
                if count > 0 {
                    let value = Value::Counter(Counter {
                        value: Some(count as f64),
                    });
                    emit(Some(("type", kind.as_str())), &value);
                }
            }
        }
        Column::LastRtt => {
            if let Some(rtt) = stats.last_rtt() {
                emit(None, &Value::Gauge(Gauge { value: Some(rtt) }));
            }
        }
        Column::Histogram => emit(None, &Value::Histogram(histogram(stats, buckets, mode))),
    }
}

/// The encoded length of a `LabelPair` message (its two optional strings, both set).
fn pair_len(name: &str, value: &str) -> usize {
    let field =
        |tag: u32, text: &str| key_len(tag) + encoded_len_varint(text.len() as u64) + text.len();
    field(PAIR_NAME, name) + field(PAIR_VALUE, value)
}

/// A nested message field's length: key, length prefix and body.
fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn metric_len(labels: &LabelSet, extra: Option<(&str, &str)>, value: &Value) -> usize {
    let pairs = labels.iter().chain(extra);
    let labels_len: usize = pairs
        .map(|(name, value)| message_field_len(METRIC_LABEL, pair_len(name, value)))
        .sum();
    let value_len = match value {
        Value::Counter(counter) => message_field_len(METRIC_COUNTER, counter.encoded_len()),
        Value::Gauge(gauge) => message_field_len(METRIC_GAUGE, gauge.encoded_len()),
        Value::Histogram(histogram) => message_field_len(METRIC_HISTOGRAM, histogram.encoded_len()),
    };
    labels_len + value_len
}

/// Writes one `Metric` as a field of its family: labels (field 1), then the value's field, in
/// prost's field order.
fn write_metric(out: &mut Vec<u8>, labels: &LabelSet, extra: Option<(&str, &str)>, value: &Value) {
    encode_key(FAMILY_METRIC, WireType::LengthDelimited, out);
    encode_varint(metric_len(labels, extra, value) as u64, out);
    for (name, value) in labels.iter().chain(extra) {
        encode_key(METRIC_LABEL, WireType::LengthDelimited, out);
        encode_varint(pair_len(name, value) as u64, out);
        for (tag, text) in [(PAIR_NAME, name), (PAIR_VALUE, value)] {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(text.len() as u64, out);
            out.extend_from_slice(text.as_bytes());
        }
    }
    let (tag, message): (u32, &dyn MessageBody) = match value {
        Value::Counter(counter) => (METRIC_COUNTER, counter),
        Value::Gauge(gauge) => (METRIC_GAUGE, gauge),
        Value::Histogram(histogram) => (METRIC_HISTOGRAM, histogram),
    };
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(message.body_len() as u64, out);
    message.write_body(out);
}

/// A prost message written as a nested field's body (prost's `Message` is not object safe).
trait MessageBody {
    fn body_len(&self) -> usize;
    fn write_body(&self, out: &mut Vec<u8>);
}

impl<M: Message> MessageBody for M {
    fn body_len(&self) -> usize {
        self.encoded_len()
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        self.encode_raw(out);
    }
}

/// One target's RTT histogram message.
fn histogram(stats: &TargetStats, buckets: &[f64], mode: HistogramMode) -> Histogram {
    let mut histogram = Histogram {
        sample_count: Some(stats.received),
        sample_sum: Some(stats.rtt_sum()),
        ..Histogram::default()
    };
    if mode.classic_in_protobuf() {
        // Cumulative, without +Inf (sample_count is +Inf), as client_golang sends them.
        let mut cumulative = 0u64;
        histogram.bucket = buckets
            .iter()
            .zip(stats.bucket_counts())
            .map(|(upper, count)| {
                cumulative += count;
                Bucket {
                    cumulative_count: Some(cumulative),
                    upper_bound: Some(*upper),
                }
            })
            .collect();
    }
    if mode.native()
        && let Some(native) = stats.native()
    {
        native.fill(&mut histogram);
    }
    histogram
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmp::IcmpErrorKind;
    use crate::mesh::native;
    use crate::proto::{self, LabelPair, Metric};

    fn stats() -> TargetStats {
        let buckets = [0.001, 0.01];
        let mut stats = TargetStats::new(2);
        for index in 0..4 {
            stats.record_sent();
            if index < 3 {
                stats.record_reply(&buckets, 40e-6 + index as f64 * 1e-6, index, index);
            }
        }
        stats.record_reply(&buckets, 0.5, 9, 9);
        stats.record_lost(Some(IcmpErrorKind::TimeExceeded));
        stats
    }

    fn decode(rows: &[ProtoRow<'_>], mode: HistogramMode) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut streamed = Vec::new();
        let mut flush = |chunk: &mut Vec<u8>| {
            streamed.append(chunk);
            ControlFlow::Continue(())
        };
        let _ = render(&mut out, rows, &[0.001, 0.01], mode, &mut flush);
        streamed.append(&mut out);
        proto::decode_all(&streamed).expect("decodes with prost")
    }

    fn rtt_histogram(families: &[MetricFamily]) -> Histogram {
        families
            .iter()
            .find(|f| f.name.as_deref() == Some("meshprobe_mesh_rtt_seconds"))
            .and_then(|f| f.metric[0].histogram.clone())
            .unwrap_or_default()
    }

    #[test]
    fn round_trip_matches_the_stats_in_every_mode() {
        let labels = LabelSet::new([("peer", "b"), ("network", "198.18.0.0/24")]);
        let rows = [ProtoRow {
            labels: &labels,
            stats: stats(),
        }];
        let families = decode(&rows, HistogramMode::Both);
        let names: Vec<&str> = families.iter().filter_map(|f| f.name.as_deref()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 9);
        let family = |name: &str| {
            families
                .iter()
                .find(|f| f.name.as_deref() == Some(name))
                .cloned()
                .unwrap_or_default()
        };
        let sent = family("meshprobe_mesh_sent_total");
        assert_eq!(sent.r#type, Some(MetricType::Counter as i32));
        assert_eq!(sent.metric[0].counter, Some(Counter { value: Some(4.0) }));
        // Labels in name order, as every label set is kept.
        assert_eq!(
            sent.metric[0].label[..2],
            [
                LabelPair::new("network", "198.18.0.0/24"),
                LabelPair::new("peer", "b")
            ]
        );
        let errors = family("meshprobe_mesh_errors_total");
        assert_eq!(
            errors.metric[0].label.last(),
            Some(&LabelPair::new("type", "time_exceeded"))
        );
        let rtt = family("meshprobe_mesh_rtt_seconds");
        assert_eq!(rtt.r#type, Some(MetricType::Histogram as i32));
        let histogram = rtt.metric[0].histogram.clone().unwrap_or_default();
        assert_eq!(histogram.sample_count, Some(4));
        assert!((histogram.sample_sum.unwrap_or(0.0) - 0.500123).abs() < 1e-9);
        let classic: Vec<(u64, f64)> = histogram
            .bucket
            .iter()
            .map(|b| {
                (
                    b.cumulative_count.unwrap_or(0),
                    b.upper_bound.unwrap_or(0.0),
                )
            })
            .collect();
        assert_eq!(classic, [(3, 0.001), (3, 0.01)]);
        assert_eq!(histogram.schema, Some(native::SCHEMA));
        assert_eq!(histogram.zero_threshold, Some(native::ZERO_THRESHOLD));
        // Native buckets add up to the count: three around 40 µs, one at 0.5 s.
        let total: i64 = {
            let mut count = 0i64;
            histogram
                .positive_delta
                .iter()
                .map(|delta| {
                    count += delta;
                    count
                })
                .sum()
        };
        assert_eq!(total, 4);
        assert_eq!(histogram.positive_span.len(), 2);

        let rtt = rtt_histogram(&decode(&rows, HistogramMode::Native));
        assert!(rtt.bucket.is_empty());
        assert_eq!(rtt.positive_delta, histogram.positive_delta);

        let rtt = rtt_histogram(&decode(&rows, HistogramMode::Classic));
        assert_eq!(rtt.bucket.len(), 2);
        assert!(rtt.schema.is_none() && rtt.positive_span.is_empty());
    }

    #[test]
    fn a_target_without_replies_is_still_a_native_histogram() {
        let labels = LabelSet::new([("peer", "dead")]);
        let rows = [ProtoRow {
            labels: &labels,
            stats: TargetStats::new(2),
        }];
        let families = decode(&rows, HistogramMode::Native);
        let rtt = rtt_histogram(&families);
        // The no-op span: without it Prometheus would read an empty classic histogram.
        assert_eq!(rtt.positive_span.len(), 1);
        assert_eq!(rtt.positive_span[0].length, Some(0));
        // No last-RTT gauge and no error series: those families are left out entirely.
        assert!(
            families
                .iter()
                .all(|f| f.name.as_deref() != Some("meshprobe_mesh_last_rtt_seconds"))
        );
    }

    /// The encoding before streaming: whole `MetricFamily` messages built with prost.
    fn whole_families(rows: &[ProtoRow<'_>], buckets: &[f64], mode: HistogramMode) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, help, column) in &FAMILIES {
            let metric_type = match column {
                Column::Counter(_) | Column::Errors => MetricType::Counter,
                Column::LastRtt => MetricType::Gauge,
                Column::Histogram => MetricType::Histogram,
            };
            let mut family = MetricFamily::new(name, help, metric_type);
            for row in rows {
                each_metric(row, column, buckets, mode, &mut |extra, value| {
                    let mut metric = Metric {
                        label: row
                            .labels
                            .iter()
                            .map(|(name, value)| LabelPair::new(name, value))
                            .collect(),
                        ..Metric::default()
                    };
                    if let Some((name, value)) = extra {
                        metric.label.push(LabelPair::new(name, value));
                    }
                    match value {
                        Value::Counter(counter) => metric.counter = Some(counter.clone()),
                        Value::Gauge(gauge) => metric.gauge = Some(gauge.clone()),
                        Value::Histogram(histogram) => metric.histogram = Some(histogram.clone()),
                    }
                    family.metric.push(metric);
                });
            }
            proto::write_family(&mut out, &family);
        }
        out
    }

    #[test]
    fn streamed_families_are_byte_for_byte_prosts_whole_families() {
        let buckets = [0.001, 0.01];
        let label_sets: Vec<LabelSet> = (0..3000)
            .map(|index| {
                LabelSet::new([
                    (
                        "peer",
                        format!("peer-{index:05}-{}", "x".repeat(index % 40)),
                    ),
                    ("network", "198.18.0.0/15".to_string()),
                    ("empty", String::new()),
                ])
            })
            .collect();
        let rows: Vec<ProtoRow<'_>> = label_sets
            .iter()
            .enumerate()
            .map(|(index, labels)| {
                let mut stats = TargetStats::new(buckets.len());
                for probe in 0..(index % 7) as u64 {
                    stats.record_sent();
                    match probe % 3 {
                        0 => stats.record_reply(&buckets, 1e-5 * (index + 1) as f64, probe, probe),
                        1 => stats.record_lost(Some(IcmpErrorKind::TimeExceeded)),
                        _ => stats.record_lost(None),
                    }
                }
                ProtoRow { labels, stats }
            })
            .collect();
        for mode in [
            HistogramMode::Both,
            HistogramMode::Native,
            HistogramMode::Classic,
        ] {
            let mut streamed = Vec::new();
            let mut out = Vec::new();
            let mut chunks = 0;
            let mut flush = |chunk: &mut Vec<u8>| {
                assert!(chunk.len() < 2 * FLUSH_AT, "chunks stay bounded");
                streamed.append(chunk);
                chunks += 1;
                ControlFlow::Continue(())
            };
            assert!(render(&mut out, &rows, &buckets, mode, &mut flush).is_continue());
            streamed.append(&mut out);
            assert!(chunks > 10, "{chunks} chunks");
            assert!(
                streamed == whole_families(&rows, &buckets, mode),
                "{mode:?}"
            );
            let families = proto::decode_all(&streamed).expect("decodes with prost");
            assert_eq!(families.len(), 9);
        }
    }

    #[test]
    fn rendering_stops_when_the_sink_says_so() {
        let labels = LabelSet::new([("peer", "a".repeat(200))]);
        let rows: Vec<ProtoRow<'_>> = (0..5000)
            .map(|_| ProtoRow {
                labels: &labels,
                stats: TargetStats::new(2),
            })
            .collect();
        let mut calls = 0;
        let mut flush = |chunk: &mut Vec<u8>| {
            calls += 1;
            chunk.clear();
            ControlFlow::Break(())
        };
        let mut out = Vec::new();
        let flow = render(
            &mut out,
            &rows,
            &[0.001, 0.01],
            HistogramMode::Both,
            &mut flush,
        );
        assert!(flow.is_break());
        assert_eq!(calls, 1);
    }
}
