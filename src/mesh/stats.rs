//! Per-target mesh statistics and their `/metrics` rendering.
//!
//! Owns the exact accounting: every sent probe ends exactly once as received or lost (a timeout
//! or an ICMP error); duplicates and reordered replies are counted separately and never change
//! the RTT histogram. Reordering is judged by [`ArrivalRing`]. A target's counters are kept
//! compact, because a pinger holds 100 000 of them: the counters most targets never move
//! (duplicates, reordering, send and ICMP errors) live in one box made on the first such event,
//! and classic bucket counts are 32-bit until one would overflow ([`ClassicCounts`]).
//! Rendering writes the text format directly with each target's label set pre-rendered,
//! because a 2000-target mesh has ~60 000 series.

use std::fmt::Write;
use std::ops::ControlFlow;

use super::classic::ClassicCounts;
use super::labels::LabelSet;
use super::native::NativeHistogram;
use super::reorder::ArrivalRing;
use crate::expo::{self, MetricType};
use crate::icmp::IcmpErrorKind;
use crate::icmp::stats::ICMP_ERROR_KINDS;

/// The counters of events most targets never see, allocated on the first one.
#[derive(Debug, Clone, Copy, Default)]
struct RareCounts {
    duplicates: u64,
    reordered: u64,
    send_errors: u64,
    icmp_errors: [u64; ICMP_ERROR_KINDS.len()],
}

/// Counters and histogram of one target.
#[derive(Debug, Clone, Default)]
pub struct TargetStats {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    rare: Option<Box<RareCounts>>,
    bucket_counts: ClassicCounts,
    rtt_sum: f64,
    /// RTT of the newest reply in seconds; NaN before the first.
    last_rtt: f64,
    /// The replies to the last sends, to judge reordering (empty in snapshots).
    arrivals: ArrivalRing,
    /// The native histogram of the same replies; `None` with `mesh.histogram: classic`.
    native: Option<NativeHistogram>,
}

impl TargetStats {
    /// Stats with `bucket_count` classic buckets and a native histogram.
    pub fn new(bucket_count: usize) -> TargetStats {
        TargetStats::with_native(bucket_count, true)
    }

    /// Stats with `bucket_count` classic buckets, and a native histogram if `native`.
    pub fn with_native(bucket_count: usize, native: bool) -> TargetStats {
        TargetStats {
            bucket_counts: ClassicCounts::zeros(bucket_count + 1),
            last_rtt: f64::NAN,
            native: native.then(NativeHistogram::default),
            ..TargetStats::default()
        }
    }

    fn rare(&self) -> RareCounts {
        self.rare.as_deref().copied().unwrap_or_default()
    }

    fn rare_mut(&mut self) -> &mut RareCounts {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Extra echo replies to probes already answered.
    pub fn duplicates(&self) -> u64 {
        self.rare().duplicates
    }

    /// Replies that arrived after the reply to a later-sent probe.
    pub fn reordered(&self) -> u64 {
        self.rare().reordered
    }

    /// Probes the kernel refused to send.
    pub fn send_errors(&self) -> u64 {
        self.rare().send_errors
    }

    /// Probes answered by an ICMP error, per kind of [`ICMP_ERROR_KINDS`].
    pub fn icmp_errors(&self) -> [u64; ICMP_ERROR_KINDS.len()] {
        self.rare().icmp_errors
    }

    /// RTT of the most recent echo reply, in seconds.
    pub fn last_rtt(&self) -> Option<f64> {
        (!self.last_rtt.is_nan()).then_some(self.last_rtt)
    }

    /// Whether a native histogram is kept.
    pub fn has_native(&self) -> bool {
        self.native.is_some()
    }

    /// The native histogram, if kept.
    pub fn native(&self) -> Option<&NativeHistogram> {
        self.native.as_ref()
    }

    /// Non-cumulative counts per classic bucket; the last one is the +Inf overflow.
    pub fn bucket_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.bucket_counts.iter()
    }

    /// Sum of all RTTs received, in seconds.
    pub fn rtt_sum(&self) -> f64 {
        self.rtt_sum
    }

    pub fn record_sent(&mut self) {
        self.sent += 1;
    }

    pub fn record_send_error(&mut self) {
        self.rare_mut().send_errors += 1;
    }

    /// An echo reply for send number `send_index`, which the engine received as its
    /// `arrival`-th accepted reply.
    pub fn record_reply(
        &mut self,
        buckets: &[f64],
        rtt_seconds: f64,
        send_index: u64,
        arrival: u64,
    ) {
        self.received += 1;
        self.rtt_sum += rtt_seconds;
        self.last_rtt = rtt_seconds;
        let slot = buckets
            .iter()
            .position(|upper| rtt_seconds <= *upper)
            .unwrap_or(buckets.len());
        self.bucket_counts.add(slot, 1);
        if let Some(native) = &mut self.native {
            native.observe(rtt_seconds);
        }
        let reordered = self.arrivals.note(send_index, arrival);
        if reordered > 0 {
            self.rare_mut().reordered += reordered;
        }
    }

    /// No echo reply by the deadline; `error` is the ICMP error that ended it early, if any.
    pub fn record_lost(&mut self, error: Option<IcmpErrorKind>) {
        self.lost += 1;
        if let Some(kind) = error
            && let Some(index) = ICMP_ERROR_KINDS.iter().position(|k| *k == kind)
        {
            self.rare_mut().icmp_errors[index] += 1;
        }
    }

    /// The counters and histogram without the reordering memory (what a scrape needs).
    pub fn snapshot(&self) -> TargetStats {
        TargetStats {
            native: self.native.clone(),
            ..self.counters_snapshot()
        }
    }

    /// [`TargetStats::snapshot`] without the native histogram (the text format has none).
    pub fn counters_snapshot(&self) -> TargetStats {
        TargetStats {
            sent: self.sent,
            received: self.received,
            lost: self.lost,
            rare: self.rare.clone(),
            bucket_counts: self.bucket_counts.clone(),
            rtt_sum: self.rtt_sum,
            last_rtt: self.last_rtt,
            arrivals: ArrivalRing::default(),
            native: None,
        }
    }

    pub fn record_duplicate(&mut self) {
        self.rare_mut().duplicates += 1;
    }

    /// Adds `other`'s counters and histogram to these (one exported series set for several
    /// targets, `mesh.inter_group_series: per_group`); sent = received + lost still holds.
    /// `last_rtt` becomes the larger of the two.
    pub fn absorb(&mut self, other: &TargetStats) {
        self.sent += other.sent;
        self.received += other.received;
        self.lost += other.lost;
        if let Some(theirs) = other.rare.as_deref() {
            let mine = self.rare_mut();
            mine.duplicates += theirs.duplicates;
            mine.reordered += theirs.reordered;
            mine.send_errors += theirs.send_errors;
            for (mine, theirs) in mine.icmp_errors.iter_mut().zip(theirs.icmp_errors) {
                *mine += theirs;
            }
        }
        self.bucket_counts.absorb(&other.bucket_counts);
        self.rtt_sum += other.rtt_sum;
        match (&mut self.native, &other.native) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.native = Some(theirs.clone()),
            _ => {}
        }
        // `f64::max` ignores a NaN side: the larger, or whichever exists.
        self.last_rtt = self.last_rtt.max(other.last_rtt);
    }
}

/// One target's rendered label set (`peer="b",network="…",…`) and its stats.
pub struct RenderRow<'a> {
    pub labels: &'a str,
    /// A copy taken under the target's lock, so the scrape is consistent per target
    /// (sent = received + lost) while probing never waits for the render.
    pub stats: TargetStats,
}

impl RenderRow<'_> {
    fn stats(&self) -> &TargetStats {
        &self.stats
    }
}

/// Bytes buffered before the renderer hands its output to the sink (e.g. a gzip stream).
const FLUSH_AT: usize = 64 * 1024;

fn line(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((key, extra_value)) = extra {
        if !labels.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{extra_value}\"");
    }
    out.push_str("} ");
    expo::go_float(out, value);
    out.push('\n');
}

/// Renders a label set as `k="v",…` with Prometheus escaping.
pub fn render_labels(labels: &LabelSet) -> String {
    let mut out = String::new();
    for (index, (key, value)) in labels.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{key}=\"{escaped}\"");
    }
    out
}

pub(super) type Getter = fn(&TargetStats) -> u64;

/// How a family's samples are produced.
pub(super) enum Column {
    Counter(Getter),
    Errors,
    LastRtt,
    Histogram,
}

/// Every per-target family, in the sorted order Prometheus clients write them.
pub(super) const FAMILIES: [(&str, &str, Column); 9] = [
    (
        "meshprobe_mesh_duplicates_total",
        "Extra echo replies to a probe that was already answered.",
        Column::Counter(|s| s.duplicates()),
    ),
    (
        "meshprobe_mesh_errors_total",
        "ICMP errors that answered a probe instead of an echo reply, by type.",
        Column::Errors,
    ),
    (
        "meshprobe_mesh_last_rtt_seconds",
        "RTT of the most recent echo reply.",
        Column::LastRtt,
    ),
    (
        "meshprobe_mesh_lost_total",
        "Probes that got no echo reply by their deadline (timed out or answered by an ICMP error); each counted once.",
        Column::Counter(|s| s.lost),
    ),
    (
        "meshprobe_mesh_received_total",
        "Probes answered by a matching echo reply in time.",
        Column::Counter(|s| s.received),
    ),
    (
        "meshprobe_mesh_reordered_total",
        "Echo replies that arrived after the reply to a later-sent probe to the same target.",
        Column::Counter(|s| s.reordered()),
    ),
    (
        "meshprobe_mesh_rtt_seconds",
        "Round-trip time of echo replies (kernel receive timestamp minus send time).",
        Column::Histogram,
    ),
    (
        "meshprobe_mesh_send_errors_total",
        "Probes the kernel refused to send (no route, interface down); not counted as sent.",
        Column::Counter(|s| s.send_errors()),
    ),
    (
        "meshprobe_mesh_sent_total",
        "Echo requests sent whose outcome is known (sent = received + lost at all times).",
        Column::Counter(|s| s.sent),
    ),
];

/// Writes every per-target family, sorted by family name, handing `out` to `flush` whenever
/// it holds 64 KiB; stops when `flush` answers `Break` (the client went away).
pub fn render(
    out: &mut String,
    rows: &[RenderRow<'_>],
    buckets: &[f64],
    flush: &mut dyn FnMut(&mut String) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for (name, help, column) in &FAMILIES {
        match column {
            Column::Counter(get) => {
                expo::family(out, name, help, MetricType::Counter);
                for row in rows {
                    let value = get(row.stats()) as f64;
                    line(out, name, row.labels, None, value);
                    if out.len() >= FLUSH_AT {
                        flush(out)?;
                    }
                }
            }
            Column::Errors => {
                expo::family(out, name, help, MetricType::Counter);
                for row in rows {
                    let errors = row.stats().icmp_errors();
                    for (index, kind) in ICMP_ERROR_KINDS.iter().enumerate() {
                        let count = errors[index];
                        if count > 0 {
                            line(
                                out,
                                name,
                                row.labels,
                                Some(("type", kind.as_str())),
                                count as f64,
                            );
                        }
                    }
                }
            }
            Column::LastRtt => {
                expo::family(out, name, help, MetricType::Gauge);
                for row in rows {
                    let last_rtt = row.stats().last_rtt();
                    if let Some(rtt) = last_rtt {
                        line(out, name, row.labels, None, rtt);
                    }
                }
            }
            Column::Histogram => render_histogram(out, name, help, rows, buckets, flush)?,
        }
    }
    ControlFlow::Continue(())
}

fn render_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    rows: &[RenderRow<'_>],
    buckets: &[f64],
    flush: &mut dyn FnMut(&mut String) -> ControlFlow<()>,
) -> ControlFlow<()> {
    expo::family(out, name, help, MetricType::Histogram);
    let bucket_name = format!("{name}_bucket");
    let sum_name = format!("{name}_sum");
    let count_name = format!("{name}_count");
    // The `le` values are the same for every target: format them once.
    let uppers: Vec<String> = buckets
        .iter()
        .map(|upper| {
            let mut text = String::new();
            expo::go_float(&mut text, *upper);
            text
        })
        .collect();
    let mut counts = Vec::with_capacity(buckets.len() + 1);
    for row in rows {
        let (received, rtt_sum) = {
            let stats = row.stats();
            counts.clear();
            counts.extend(stats.bucket_counts());
            (stats.received, stats.rtt_sum)
        };
        let mut cumulative = 0u64;
        for (index, upper) in uppers.iter().enumerate() {
            cumulative += counts.get(index).copied().unwrap_or(0);
            line(
                out,
                &bucket_name,
                row.labels,
                Some(("le", upper)),
                cumulative as f64,
            );
        }
        line(
            out,
            &bucket_name,
            row.labels,
            Some(("le", "+Inf")),
            received as f64,
        );
        line(out, &sum_name, row.labels, None, rtt_sum);
        line(out, &count_name, row.labels, None, received as f64);
        if out.len() >= FLUSH_AT {
            flush(out)?;
        }
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordering_is_judged_by_arrival_not_processing_order() {
        let buckets = [0.001];
        let mut stats = TargetStats::new(1);
        // Sent 1, 2, 3; replies arrive 1, 3, 2: reply 2 is reordered.
        stats.record_reply(&buckets, 0.0001, 1, 10);
        stats.record_reply(&buckets, 0.0001, 3, 11);
        stats.record_reply(&buckets, 0.0001, 2, 12);
        assert_eq!(stats.reordered(), 1);
        // Same arrivals, processed in another order: same answer.
        let mut other = TargetStats::new(1);
        other.record_reply(&buckets, 0.0001, 2, 12);
        other.record_reply(&buckets, 0.0001, 1, 10);
        other.record_reply(&buckets, 0.0001, 3, 11);
        assert_eq!(other.reordered(), 1);
        assert_eq!(other.received, 3);
    }

    #[test]
    fn reordering_is_judged_across_the_32_bit_wrap() {
        let buckets = [0.001];
        let mut stats = TargetStats::new(1);
        // Send indices and arrival numbers that cross 2^32 (kept as their low 32 bits).
        let base = u64::from(u32::MAX) - 1;
        stats.record_reply(&buckets, 0.0001, base, base + 100);
        stats.record_reply(&buckets, 0.0001, base + 2, base + 101);
        stats.record_reply(&buckets, 0.0001, base + 1, base + 102);
        assert_eq!(stats.reordered(), 1);
        stats.record_reply(&buckets, 0.0001, base + 3, base + 103);
        assert_eq!(stats.reordered(), 1, "in order after the wrap");
        // A reply sent before one that already arrived is reordered, however far back.
        stats.record_reply(&buckets, 0.0001, base + 40, base + 104);
        stats.record_reply(&buckets, 0.0001, base + 10, base + 105);
        assert_eq!(stats.reordered(), 2);
    }

    #[test]
    fn histogram_and_counters_render_sorted_and_cumulative() {
        let buckets = [0.001, 0.01];
        let mut stats = TargetStats::new(2);
        stats.record_sent();
        stats.record_sent();
        stats.record_sent();
        stats.record_reply(&buckets, 0.0005, 1, 1);
        stats.record_reply(&buckets, 0.5, 2, 2);
        stats.record_lost(Some(IcmpErrorKind::TimeExceeded));
        let labels = render_labels(&LabelSet::new([("peer", "b")]));
        let mut out = String::new();
        let rows = [RenderRow {
            labels: &labels,
            stats: stats.snapshot(),
        }];
        // Flushing drains into `streamed`; the result must be the same text.
        let mut streamed = String::new();
        let mut flush = |chunk: &mut String| {
            streamed.push_str(chunk);
            chunk.clear();
            ControlFlow::Continue(())
        };
        let _ = render(&mut out, &rows, &buckets, &mut flush);
        streamed.push_str(&out);
        let out = streamed;
        assert!(
            out.contains("meshprobe_mesh_rtt_seconds_bucket{peer=\"b\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("meshprobe_mesh_rtt_seconds_bucket{peer=\"b\",le=\"0.01\"} 1\n"));
        assert!(out.contains("meshprobe_mesh_rtt_seconds_bucket{peer=\"b\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("meshprobe_mesh_rtt_seconds_count{peer=\"b\"} 2\n"));
        assert!(out.contains("meshprobe_mesh_errors_total{peer=\"b\",type=\"time_exceeded\"} 1\n"));
        assert!(out.contains("meshprobe_mesh_sent_total{peer=\"b\"} 3\n"));
        assert!(out.contains("meshprobe_mesh_last_rtt_seconds{peer=\"b\"} 0.5\n"));
        let families: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let mut sorted = families.clone();
        sorted.sort();
        assert_eq!(families, sorted);
    }
}
