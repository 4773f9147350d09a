//! The mesh's sending loop: every target, every interval, evenly spread, on the shared sockets.
//!
//! Owns pacing and outcome accounting. Each round of `mesh.interval` is cut into one slot per
//! (target, packet): a target's k packets sit interval/k apart, and targets fill the slots in
//! between, so 10 000 targets never burst. Slots due within one tick (interval/100, between 1 and
//! 10 ms) go out together, so a wakeup sends a few probes instead of one. A send more than
//! min(10 ms, interval/10) behind its slot is still sent, and counted in
//! `meshprobe_mesh_late_sends_total`. A new target table or config takes effect at the next slot,
//! not the next round: the round goes on from the slot of the new table that is due now, so a
//! removed peer is never probed again. All probes of the mesh run as futures inside this one task,
//! so a probe costs no task spawn and no cross-thread wakeup. The slot arithmetic is the pure
//! [`slot_due`] and [`first_slot_at`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::table::{MeshShared, MeshTarget, TargetTable};
use super::window::ProbeError;
use crate::config::mesh::MeshConfig;
use crate::icmp::{Answer, EchoFailure, EchoRequest, EchoResult, Pinger, ReplyObserver};

/// Sends due within one tick go out together: one wakeup per tick instead of one per send.
fn tick_for(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// When slot `slot` of a round of `slots` slots that starts at `round_start` is due.
pub fn slot_due(round_start: Instant, interval: Duration, slot: usize, slots: usize) -> Instant {
    if slots == 0 {
        return round_start;
    }
    round_start + interval.mul_f64(slot as f64 / slots as f64)
}

/// The first slot of the round that is due strictly after `now` (or `slots` when none is left).
/// Used when the table changes mid-round: slots due at or before `now` are behind us (sent, or
/// skipped rather than burst), so no target is probed twice in one round.
pub fn first_slot_at(
    round_start: Instant,
    interval: Duration,
    slots: usize,
    now: Instant,
) -> usize {
    let elapsed = now.saturating_duration_since(round_start);
    if interval.is_zero() || elapsed >= interval {
        return slots;
    }
    let position = elapsed.as_secs_f64() / interval.as_secs_f64() * slots as f64;
    (position.floor() as usize + 1).min(slots)
}

/// The start of the round that contains `now`, stepping back from a `round_start` that already
/// moved on to the next round.
pub fn round_containing(mut round_start: Instant, interval: Duration, now: Instant) -> Instant {
    while round_start > now && !interval.is_zero() {
        round_start = round_start.checked_sub(interval).unwrap_or(now);
    }
    round_start
}

type Completion = (Arc<MeshTarget>, u64, EchoResult);

async fn probe(
    pinger: Pinger,
    target: Arc<MeshTarget>,
    request: EchoRequest,
    deadline: Instant,
    send_index: u64,
) -> Completion {
    let observer: Arc<dyn ReplyObserver> = target.clone();
    let result = pinger
        .echo_observed(&request, deadline, Some(observer))
        .await;
    (target, send_index, result)
}

fn account(completion: Completion, buckets: &[f64]) {
    let (target, send_index, result) = completion;
    let mut stats = target.stats();
    let mut recent = target.recent();
    match result.outcome {
        Ok(Answer::Echo { rtt, arrival, .. }) => {
            stats.record_sent();
            stats.record_reply(buckets, rtt.as_secs_f64(), send_index, arrival);
            recent.record_reply(rtt);
        }
        Ok(Answer::IcmpError {
            kind, code, from, ..
        }) => {
            stats.record_sent();
            stats.record_lost(Some(kind));
            let error = ProbeError::Icmp { kind, code, from };
            recent.record_lost(Some(error), SystemTime::now());
        }
        Err(EchoFailure::Timeout) => {
            stats.record_sent();
            stats.record_lost(None);
            recent.record_lost(None, SystemTime::now());
        }
        Err(EchoFailure::Send(error)) => {
            stats.record_send_error();
            let errno = error.raw_os_error();
            recent.record_not_sent(ProbeError::Send { errno }, SystemTime::now());
        }
        Err(EchoFailure::Socket(_)) => {
            stats.record_send_error();
            recent.record_not_sent(ProbeError::Socket, SystemTime::now());
        }
        Err(EchoFailure::Busy) => {
            stats.record_send_error();
            recent.record_not_sent(ProbeError::Busy, SystemTime::now());
        }
    }
}

/// The config and table a stretch of slots is sent from.
struct Round {
    config: Arc<MeshConfig>,
    table: Arc<TargetTable>,
}

impl Round {
    fn slots(&self) -> usize {
        self.table.targets.len() * self.config.packets_per_interval as usize
    }

    /// True when a newer table or config was stored since this one was loaded.
    fn is_stale(&self, shared: &MeshShared) -> bool {
        let config_changed = match shared.config.load().as_ref() {
            Some(current) => !Arc::ptr_eq(current, &self.config),
            None => true,
        };
        config_changed || !Arc::ptr_eq(&shared.table.load(), &self.table)
    }
}

/// Runs forever; idles while there is no mesh config or no target.
pub(super) async fn run(shared: Arc<MeshShared>) {
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    let mut round_start = Instant::now();
    let mut resume_mid_round = false;
    loop {
        let config = shared.config.load_full();
        let table = shared.table.load_full();
        let (Some(config), false) = (config, table.targets.is_empty()) else {
            // Nothing to send: finish what is in flight, then look again shortly.
            let idle = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    _ = &mut idle => break,
                    _ = shared.table_changed.notified() => break,
                    Some(done) = in_flight.next() => account(done, &table.buckets),
                }
            }
            round_start = Instant::now();
            resume_mid_round = false;
            continue;
        };
        let round = Round { config, table };
        let interval = round.config.interval;
        let slots = round.slots();
        let late_after = (interval / 10).min(Duration::from_millis(10));
        let tick = tick_for(interval);
        let mut slot = if resume_mid_round {
            let now = Instant::now();
            round_start = round_containing(round_start, interval, now);
            first_slot_at(round_start, interval, slots, now)
        } else {
            0
        };
        resume_mid_round = false;
        while slot < slots {
            let due = slot_due(round_start, interval, slot, slots);
            loop {
                let now = Instant::now();
                if now + tick >= due {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    // A wakeup for a table or config already in force changes nothing.
                    _ = shared.table_changed.notified() => if round.is_stale(&shared) { break },
                    Some(done) = in_flight.next() => account(done, &round.table.buckets),
                }
            }
            if round.is_stale(&shared) {
                resume_mid_round = true;
                break;
            }
            if Instant::now().saturating_duration_since(due) > late_after {
                shared.late_sends.fetch_add(1, Ordering::Relaxed);
            }
            let target = &round.table.targets[slot % round.table.targets.len()];
            let request = EchoRequest {
                destination: target.spec.address,
                scope_id: 0,
                source: None,
                ttl: None,
                dont_fragment: false,
                payload_size: round.config.payload_size,
            };
            let send_index = target.next_send_index.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + round.config.timeout;
            in_flight.push(probe(
                shared.pinger.clone(),
                Arc::clone(target),
                request,
                deadline,
                send_index,
            ));
            // Drain completions that are already there without waiting.
            while let Some(Some(done)) = futures_util::FutureExt::now_or_never(in_flight.next()) {
                account(done, &round.table.buckets);
            }
            slot += 1;
        }
        if resume_mid_round {
            continue;
        }
        round_start += interval;
        let now = Instant::now();
        if now > round_start + interval {
            // More than a whole round behind (the machine was stalled): skip ahead, counting
            // the sends that were skipped as late rather than bursting them.
            let behind = now.duration_since(round_start).as_secs_f64() / interval.as_secs_f64();
            shared
                .late_sends
                .fetch_add((behind.floor() as u64) * slots as u64, Ordering::Relaxed);
            round_start = now;
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
