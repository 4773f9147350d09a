//! A trace as people and scripts read it: the mtr-style table with the verdict under it
//! ([`text`]), and the JSON document of `meshprobe trace --json` and `/mesh.json` ([`json`]).
//!
//! Owns the wording of the verdict (where loss starts, which hops only rate-limit, where the
//! trace stopped) and the JSON field names. Pure formatting: no I/O.

use std::fmt::Write;

use serde_json::{Value, json};

use super::Trace;
use super::hops::{Hop, Stop, TraceReport};

/// mtr's rule, as the output states it.
pub const LOSS_RULE: &str = "loss starts at the first hop from which every later hop, and the \
     destination, also lose; loss at a hop that later hops do not show is the router \
     rate-limiting its ICMP replies, not packet loss";

fn milliseconds(duration: Option<std::time::Duration>) -> String {
    duration.map_or_else(
        || "-".to_string(),
        |d| format!("{:.3}", d.as_secs_f64() * 1000.0),
    )
}

fn seconds(duration: Option<std::time::Duration>) -> Value {
    duration.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// What stopped the trace, in words.
pub fn stop_text(report: &TraceReport) -> String {
    let last = report.hops.last().map_or(0, |hop| hop.ttl);
    match report.stop {
        Stop::Reached => format!("destination {} reached at hop {last}", report.destination),
        Stop::Unreachable {
            from,
            icmp_type,
            code,
        } => format!(
            "stopped at hop {last}: {} answered destination unreachable (type {icmp_type}, code {code})",
            from.map_or_else(|| "a router".to_string(), |a| a.to_string())
        ),
        Stop::MaxHops => format!(
            "destination {} not reached within {} hops",
            report.destination,
            report.hops.len()
        ),
    }
}

/// Where loss starts, in words ("no hop is blamed" when it does not persist).
pub fn verdict_text(report: &TraceReport) -> String {
    match report.loss_start {
        Some(start) => format!(
            "loss starts at hop {} ({})",
            start.ttl,
            start
                .address
                .map_or_else(|| "no answer".to_string(), |a| a.to_string())
        ),
        None => "no hop is blamed: the destination lost nothing".to_string(),
    }
}

/// The mtr-style report.
pub fn text(trace: &Trace) -> String {
    let report = &trace.report;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "meshprobe trace to {}: {} rounds, Paris flow (ICMP id {:#06x}, checksum {:#06x}){}",
        report.destination,
        report.rounds,
        trace.flow.id,
        trace.flow.checksum,
        trace
            .sending
            .socket_kind
            .map_or_else(String::new, |kind| format!(", {} socket", kind.as_str()))
    );
    let _ = writeln!(
        out,
        "{:>3}  {:<40} {:>5} {:>5} {:>6}  {:>8} {:>8} {:>8}",
        "TTL", "Address", "Sent", "Recv", "Loss%", "Min ms", "Avg ms", "Max ms"
    );
    for hop in &report.hops {
        hop_lines(&mut out, hop);
    }
    let _ = writeln!(out, "{}.", stop_text(report));
    let _ = writeln!(out, "{}.", verdict_text(report));
    for ttl in &report.rate_limited {
        let _ = writeln!(
            out,
            "hop {ttl}: its loss does not persist to later hops: rate limiting, not loss."
        );
    }
    if let Some(problem) = &trace.sending.send_problem {
        let _ = writeln!(out, "some probes were not sent: {problem}");
    }
    let _ = writeln!(out, "Rule: {LOSS_RULE}.");
    out
}

fn hop_lines(out: &mut String, hop: &Hop) {
    let address = hop
        .main_address()
        .map_or_else(|| "???".to_string(), |a| a.to_string());
    let _ = writeln!(
        out,
        "{:>3}  {:<40} {:>5} {:>5} {:>5.1}%  {:>8} {:>8} {:>8}",
        hop.ttl,
        address,
        hop.sent,
        hop.received,
        hop.loss_ratio() * 100.0,
        milliseconds(hop.rtt_min),
        milliseconds(hop.rtt_avg),
        milliseconds(hop.rtt_max),
    );
    for (other, count) in hop.addresses.iter().skip(1) {
        let _ = writeln!(out, "     {:<40} ({count} answers)", other.to_string());
    }
}

fn hop_json(hop: &Hop) -> Value {
    let addresses: Vec<String> = hop.addresses.iter().map(|(a, _)| a.to_string()).collect();
    let answers: Vec<Value> = hop
        .addresses
        .iter()
        .map(|(address, count)| json!({"address": address.to_string(), "answers": count}))
        .collect();
    json!({
        "ttl": hop.ttl,
        "addresses": addresses,
        "answers_by_address": answers,
        "sent": hop.sent,
        "received": hop.received,
        "loss_ratio": hop.loss_ratio(),
        "rtt_min_seconds": seconds(hop.rtt_min),
        "rtt_avg_seconds": seconds(hop.rtt_avg),
        "rtt_max_seconds": seconds(hop.rtt_max),
    })
}

/// The report's JSON: hops, whether the destination was reached, where loss starts.
pub fn report_json(report: &TraceReport) -> Value {
    let stopped = match report.stop {
        Stop::Reached => json!({"reason": "destination"}),
        Stop::Unreachable {
            from,
            icmp_type,
            code,
        } => json!({
            "reason": "unreachable",
            "from": from.map(|a| a.to_string()),
            "icmp_type": icmp_type,
            "code": code,
        }),
        Stop::MaxHops => json!({"reason": "max_hops"}),
    };
    json!({
        "destination": report.destination.to_string(),
        "rounds": report.rounds,
        "reached": report.reached(),
        "stopped": stopped,
        "hop_count": report.hop_count(),
        "hops": report.hops.iter().map(hop_json).collect::<Vec<_>>(),
        "loss_starts_at": report.loss_start.and_then(|s| s.address).map(|a| a.to_string()),
        "loss_starts_at_ttl": report.loss_start.map(|s| s.ttl),
        "rate_limited_ttls": report.rate_limited,
        "verdict": verdict_text(report),
        "rule": LOSS_RULE,
    })
}

/// `meshprobe trace --json`: the report plus how it was sent.
pub fn json(trace: &Trace) -> Value {
    let mut value = report_json(&trace.report);
    if let Value::Object(map) = &mut value {
        map.insert(
            "flow".into(),
            json!({"icmp_id": trace.flow.id, "icmp_checksum": trace.flow.checksum}),
        );
        map.insert(
            "socket".into(),
            json!(trace.sending.socket_kind.map(|kind| kind.as_str())),
        );
        map.insert("send_problem".into(), json!(trace.sending.send_problem));
    }
    value
}
