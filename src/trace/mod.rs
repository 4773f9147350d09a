//! Path tracing on the exporter's engine: echo requests with TTL 1..`max_hops`, several rounds,
//! every probe of one trace in one Paris-traceroute flow ([`crate::icmp::EchoFlow`]), aggregated
//! per hop with mtr's rule for blaming a hop (`hops.rs`), printed as text or JSON (`render.rs`).
//! `meshprobe trace` is `cli.rs`; the mesh's automatic tracer (`crate::mesh::trace_auto`) calls
//! [`trace`] too.
//!
//! Owns the sending side of a trace: per round, one probe per TTL up to where the path is known
//! to end, spaced [`TraceOptions::probe_gap`] apart, each waiting at most the timeout; rounds
//! start [`TraceOptions::round_interval`] apart. It uses [`Pinger::echo_in_flow`] like any other
//! caller of the engine, with no observer, so nothing it sends or receives is credited to a
//! mesh target.

pub mod cli;
pub mod hops;
pub mod render;

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::icmp::{
    Answer, EchoFailure, EchoFlow, EchoRequest, EchoResult, IcmpErrorKind, Pinger, SocketKind,
};
pub use hops::{Hop, HopRecorder, LossStart, ProbeOutcome, Stop, TraceReport};

/// How a trace is run.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    pub max_hops: u8,
    pub rounds: u32,
    /// How long each probe waits for its answer.
    pub timeout: Duration,
    /// Between the starts of two rounds (a round that takes longer starts the next at once).
    pub round_interval: Duration,
    /// Between two probes of one round.
    pub probe_gap: Duration,
    pub payload_size: usize,
    pub source: Option<IpAddr>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            max_hops: 30,
            rounds: 10,
            timeout: Duration::from_secs(1),
            round_interval: Duration::from_secs(1),
            probe_gap: Duration::from_millis(5),
            payload_size: 0,
            source: None,
        }
    }
}

/// A finished trace with how it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub report: TraceReport,
    /// The flow the probes kept: its `id` is the one on the wire (a ping socket's kernel
    /// chooses its own).
    pub flow: EchoFlow,
    pub sending: SendFacts,
}

/// What the engine said about sending a trace's probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendFacts {
    /// The socket kind the probes went out on (`None` if none could be opened).
    pub socket_kind: Option<SocketKind>,
    /// The echo id on the wire.
    pub icmp_id: Option<u16>,
    /// Why probes could not be sent, if some could not (the first such error).
    pub send_problem: Option<String>,
}

impl SendFacts {
    fn note(&mut self, result: &EchoResult) {
        match &result.outcome {
            Ok(_) | Err(EchoFailure::Timeout) => {
                self.socket_kind = self.socket_kind.or(result.socket_kind);
                self.icmp_id = self.icmp_id.or(Some(result.id));
            }
            Err(error) => {
                if self.send_problem.is_none() {
                    self.send_problem = Some(error.to_string());
                }
            }
        }
    }
}

/// What one answer means for the trace. Hop RTTs of ICMP errors are from the send to the
/// moment the engine handed the error over; echo replies use the kernel's receive timestamp.
fn outcome_of(result: &EchoResult, destination: IpAddr) -> ProbeOutcome {
    match &result.outcome {
        // The engine matches replies by their source, so a reply came from the destination.
        Ok(Answer::Echo { rtt, .. }) => ProbeOutcome::Reply {
            from: destination,
            rtt: *rtt,
        },
        Ok(Answer::IcmpError {
            kind: IcmpErrorKind::TimeExceeded,
            from: Some(from),
            ..
        }) => ProbeOutcome::TimeExceeded {
            from: *from,
            rtt: result.waited,
        },
        Ok(Answer::IcmpError {
            from,
            icmp_type,
            code,
            ..
        }) => ProbeOutcome::Unreachable {
            from: *from,
            icmp_type: *icmp_type,
            code: *code,
            rtt: result.waited,
        },
        Err(EchoFailure::Timeout) => ProbeOutcome::Lost,
        Err(_) => ProbeOutcome::NotSent,
    }
}

/// Traces the path to `destination`.
pub async fn trace(
    pinger: &Pinger,
    destination: IpAddr,
    scope_id: u32,
    options: &TraceOptions,
) -> Trace {
    let flow = EchoFlow::for_destination(destination);
    let max_hops = options.max_hops.max(1);
    let mut recorder = HopRecorder::new(destination, max_hops);
    let mut sending = SendFacts::default();
    let mut next_round = tokio::time::Instant::now();
    for _ in 0..options.rounds.max(1) {
        tokio::time::sleep_until(next_round).await;
        next_round += options.round_interval;
        recorder.start_round();
        let last_ttl = recorder.end_ttl().unwrap_or(max_hops);
        let mut in_flight = FuturesUnordered::new();
        for ttl in 1..=last_ttl {
            if ttl > 1 {
                // Keep the probes in flight polled while waiting, so answers are taken (and
                // their RTTs measured) as they come.
                let gap = tokio::time::sleep(options.probe_gap);
                tokio::pin!(gap);
                loop {
                    tokio::select! {
                        _ = &mut gap => break,
                        Some((ttl, result)) = in_flight.next() => {
                            sending.note(&result);
                            recorder.record(ttl, outcome_of(&result, destination));
                        }
                    }
                }
            }
            if recorder.end_ttl().is_some_and(|end| end < ttl) {
                break;
            }
            let request = EchoRequest {
                destination,
                scope_id,
                source: options.source,
                ttl: Some(ttl),
                dont_fragment: false,
                payload_size: options.payload_size,
            };
            let deadline = tokio::time::Instant::now() + options.timeout;
            in_flight.push(async move {
                let result = pinger.echo_in_flow(&request, deadline, flow).await;
                (ttl, result)
            });
        }
        while let Some((ttl, result)) = in_flight.next().await {
            sending.note(&result);
            recorder.record(ttl, outcome_of(&result, destination));
        }
    }
    Trace {
        report: recorder.finish(),
        flow: EchoFlow {
            id: sending.icmp_id.unwrap_or(flow.id),
            ..flow
        },
        sending,
    }
}
