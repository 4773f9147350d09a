//! The pure half of path tracing: what each probe of a trace got back ([`ProbeOutcome`]), the
//! per-hop aggregation into a [`TraceReport`] (addresses, sent, received, loss, RTTs, where the
//! trace stopped), and mtr's rule for blaming a hop ([`loss_start`]).
//!
//! No I/O and no clock: `mod.rs` sends the probes and feeds the outcomes in, so every rule here
//! is unit-tested without root.

use std::net::IpAddr;
use std::time::Duration;

/// What one probe at one TTL got back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeOutcome {
    /// An echo reply: the probe reached the destination.
    Reply { from: IpAddr, rtt: Duration },
    /// Time exceeded from a router on the way.
    TimeExceeded { from: IpAddr, rtt: Duration },
    /// Destination unreachable (or another ICMP error that ends the path) from `from`.
    Unreachable {
        from: Option<IpAddr>,
        icmp_type: u8,
        code: u8,
        rtt: Duration,
    },
    /// No answer by the deadline.
    Lost,
    /// The probe could not be sent (socket, send error, no free sequence number).
    NotSent,
}

/// One hop of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub ttl: u8,
    /// Every address that answered at this TTL with how many answers, most answers first.
    pub addresses: Vec<(IpAddr, u32)>,
    pub sent: u32,
    pub received: u32,
    pub rtt_min: Option<Duration>,
    pub rtt_avg: Option<Duration>,
    pub rtt_max: Option<Duration>,
}

impl Hop {
    /// Share of probes at this TTL without an answer (0 when none was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.sent - self.received) / f64::from(self.sent)
        }
    }

    pub fn loses(&self) -> bool {
        self.received < self.sent
    }

    /// The address that answered most often, if any answered.
    pub fn main_address(&self) -> Option<IpAddr> {
        self.addresses.first().map(|(address, _)| *address)
    }
}

/// Why the trace ended where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The destination answered at the last hop.
    Reached,
    /// A router (or the destination) answered "unreachable" at the last hop.
    Unreachable {
        from: Option<IpAddr>,
        icmp_type: u8,
        code: u8,
    },
    /// Neither within `max_hops`.
    MaxHops,
}

/// Where the mtr rule puts the start of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossStart {
    pub ttl: u8,
    /// The hop's address; `None` when that hop never answered.
    pub address: Option<IpAddr>,
}

/// A finished trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceReport {
    pub destination: IpAddr,
    pub rounds: u32,
    /// Hops from TTL 1 to where the trace stopped.
    pub hops: Vec<Hop>,
    pub stop: Stop,
    pub loss_start: Option<LossStart>,
    /// Hops that lose answers while a later hop answers fully: rate limiting, not loss.
    pub rate_limited: Vec<u8>,
}

impl TraceReport {
    pub fn reached(&self) -> bool {
        self.stop == Stop::Reached
    }

    /// Hops to the destination (or to the last hop that answered, when not reached).
    pub fn hop_count(&self) -> u8 {
        match self.stop {
            Stop::Reached | Stop::Unreachable { .. } => self.hops.last().map_or(0, |h| h.ttl),
            Stop::MaxHops => self
                .hops
                .iter()
                .rev()
                .find(|h| h.received > 0)
                .map_or(0, |h| h.ttl),
        }
    }

    /// The path as one line: each hop's main address, `*` for a hop that never answered.
    pub fn path_text(&self) -> String {
        let hops: Vec<String> = self
            .hops
            .iter()
            .map(|hop| {
                hop.main_address()
                    .map_or("*".to_string(), |a| a.to_string())
            })
            .collect();
        hops.join(" ")
    }

    /// Whether `other` is a different path: a hop both traces heard from has another main
    /// address, or both reached the destination at different hop counts. Silent hops (rate
    /// limiting) are no change.
    pub fn path_differs(&self, other: &TraceReport) -> bool {
        let hop_differs = self.hops.iter().zip(&other.hops).any(
            |(a, b)| matches!((a.main_address(), b.main_address()), (Some(x), Some(y)) if x != y),
        );
        let length_differs =
            self.reached() && other.reached() && self.hops.len() != other.hops.len();
        hop_differs || length_differs
    }
}

/// mtr's rule: loss starts at the first hop from which every later hop, and the destination
/// (the last hop), also lose. Returns that hop's index, or `None` when the last hop answered
/// every probe (earlier losses are then routers rate-limiting their ICMP replies).
pub fn loss_start(hops: &[Hop]) -> Option<usize> {
    let last = hops.last()?;
    if !last.loses() {
        return None;
    }
    let persistent_from = hops
        .iter()
        .rposition(|hop| !hop.loses())
        .map_or(0, |i| i + 1);
    Some(persistent_from)
}

/// Collects the outcomes of a trace, TTL by TTL.
#[derive(Debug)]
pub struct HopRecorder {
    destination: IpAddr,
    /// Outcomes per TTL (index 0 is TTL 1).
    outcomes: Vec<Vec<ProbeOutcome>>,
    rounds: u32,
}

impl HopRecorder {
    pub fn new(destination: IpAddr, max_hops: u8) -> HopRecorder {
        HopRecorder {
            destination,
            outcomes: vec![Vec::new(); usize::from(max_hops)],
            rounds: 0,
        }
    }

    pub fn start_round(&mut self) {
        self.rounds += 1;
    }

    pub fn record(&mut self, ttl: u8, outcome: ProbeOutcome) {
        if let Some(slot) = usize::from(ttl)
            .checked_sub(1)
            .and_then(|index| self.outcomes.get_mut(index))
        {
            slot.push(outcome);
        }
    }

    /// The TTL at which the path ends so far: the lowest that got an echo reply or an
    /// unreachable. Later rounds need not probe beyond it.
    pub fn end_ttl(&self) -> Option<u8> {
        self.outcomes
            .iter()
            .position(|outcomes| {
                outcomes.iter().any(|o| {
                    matches!(
                        o,
                        ProbeOutcome::Reply { .. } | ProbeOutcome::Unreachable { .. }
                    )
                })
            })
            .and_then(|index| u8::try_from(index + 1).ok())
    }

    /// The report: hops up to where the path ends (or up to one past the last hop that
    /// answered, when it does not end within the hops probed).
    pub fn finish(&self) -> TraceReport {
        let (length, stop) = match self.end_ttl() {
            Some(ttl) => {
                let outcomes = &self.outcomes[usize::from(ttl) - 1];
                let unreachable = outcomes.iter().find_map(|o| match o {
                    ProbeOutcome::Unreachable {
                        from,
                        icmp_type,
                        code,
                        ..
                    } => Some(Stop::Unreachable {
                        from: *from,
                        icmp_type: *icmp_type,
                        code: *code,
                    }),
                    _ => None,
                });
                let reached = outcomes
                    .iter()
                    .any(|o| matches!(o, ProbeOutcome::Reply { .. }));
                let stop = match (reached, unreachable) {
                    (true, _) | (false, None) => Stop::Reached,
                    (false, Some(unreachable)) => unreachable,
                };
                (usize::from(ttl), stop)
            }
            None => {
                let answered = self.outcomes.iter().rposition(|outcomes| {
                    outcomes
                        .iter()
                        .any(|o| !matches!(o, ProbeOutcome::Lost | ProbeOutcome::NotSent))
                });
                let sent = self.outcomes.iter().rposition(|o| !o.is_empty());
                let length = answered.map_or(1, |i| i + 2).min(sent.map_or(0, |i| i + 1));
                (length, Stop::MaxHops)
            }
        };
        let hops: Vec<Hop> = self.outcomes[..length]
            .iter()
            .zip(1u8..)
            .map(|(outcomes, ttl)| aggregate(ttl, outcomes))
            .collect();
        let loss_start = loss_start(&hops).map(|index| LossStart {
            ttl: hops[index].ttl,
            address: hops[index].main_address(),
        });
        let blamed_from = loss_start.map_or(u8::MAX, |start| start.ttl);
        let rate_limited = hops
            .iter()
            .filter(|hop| hop.loses() && hop.ttl < blamed_from)
            .map(|hop| hop.ttl)
            .collect();
        TraceReport {
            destination: self.destination,
            rounds: self.rounds,
            hops,
            stop,
            loss_start,
            rate_limited,
        }
    }
}

/// One hop's numbers from its probes' outcomes.
fn aggregate(ttl: u8, outcomes: &[ProbeOutcome]) -> Hop {
    let mut addresses: Vec<(IpAddr, u32)> = Vec::new();
    let mut rtts: Vec<Duration> = Vec::new();
    let mut sent = 0u32;
    let mut received = 0u32;
    for outcome in outcomes {
        let (from, rtt) = match *outcome {
            ProbeOutcome::NotSent => continue,
            ProbeOutcome::Lost => {
                sent += 1;
                continue;
            }
            ProbeOutcome::Reply { from, rtt } | ProbeOutcome::TimeExceeded { from, rtt } => {
                (Some(from), rtt)
            }
            ProbeOutcome::Unreachable { from, rtt, .. } => (from, rtt),
        };
        sent += 1;
        received += 1;
        rtts.push(rtt);
        if let Some(from) = from {
            match addresses.iter_mut().find(|(address, _)| *address == from) {
                Some((_, count)) => *count += 1,
                None => addresses.push((from, 1)),
            }
        }
    }
    // Most answers first; ties keep the order of first appearance.
    addresses.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let total: Duration = rtts.iter().sum();
    Hop {
        ttl,
        addresses,
        sent,
        received,
        rtt_min: rtts.iter().min().copied(),
        rtt_avg: u32::try_from(rtts.len())
            .ok()
            .filter(|n| *n > 0)
            .map(|n| total / n),
        rtt_max: rtts.iter().max().copied(),
    }
}

#[cfg(test)]
#[path = "hops_tests.rs"]
mod tests;
