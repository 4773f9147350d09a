//! The mesh's sending loop: every target, every interval, evenly spread, on the shared sockets.
//!
//! Owns pacing and expiry. Each round of `mesh.interval` is cut into one slot per (target,
//! packet): a target's k packets sit interval/k apart, and targets fill the slots in between, so
//! 10 000 targets never burst. At a slot's due time, it and the slots due within one tick after
//! it go out together as one batch ([`Pinger::send_batch`]: one `sendmmsg` per socket), never
//! more than a tick early; the tick is
//! what holds about [`BATCH_TARGET`] slots, between 1 and 10 ms, so a batch is the probes of one
//! tick, never of an interval. A send more than min(10 ms, interval/10) behind its slot is still
//! sent, and counted in `meshprobe_mesh_late_sends_total`. A new target table or config takes
//! effect at the next slot, not the next round: the round goes on from the slot of the new table
//! that is due now, so a removed peer is never probed again.
//!
//! Nothing exists per probe but its table entry in the engine and its ticket here: the engine's
//! receive task settles a reply straight into its target ([`MeshTarget`] is the probe's
//! [`crate::icmp::AnswerSink`]), and the tickets wait in send order in [`Deadlines`], which this
//! loop expires on its wakeups: O(1) per probe, no timer per probe. The slot arithmetic is the
//! pure [`slot_due`], [`first_slot_at`] and [`tick_for`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::table::{MeshShared, MeshTarget, TargetTable};
use crate::config::mesh::MeshConfig;
use crate::icmp::{BatchProbe, EchoRequest, Pinger, Ticket};

/// About how many slots one tick (one batch) should hold.
pub const BATCH_TARGET: u32 = 64;
/// How often expiries run while there is nothing to send.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// The pacing tick for `slots` slots per `interval`: long enough to hold about
/// [`BATCH_TARGET`] slots, between 1 ms (the timer's resolution) and 10 ms (the lateness a
/// send may have).
pub fn tick_for(interval: Duration, slots: usize) -> Duration {
    let per_slot = interval / (slots.max(1) as u32);
    per_slot
        .saturating_mul(BATCH_TARGET)
        .clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// Sent probes in send order, waiting for their deadline. Every probe of a config has the same
/// timeout, so deadlines arrive in order and the front is always the next to expire; after a
/// config shortens the timeout, the new probes wait behind the old ones at most the difference
/// (their replies are still judged by their own deadline, in the engine). A batch's tickets
/// wait together under its one deadline: 32 bytes a probe, 100 000 of them at 100 000
/// probes/s with a 1 s timeout (a deadline per ticket took 48, in a queue that doubles).
#[derive(Default)]
pub struct Deadlines {
    queue: VecDeque<(Instant, Vec<Ticket>)>,
}

impl Deadlines {
    pub fn push(&mut self, deadline: Instant, mut tickets: Vec<Ticket>) {
        if !tickets.is_empty() {
            tickets.shrink_to_fit();
            self.queue.push_back((deadline, tickets));
        }
    }

    /// When the next probe expires, if any waits.
    pub fn next(&self) -> Option<Instant> {
        self.queue.front().map(|(deadline, _)| *deadline)
    }

    /// Expires every probe whose deadline is at or before `now` (after the engine read what
    /// replies are already queued: [`Pinger::expire_all`]).
    pub fn expire_due(&mut self, pinger: &Pinger, now: Instant) {
        // From the front only: after a shorter timeout the queue is not sorted, and a probe
        // behind an older, later deadline waits for it (see above).
        let mut due: Vec<Ticket> = Vec::new();
        while let Some((deadline, _)) = self.queue.front()
            && *deadline <= now
            && let Some((_, tickets)) = self.queue.pop_front()
        {
            if due.is_empty() {
                due = tickets;
            } else {
                due.extend(tickets);
            }
        }
        if !due.is_empty() {
            pinger.expire_all(due);
        }
    }
}

/// Sleeps until `until`, or earlier for an expiry, but never wakes for one less than `tick`
/// from now (expiries ride along with the sends, so the sends stay whole batches), and expires
/// what is due. An expiry can be up to a tick late; that only delays when a loss is counted,
/// never what is counted (a reply after the deadline is late in the engine regardless).
async fn sleep_expiring(
    deadlines: &mut Deadlines,
    pinger: &Pinger,
    until: Instant,
    tick: Duration,
) {
    let earliest_expiry_wake = Instant::now() + tick;
    let wake = deadlines
        .next()
        .map_or(until, |next| next.max(earliest_expiry_wake).min(until));
    tokio::time::sleep_until(wake).await;
    deadlines.expire_due(pinger, Instant::now());
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
    let pinger = shared.pinger.clone();
    let mut deadlines = Deadlines::default();
    let mut round_start = Instant::now();
    let mut resume_mid_round = false;
    loop {
        let config = shared.config.load_full();
        let table = shared.table.load_full();
        let (Some(config), false) = (config, table.targets.is_empty()) else {
            // Nothing to send: expire what is in flight, then look again shortly.
            let idle_until = Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = sleep_expiring(&mut deadlines, &pinger, idle_until, IDLE_TICK) => {}
                _ = shared.table_changed.notified() => {}
            }
            round_start = Instant::now();
            resume_mid_round = false;
            continue;
        };
        let round = Round { config, table };
        let interval = round.config.interval;
        let slots = round.slots();
        let late_after = (interval / 10).min(Duration::from_millis(10));
        let tick = tick_for(interval, slots);
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
                deadlines.expire_due(&pinger, now);
                if now >= due {
                    break;
                }
                tokio::select! {
                    _ = sleep_expiring(&mut deadlines, &pinger, due, tick) => {}
                    // A wakeup for a table or config already in force changes nothing.
                    _ = shared.table_changed.notified() => if round.is_stale(&shared) { break },
                }
            }
            if round.is_stale(&shared) {
                resume_mid_round = true;
                break;
            }
            // Every slot due within the next tick goes out in this batch.
            let now = Instant::now();
            let mut batch = Vec::new();
            while slot < slots {
                let due = slot_due(round_start, interval, slot, slots);
                if due > now + tick {
                    break;
                }
                if now.saturating_duration_since(due) > late_after {
                    shared.late_sends.fetch_add(1, Ordering::Relaxed);
                }
                let target = &round.table.targets[slot % round.table.targets.len()];
                batch.push(batch_probe(target, round.config.payload_size));
                slot += 1;
            }
            let deadline = now + round.config.timeout;
            let mut tickets = Vec::with_capacity(batch.len());
            pinger.send_batch(batch, deadline, &mut tickets).await;
            deadlines.push(deadline, tickets);
            // Behind schedule, every slot is already due and nothing above waits: let the
            // receive loop and HTTP (on the same runtime thread) run between batches.
            tokio::task::yield_now().await;
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

fn batch_probe(target: &Arc<MeshTarget>, payload_size: usize) -> BatchProbe {
    BatchProbe {
        request: EchoRequest {
            destination: target.spec.address,
            scope_id: 0,
            source: None,
            ttl: None,
            dont_fragment: false,
            payload_size,
        },
        sink: Arc::clone(target) as Arc<dyn crate::icmp::AnswerSink>,
        send_index: target.next_send_index.fetch_add(1, Ordering::Relaxed),
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
