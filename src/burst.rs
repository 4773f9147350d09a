//! Multi-packet `/probe` (`icmp.packets` > 1): `ping -c N` semantics in one scrape.
//!
//! Owns sending a probe's packets evenly spaced on the shared socket (each with its own sequence
//! number and nonce, all waiting until the probe's deadline), counting replies exactly (a
//! duplicate is never a second reply; an ICMP error is that packet's loss), the RTT statistics
//! (min, mean, max, population standard deviation, RFC 3550-style jitter, and the median that
//! becomes `phase="rtt"`), and rendering the extra families. `probe.rs` calls it; with one packet
//! nothing here runs and the output is blackbox's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::config::burst::Burst;
use crate::expo::{self, MetricType};
use crate::icmp::{Answer, EchoFailure, EchoRequest, EchoResult, Pinger, ReplyObserver};
use crate::probe::{self, FailureReason, ProbeLog, ProbeOutcome, ReceivedIcmpError};

/// Counts duplicate replies to any packet of one probe.
#[derive(Default)]
struct DuplicateCount(AtomicU32);

impl ReplyObserver for DuplicateCount {
    fn duplicate(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the packets of one probe came back with, in send order.
pub struct BurstRun {
    pub results: Vec<EchoResult>,
    pub duplicated: u32,
}

/// Sends `burst.packets` copies of `request`, `burst.packet_interval` apart, and waits for all
/// of them until `deadline`.
pub async fn run(
    pinger: &Pinger,
    request: &EchoRequest,
    burst: &Burst,
    deadline: tokio::time::Instant,
) -> BurstRun {
    let duplicates = Arc::new(DuplicateCount::default());
    let start = tokio::time::Instant::now();
    let packets = (0..burst.packets).map(|index| {
        let observer: Arc<dyn ReplyObserver> = duplicates.clone();
        let send_at = start + burst.packet_interval * index;
        async move {
            tokio::time::sleep_until(send_at).await;
            pinger
                .echo_observed(request, deadline, Some(observer))
                .await
        }
    });
    let results = join_all(packets).await;
    BurstRun {
        results,
        duplicated: duplicates.0.load(Ordering::Relaxed),
    }
}

/// RTT statistics over the replies of one probe (or one `meshprobe ping` run), in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttSpread {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    /// Population standard deviation (iputils ping's `mdev`).
    pub stddev: f64,
    pub median: f64,
    /// Mean absolute difference of consecutive RTTs (RFC 3550's idea); `None` below two replies.
    pub jitter: Option<f64>,
}

impl RttSpread {
    /// Statistics of `rtts`, given in send order; `None` when there is none.
    pub fn of(rtts: &[Duration]) -> Option<RttSpread> {
        let seconds: Vec<f64> = rtts.iter().map(Duration::as_secs_f64).collect();
        let count = seconds.len() as f64;
        let first = *seconds.first()?;
        let min = seconds.iter().copied().fold(first, f64::min);
        let max = seconds.iter().copied().fold(first, f64::max);
        let mean = seconds.iter().sum::<f64>() / count;
        let variance = seconds.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / count;
        let jitter = (seconds.len() >= 2).then(|| {
            let steps = seconds.windows(2).map(|w| (w[1] - w[0]).abs());
            steps.sum::<f64>() / (count - 1.0)
        });
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(RttSpread {
            min,
            mean,
            max,
            stddev: variance.sqrt(),
            median,
            jitter,
        })
    }
}

/// The multi-packet part of a probe's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstStats {
    pub sent: u32,
    pub received: u32,
    pub duplicated: u32,
    pub spread: Option<RttSpread>,
}

impl BurstStats {
    /// Counts a run: sent are the packets the kernel took, received those answered by an echo
    /// reply (each once), and the spread is over those replies' RTTs in send order.
    pub fn of(run: &BurstRun) -> BurstStats {
        let sent = run
            .results
            .iter()
            .filter(|result| !matches!(result.outcome, Err(ref e) if is_unsent(e)))
            .count() as u32;
        let rtts: Vec<Duration> = run
            .results
            .iter()
            .filter_map(|result| match result.outcome {
                Ok(Answer::Echo { rtt, .. }) => Some(rtt),
                _ => None,
            })
            .collect();
        BurstStats {
            sent,
            received: rtts.len() as u32,
            duplicated: run.duplicated,
            spread: RttSpread::of(&rtts),
        }
    }
}

/// Failures where no packet left (the socket, the send, or no free sequence number).
fn is_unsent(error: &EchoFailure) -> bool {
    !matches!(error, EchoFailure::Timeout)
}

/// Turns a finished run into the probe's outcome: success when at least `min_received` packets
/// were answered; `phase="rtt"` is the median RTT; on failure the reason is the first of socket,
/// send or busy that stopped every packet, else `loss` (some replies, too few), else `icmp_error`
/// (an error answered a packet; the last one is reported), else `timeout`.
pub fn conclude(
    mut outcome: ProbeOutcome,
    run: BurstRun,
    burst: &Burst,
    start: Instant,
    log: &mut ProbeLog,
) -> ProbeOutcome {
    let stats = BurstStats::of(&run);
    if let Some(first) = run.results.first() {
        outcome.setup = first.setup;
        outcome.socket_kind = first.socket_kind;
    }
    let mut last_error = None;
    let mut all_kernel = true;
    for result in &run.results {
        match &result.outcome {
            Ok(Answer::Echo {
                rtt,
                hop_limit,
                kernel_timestamp,
                ..
            }) => {
                outcome.hop_limit = outcome.hop_limit.or(*hop_limit);
                all_kernel &= *kernel_timestamp;
                log.record(
                    tracing::Level::DEBUG,
                    "Found matching reply packet",
                    &[("seq", &result.seq), ("rtt_seconds", &rtt.as_secs_f64())],
                );
            }
            Ok(Answer::IcmpError {
                kind,
                icmp_type,
                code,
                from,
            }) => {
                let from_text = from.map(|a| a.to_string()).unwrap_or_default();
                log.record(
                    tracing::Level::DEBUG,
                    "ICMP error received instead of an echo reply",
                    &[
                        ("seq", &result.seq),
                        ("type", &kind.as_str()),
                        ("icmp_type", icmp_type),
                        ("code", code),
                        ("from", &from_text),
                    ],
                );
                last_error = Some(ReceivedIcmpError {
                    kind: kind.as_str(),
                    code: *code,
                    from: *from,
                });
            }
            Err(error) => log.record(
                tracing::Level::DEBUG,
                "Packet not answered",
                &[("seq", &result.seq), ("err", error)],
            ),
        }
    }
    let success = stats.received >= burst.min_received;
    let stopped_every_packet = |wanted: fn(&EchoFailure) -> bool| {
        run.results
            .iter()
            .all(|r| matches!(&r.outcome, Err(e) if wanted(e)))
    };
    let reason = if success {
        None
    } else if stopped_every_packet(|e| matches!(e, EchoFailure::Socket(_))) {
        Some(FailureReason::Socket)
    } else if stopped_every_packet(|e| matches!(e, EchoFailure::Send(_))) {
        Some(FailureReason::Send)
    } else if stopped_every_packet(|e| matches!(e, EchoFailure::Busy)) {
        Some(FailureReason::Busy)
    } else if stats.received > 0 {
        Some(FailureReason::Loss)
    } else if last_error.is_some() {
        Some(FailureReason::IcmpError)
    } else {
        Some(FailureReason::Timeout)
    };
    if success {
        outcome.rtt = stats.spread.map(|s| Duration::from_secs_f64(s.median));
        outcome.kernel_timestamp = Some(all_kernel);
    }
    if reason == Some(FailureReason::IcmpError) {
        outcome.icmp_error = last_error;
    }
    outcome.success = success;
    outcome.burst = Some(stats);
    match reason {
        Some(reason) => probe::finish(outcome, reason, start, log),
        None => {
            outcome.duration = start.elapsed();
            outcome
        }
    }
}

/// `probe_icmp_jitter_seconds` (sorted between `..._failure_reason` and `..._kernel_timestamp`).
pub fn render_jitter(out: &mut String, stats: &BurstStats) {
    if let Some(jitter) = stats.spread.and_then(|s| s.jitter) {
        expo::single(
            out,
            "probe_icmp_jitter_seconds",
            "Mean absolute difference of consecutive echo reply round trip times in seconds",
            MetricType::Gauge,
            jitter,
        );
    }
}

/// `probe_icmp_packets_*` (sorted between `..._kernel_timestamp` and `..._reply_hop_limit`).
pub fn render_packets(out: &mut String, stats: &BurstStats) {
    for (name, help, value) in [
        (
            "probe_icmp_packets_duplicated",
            "Number of duplicate echo replies received in the probe",
            stats.duplicated,
        ),
        (
            "probe_icmp_packets_received",
            "Number of echo requests answered by an echo reply in the probe",
            stats.received,
        ),
        (
            "probe_icmp_packets_sent",
            "Number of echo requests sent in the probe",
            stats.sent,
        ),
    ] {
        expo::single(out, name, help, MetricType::Gauge, f64::from(value));
    }
}

/// `probe_icmp_rtt_{max,mean,min,stddev}_seconds` (sorted after `..._reply_hop_limit`).
pub fn render_spread(out: &mut String, stats: &BurstStats) {
    let Some(spread) = stats.spread else {
        return;
    };
    for (name, help, value) in [
        (
            "probe_icmp_rtt_max_seconds",
            "Longest echo reply round trip time of the probe in seconds",
            spread.max,
        ),
        (
            "probe_icmp_rtt_mean_seconds",
            "Mean echo reply round trip time of the probe in seconds",
            spread.mean,
        ),
        (
            "probe_icmp_rtt_min_seconds",
            "Shortest echo reply round trip time of the probe in seconds",
            spread.min,
        ),
        (
            "probe_icmp_rtt_stddev_seconds",
            "Standard deviation of the echo reply round trip times of the probe in seconds",
            spread.stddev,
        ),
    ] {
        expo::single(out, name, help, MetricType::Gauge, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn spread_of_known_rtts() {
        let spread = RttSpread::of(&ms(&[1, 2, 3, 4, 5])).expect("replies");
        assert!((spread.min - 0.001).abs() < 1e-12);
        assert!((spread.max - 0.005).abs() < 1e-12);
        assert!((spread.mean - 0.003).abs() < 1e-12);
        assert!((spread.median - 0.003).abs() < 1e-12);
        // Population standard deviation of 1..5 ms: sqrt(2) ms.
        assert!((spread.stddev - 2f64.sqrt() / 1000.0).abs() < 1e-12);
        assert!((spread.jitter.expect("jitter") - 0.001).abs() < 1e-12);
    }

    #[test]
    fn jitter_follows_send_order_and_median_of_an_even_count() {
        let spread = RttSpread::of(&ms(&[1, 5, 1, 5])).expect("replies");
        assert!((spread.jitter.expect("jitter") - 0.004).abs() < 1e-12);
        assert!((spread.median - 0.003).abs() < 1e-12);
        let single = RttSpread::of(&ms(&[7])).expect("one reply");
        assert_eq!(single.jitter, None);
        assert_eq!(single.stddev, 0.0);
        assert_eq!(RttSpread::of(&[]), None);
    }
}
