//! Rendering a `/probe` response: blackbox's families, with its help strings and in its sorted
//! order, plus meshprobe's additions (failure reason, ICMP error, kernel timestamp, and the
//! multi-packet families from [`crate::burst`]). Pure: an outcome in, text out.

use crate::burst;
use crate::expo::{self, MetricType};

use super::{ProbeOptions, ProbeOutcome};

/// Renders the `/probe` response body: blackbox's families plus meshprobe's, sorted by name.
pub fn render(outcome: &ProbeOutcome, options: ProbeOptions) -> String {
    let mut out = String::with_capacity(2048);
    expo::single(
        &mut out,
        "probe_dns_lookup_time_seconds",
        "Returns the time taken for probe dns lookup in seconds",
        MetricType::Gauge,
        outcome.dns_lookup.as_secs_f64(),
    );
    expo::single(
        &mut out,
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
        MetricType::Gauge,
        outcome.duration.as_secs_f64(),
    );
    expo::family(
        &mut out,
        "probe_icmp_duration_seconds",
        "Duration of icmp request by phase",
        MetricType::Gauge,
    );
    expo::sample(
        &mut out,
        "probe_icmp_duration_seconds",
        &[("phase", "resolve")],
        outcome.resolve.as_secs_f64(),
    );
    match outcome.rtt {
        Some(rtt) => expo::sample(
            &mut out,
            "probe_icmp_duration_seconds",
            &[("phase", "rtt")],
            rtt.as_secs_f64(),
        ),
        None if options.rtt_zero_on_failure => expo::sample(
            &mut out,
            "probe_icmp_duration_seconds",
            &[("phase", "rtt")],
            0.0,
        ),
        None => {}
    }
    expo::sample(
        &mut out,
        "probe_icmp_duration_seconds",
        &[("phase", "setup")],
        outcome.setup.as_secs_f64(),
    );
    if let Some(error) = &outcome.icmp_error {
        let from = error.from.map(|a| a.to_string()).unwrap_or_default();
        let code = error.code.to_string();
        expo::family(
            &mut out,
            "probe_icmp_error_info",
            "ICMP error that answered the probe instead of an echo reply: its type, code and sender",
            MetricType::Gauge,
        );
        expo::sample(
            &mut out,
            "probe_icmp_error_info",
            &[("code", &code), ("from", &from), ("type", error.kind)],
            1.0,
        );
    }
    if let Some(reason) = outcome.failure {
        expo::family(
            &mut out,
            "probe_icmp_failure_reason",
            "Why the ICMP probe failed (present only on failure)",
            MetricType::Gauge,
        );
        expo::sample(
            &mut out,
            "probe_icmp_failure_reason",
            &[("reason", reason.as_str())],
            1.0,
        );
    }
    if let Some(stats) = &outcome.burst {
        burst::render_jitter(&mut out, stats);
    }
    if let Some(kernel) = outcome.kernel_timestamp {
        expo::single(
            &mut out,
            "probe_icmp_kernel_timestamp",
            "Whether the rtt phase was measured with a kernel receive timestamp (1) or the user-space clock (0)",
            MetricType::Gauge,
            if kernel { 1.0 } else { 0.0 },
        );
    }
    if let Some(stats) = &outcome.burst {
        burst::render_packets(&mut out, stats);
    }
    if let (true, Some(hop_limit)) = (outcome.success, outcome.hop_limit) {
        expo::single(
            &mut out,
            "probe_icmp_reply_hop_limit",
            "Replied packet hop limit (TTL for ipv4)",
            MetricType::Gauge,
            f64::from(hop_limit),
        );
    }
    if let Some(stats) = &outcome.burst {
        burst::render_spread(&mut out, stats);
    }
    expo::single(
        &mut out,
        "probe_ip_addr_hash",
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        MetricType::Gauge,
        f64::from(outcome.ip_addr_hash),
    );
    expo::single(
        &mut out,
        "probe_ip_protocol",
        "Specifies whether probe ip protocol is IP4 or IP6",
        MetricType::Gauge,
        f64::from(outcome.ip_protocol),
    );
    expo::single(
        &mut out,
        "probe_success",
        "Displays whether or not the probe was a success",
        MetricType::Gauge,
        if outcome.success { 1.0 } else { 0.0 },
    );
    expo::single(
        &mut out,
        "probe_timeout_seconds",
        "Returns how long the probe timeout is in seconds",
        MetricType::Gauge,
        outcome.timeout.as_secs_f64(),
    );
    out
}
