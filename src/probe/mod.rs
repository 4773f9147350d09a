//! blackbox_exporter `/probe` semantics for the `icmp` prober: resolve → setup → rtt.
//!
//! Owns the probe timeout rule, the order of phases, the mapping from an engine result to
//! blackbox's metric values, meshprobe's extra per-probe families, and the per-probe log that
//! `debug=true` returns. It does no HTTP and opens no sockets itself (the [`Pinger`] does).

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod render;

pub use render::render;

use crate::burst::{self, BurstStats};
use crate::config::{Module, ip_protocol_name};

use crate::icmp::{Answer, EchoFailure, EchoRequest, Family, Pinger, SocketKind};
use crate::resolve;

/// Timeout when Prometheus sends no `X-Prometheus-Scrape-Timeout-Seconds` header.
const DEFAULT_SCRAPE_TIMEOUT_SECONDS: f64 = 120.0;

/// The longest a probe may wait: larger scrape-timeout headers and module timeouts are clamped
/// to it, so no header can hold a concurrency slot for centuries or overflow a clock.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(300);

/// A multi-packet module's burst must fit the probe timeout, or `/probe` answers 400 rather
/// than quietly sending fewer packets.
pub fn check_burst_budget(module: &Module, timeout: Duration) -> Result<(), String> {
    let burst = &module.icmp.burst;
    if burst.fits(timeout) {
        return Ok(());
    }
    Err(format!(
        "module's {} packets {:?} apart need more than the probe timeout of {:?} (the scrape \
         timeout minus --timeout-offset); raise the scrape timeout or lower icmp.packets",
        burst.packets, burst.packet_interval, timeout
    ))
}

/// blackbox's `getTimeout`: min(module timeout, scrape timeout − offset), with its quirks, at
/// most [`MAX_PROBE_TIMEOUT`].
pub fn probe_timeout(
    module_timeout: Duration,
    scrape_timeout_header: Option<&str>,
    offset_seconds: f64,
) -> Result<Duration, String> {
    let mut scrape = match scrape_timeout_header {
        Some(text) => text.trim().parse::<f64>().map_err(|e| {
            format!("Failed to parse timeout from Prometheus header: {e} ({text:?})")
        })?,
        None => 0.0,
    };
    if !scrape.is_finite() || scrape < 0.0 {
        return Err(format!(
            "Failed to parse timeout from Prometheus header: {scrape} is not a valid timeout"
        ));
    }
    if scrape == 0.0 {
        scrape = DEFAULT_SCRAPE_TIMEOUT_SECONDS;
    }
    let max = scrape - offset_seconds;
    let module = module_timeout.as_secs_f64();
    let seconds = if (module > 0.0 && module < max) || max < 0.0 {
        module
    } else {
        max
    };
    // Checked: 1e308 does not fit a Duration, and 9.3e18 s would overflow an Instant.
    let timeout = Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(MAX_PROBE_TIMEOUT);
    Ok(timeout.min(MAX_PROBE_TIMEOUT))
}

/// Why an ICMP probe failed; the `reason` label of `probe_icmp_failure_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Resolution,
    SourceAddress,
    Socket,
    Send,
    IcmpError,
    Timeout,
    /// A multi-packet probe got some replies, but fewer than `min_received`.
    Loss,
    /// Every sequence number for this target already had a probe waiting; nothing was sent.
    Busy,
    /// The target cannot be a hostname or IP address (`host:port`, a URL, `[::1]`); nothing was
    /// looked up or sent. blackbox fails the same targets at resolution.
    InvalidTarget,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Resolution => "resolution",
            FailureReason::SourceAddress => "source_address",
            FailureReason::Socket => "socket",
            FailureReason::Send => "send",
            FailureReason::IcmpError => "icmp_error",
            FailureReason::Timeout => "timeout",
            FailureReason::Loss => "loss",
            FailureReason::Busy => "busy",
            FailureReason::InvalidTarget => "invalid_target",
        }
    }
}

/// An ICMP error that answered the probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceivedIcmpError {
    pub kind: &'static str,
    pub code: u8,
    pub from: Option<IpAddr>,
}

/// Everything a `/probe` response reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeOutcome {
    pub success: bool,
    pub duration: Duration,
    pub timeout: Duration,
    pub dns_lookup: Duration,
    pub resolve: Duration,
    pub setup: Duration,
    pub rtt: Option<Duration>,
    pub hop_limit: Option<u8>,
    /// 4 or 6; 0 when resolution failed.
    pub ip_protocol: u8,
    pub ip_addr_hash: u32,
    pub failure: Option<FailureReason>,
    pub icmp_error: Option<ReceivedIcmpError>,
    pub kernel_timestamp: Option<bool>,
    pub socket_kind: Option<SocketKind>,
    /// Packet counts and RTT spread of a multi-packet probe (`icmp.packets` > 1).
    pub burst: Option<BurstStats>,
}

/// The per-probe log: the lines `debug=true` returns, in blackbox's logfmt style, and the same
/// lines on the main log at debug level (as blackbox logs them), each naming `module` and
/// `target`.
#[derive(Debug, Default)]
pub struct ProbeLog {
    capture: bool,
    module: String,
    target: String,
    lines: Vec<String>,
}

/// The keys a probe's log line may carry, besides `module` and `target` (which every line has).
const LINE_KEYS: [&str; 14] = [
    "ip_protocol",
    "ip",
    "srcIP",
    "seq",
    "id",
    "rtt_seconds",
    "duration_seconds",
    "timeout_seconds",
    "reason",
    "type",
    "icmp_type",
    "code",
    "from",
    "err",
];

impl ProbeLog {
    pub fn new(capture: bool, module: &str, target: &str) -> ProbeLog {
        ProbeLog {
            capture,
            module: module.to_string(),
            target: target.to_string(),
            lines: Vec::new(),
        }
    }

    pub(crate) fn record(
        &mut self,
        level: tracing::Level,
        message: &str,
        fields: &[(&str, &dyn std::fmt::Display)],
    ) {
        let enabled = tracing::enabled!(target: "meshprobe::probe", tracing::Level::DEBUG);
        // Formatting costs more than the rest of a probe; skip it when nobody reads the line.
        if !enabled && !self.capture {
            return;
        }
        debug_assert!(
            fields
                .iter()
                .all(|(key, _)| *key == "target" || LINE_KEYS.contains(key)),
            "add the key to LINE_KEYS"
        );
        if enabled {
            self.emit(message, fields);
        }
        if self.capture {
            let mut rendered = String::new();
            for (key, value) in fields {
                let value = value.to_string();
                if value.is_empty() || value.contains([' ', '"', '=']) {
                    let _ = write!(rendered, " {key}={value:?}");
                } else {
                    let _ = write!(rendered, " {key}={value}");
                }
            }
            let level = level.as_str().to_ascii_lowercase();
            self.lines
                .push(format!("level={level} msg={message:?}{rendered}"));
        }
    }

    /// One structured debug event: `module`, `target`, the message, then the line's own keys
    /// (its `target`, the same as the probe's, is not repeated).
    fn emit(&self, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| tracing::field::display(*value))
        };
        tracing::debug!(
            target: "meshprobe::probe",
            module = %self.module,
            "target" = %self.target,
            ip_protocol = field("ip_protocol"),
            ip = field("ip"),
            srcIP = field("srcIP"),
            seq = field("seq"),
            id = field("id"),
            rtt_seconds = field("rtt_seconds"),
            duration_seconds = field("duration_seconds"),
            timeout_seconds = field("timeout_seconds"),
            reason = field("reason"),
            "type" = field("type"),
            icmp_type = field("icmp_type"),
            code = field("code"),
            from = field("from"),
            err = field("err"),
            "{message}"
        );
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The captured lines, leaving none.
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}

/// Settings that come from flags rather than the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeOptions {
    /// Export `rtt` = 0 on failure exactly like blackbox, instead of omitting the sample.
    pub rtt_zero_on_failure: bool,
    /// Answer 400 to a target that cannot be a hostname or IP address, to conflicting duplicate
    /// parameters and to `debug=` other than true/false, instead of blackbox's 200 with a failed
    /// probe (`--probe.strict`).
    pub strict_requests: bool,
}

/// The outcome of a probe that never started because `target` cannot be a hostname or IP
/// address: what blackbox reports for it (its lookup fails), with the reason named, and nothing
/// looked up or sent.
pub fn invalid_target(
    target: &str,
    problem: &str,
    timeout: Duration,
    log: &mut ProbeLog,
) -> ProbeOutcome {
    let start = Instant::now();
    log.record(
        tracing::Level::DEBUG,
        "Invalid target",
        &[("target", &target), ("err", &problem)],
    );
    let outcome = ProbeOutcome {
        timeout,
        ..ProbeOutcome::default()
    };
    finish(outcome, FailureReason::InvalidTarget, start, log)
}

/// The target resolved to an address outside `allowed_targets`; nothing was sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("target address {address} is not in allowed_targets")]
pub struct NotAllowed {
    pub address: IpAddr,
}

/// Runs one blackbox-style ICMP probe against `target`. `is_allowed` is asked about the resolved
/// address before any packet is sent to it.
pub async fn run_icmp_probe(
    pinger: &Pinger,
    target: &str,
    module: &Module,
    timeout: Duration,
    is_allowed: &(dyn Fn(IpAddr) -> bool + Sync),
    log: &mut ProbeLog,
) -> Result<ProbeOutcome, NotAllowed> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + timeout.min(MAX_PROBE_TIMEOUT));
    let mut outcome = ProbeOutcome {
        timeout,
        ..ProbeOutcome::default()
    };
    let settings = &module.icmp;
    let protocol = ip_protocol_name(settings.preferred_ip_protocol);
    log.record(
        tracing::Level::DEBUG,
        "Resolving target address",
        &[("target", &target), ("ip_protocol", &protocol)],
    );
    let resolution = tokio::time::timeout_at(
        deadline,
        resolve::resolve(
            target,
            settings.preferred_ip_protocol,
            settings.ip_protocol_fallback,
        ),
    )
    .await
    .unwrap_or_else(|_| Err(format!("lookup {target}: timed out")));
    outcome.dns_lookup = start.elapsed();
    let resolved = match resolution {
        Ok(resolved) => resolved,
        Err(error) => {
            log.record(
                tracing::Level::ERROR,
                "Error resolving address",
                &[("err", &error)],
            );
            return Ok(finish(outcome, FailureReason::Resolution, start, log));
        }
    };
    if !is_allowed(resolved.address) {
        return Err(NotAllowed {
            address: resolved.address,
        });
    }
    outcome.resolve = outcome.dns_lookup;
    let family = Family::of(&resolved.address);
    outcome.ip_protocol = family.protocol_number();
    outcome.ip_addr_hash = resolve::address_hash(resolved.address);
    log.record(
        tracing::Level::DEBUG,
        "Resolved target address",
        &[("target", &target), ("ip", &resolved.address)],
    );
    if timeout.is_zero() {
        // The scrape timeout is below --timeout-offset and the module sets none: blackbox's
        // context has expired before the probe starts, so it fails. Send nothing.
        log.record(
            tracing::Level::WARN,
            "Timeout reading from socket",
            &[("timeout_seconds", &0)],
        );
        return Ok(finish(outcome, FailureReason::Timeout, start, log));
    }

    if let Some(source) = settings.source_ip_address {
        log.record(
            tracing::Level::DEBUG,
            "Using source address",
            &[("srcIP", &source)],
        );
        if Family::of(&source) != family {
            let error = format!("source_ip_address {source} is not of the target's address family");
            log.record(
                tracing::Level::ERROR,
                "Error listening to socket",
                &[("err", &error)],
            );
            return Ok(finish(outcome, FailureReason::SourceAddress, start, log));
        }
    }
    let dont_fragment = settings.dont_fragment && family == Family::V4;
    let ttl = match (settings.ttl, dont_fragment) {
        (0, true) => Some(64),
        (0, false) => None,
        (ttl, _) => Some(ttl),
    };
    let request = EchoRequest {
        destination: resolved.address,
        scope_id: resolved.scope_id,
        source: settings.source_ip_address,
        ttl,
        dont_fragment,
        payload_size: settings.payload_size,
    };
    if settings.burst.is_multi() {
        let run = burst::run(pinger, &request, &settings.burst, deadline).await;
        return Ok(burst::conclude(outcome, run, &settings.burst, start, log));
    }
    let result = pinger.echo(&request, deadline).await;
    outcome.socket_kind = result.socket_kind;
    log.record(
        tracing::Level::DEBUG,
        "Creating ICMP packet",
        &[("seq", &result.seq), ("id", &result.id)],
    );
    let outcome = match result.outcome {
        Ok(Answer::Echo {
            rtt,
            hop_limit,
            kernel_timestamp,
            ..
        }) => {
            outcome.setup = result.setup;
            outcome.rtt = Some(rtt);
            outcome.hop_limit = hop_limit;
            outcome.kernel_timestamp = Some(kernel_timestamp);
            outcome.success = true;
            log.record(
                tracing::Level::DEBUG,
                "Found matching reply packet",
                &[("rtt_seconds", &rtt.as_secs_f64())],
            );
            outcome.duration = start.elapsed();
            log.record(
                tracing::Level::DEBUG,
                "Probe succeeded",
                &[("duration_seconds", &outcome.duration.as_secs_f64())],
            );
            outcome
        }
        Ok(Answer::IcmpError {
            kind,
            icmp_type,
            code,
            from,
        }) => {
            outcome.setup = result.setup;
            outcome.icmp_error = Some(ReceivedIcmpError {
                kind: kind.as_str(),
                code,
                from,
            });
            let from_text = from.map_or_else(|| "unknown".to_string(), |a| a.to_string());
            log.record(
                tracing::Level::WARN,
                "ICMP error received instead of an echo reply",
                &[
                    ("type", &kind.as_str()),
                    ("icmp_type", &icmp_type),
                    ("code", &code),
                    ("from", &from_text),
                ],
            );
            finish(outcome, FailureReason::IcmpError, start, log)
        }
        Err(EchoFailure::Socket(error)) => {
            log.record(
                tracing::Level::ERROR,
                "Error listening to socket",
                &[("err", &error)],
            );
            finish(outcome, FailureReason::Socket, start, log)
        }
        Err(EchoFailure::Send(error)) => {
            outcome.setup = result.setup;
            log.record(
                tracing::Level::WARN,
                "Error writing to socket",
                &[("err", &error)],
            );
            finish(outcome, FailureReason::Send, start, log)
        }
        Err(EchoFailure::Timeout) => {
            outcome.setup = result.setup;
            log.record(
                tracing::Level::WARN,
                "Timeout reading from socket",
                &[("timeout_seconds", &timeout.as_secs_f64())],
            );
            finish(outcome, FailureReason::Timeout, start, log)
        }
        Err(EchoFailure::Busy) => {
            outcome.setup = result.setup;
            log.record(
                tracing::Level::WARN,
                "Too many probes in flight to this target",
                &[("err", &EchoFailure::Busy)],
            );
            finish(outcome, FailureReason::Busy, start, log)
        }
    };
    Ok(outcome)
}

pub(crate) fn finish(
    mut outcome: ProbeOutcome,
    reason: FailureReason,
    start: Instant,
    log: &mut ProbeLog,
) -> ProbeOutcome {
    outcome.failure = Some(reason);
    outcome.duration = start.elapsed();
    log.record(
        tracing::Level::ERROR,
        "Probe failed",
        &[
            ("duration_seconds", &outcome.duration.as_secs_f64()),
            ("reason", &reason.as_str()),
        ],
    );
    outcome
}

#[cfg(test)]
mod tests;
