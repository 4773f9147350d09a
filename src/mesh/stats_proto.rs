//! The per-target mesh families in the protobuf exposition, where the RTT histogram can be
//! native.
//!
//! Owns only the encoding: the same families, names, help strings, label sets and values as the
//! text rendering in `stats.rs` (whose [`FAMILIES`] table it walks), with
//! `meshprobe_mesh_rtt_seconds` as one `Histogram` message per target that carries the native
//! buckets, the classic buckets, or both ([`HistogramMode`]). Each target's label pairs are built
//! once per scrape and reused for every family.

use super::stats::{Column, FAMILIES, TargetStats};
use crate::config::mesh::HistogramMode;
use crate::icmp::stats::ICMP_ERROR_KINDS;
use crate::proto::{
    self, Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// One target for the protobuf rendering: its labels in exposition order, and a consistent
/// copy of its stats.
pub struct ProtoRow<'a> {
    pub labels: &'a [(String, String)],
    pub stats: TargetStats,
}

/// Bytes buffered before the renderer hands its output to the sink (e.g. a gzip stream).
const FLUSH_AT: usize = 64 * 1024;

/// Appends every per-target family, length-delimited, in the text rendering's order.
pub fn render(
    out: &mut Vec<u8>,
    rows: &[ProtoRow<'_>],
    buckets: &[f64],
    mode: HistogramMode,
    flush: &mut dyn FnMut(&mut Vec<u8>),
) {
    // One Metric per target, labels filled once; each family sets its value field.
    let mut metrics: Vec<Metric> = rows
        .iter()
        .map(|row| Metric {
            label: row
                .labels
                .iter()
                .map(|(name, value)| LabelPair::new(name, value))
                .collect(),
            ..Metric::default()
        })
        .collect();
    for (name, help, column) in &FAMILIES {
        match column {
            Column::Counter(get) => {
                for (metric, row) in metrics.iter_mut().zip(rows) {
                    clear(metric);
                    metric.counter = Some(Counter {
                        value: Some(get(&row.stats) as f64),
                    });
                }
                metrics = emit(out, name, help, MetricType::Counter, metrics);
            }
            Column::Errors => {
                let mut family = MetricFamily::new(name, help, MetricType::Counter);
                for (metric, row) in metrics.iter().zip(rows) {
                    for (index, kind) in ICMP_ERROR_KINDS.iter().enumerate() {
                        let count = row.stats.icmp_errors[index];
                        if count > 0 {
                            let mut label = metric.label.clone();
                            label.push(LabelPair::new("type", kind.as_str()));
                            family.metric.push(Metric {
                                label,
                                counter: Some(Counter {
                                    value: Some(count as f64),
                                }),
                                ..Metric::default()
                            });
                        }
                    }
                }
                proto::write_family(out, &family);
            }
            Column::LastRtt => {
                // Only targets that had a reply have the gauge, as in the text format.
                let mut family = MetricFamily::new(name, help, MetricType::Gauge);
                for (metric, row) in metrics.iter().zip(rows) {
                    if let Some(rtt) = row.stats.last_rtt {
                        family.metric.push(Metric {
                            label: metric.label.clone(),
                            gauge: Some(Gauge { value: Some(rtt) }),
                            ..Metric::default()
                        });
                    }
                }
                proto::write_family(out, &family);
            }
            Column::Histogram => {
                for (metric, row) in metrics.iter_mut().zip(rows) {
                    clear(metric);
                    metric.histogram = Some(histogram(&row.stats, buckets, mode));
                }
                metrics = emit(out, name, help, MetricType::Histogram, metrics);
            }
        }
        if out.len() >= FLUSH_AT {
            flush(out);
        }
    }
}

fn clear(metric: &mut Metric) {
    metric.counter = None;
    metric.gauge = None;
    metric.histogram = None;
}

/// Writes a family made of `metrics` and hands the metrics back for the next family.
fn emit(
    out: &mut Vec<u8>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    metrics: Vec<Metric>,
) -> Vec<Metric> {
    let mut family = MetricFamily::new(name, help, metric_type);
    family.metric = metrics;
    proto::write_family(out, &family);
    family.metric
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
        let mut flush = |chunk: &mut Vec<u8>| streamed.append(chunk);
        render(&mut out, rows, &[0.001, 0.01], mode, &mut flush);
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
        let labels = vec![
            ("peer".to_string(), "b".to_string()),
            ("network".to_string(), "198.18.0.0/24".to_string()),
        ];
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
        assert_eq!(sent.metric[0].label[0], LabelPair::new("peer", "b"));
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
        let labels = vec![("peer".to_string(), "dead".to_string())];
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
}
