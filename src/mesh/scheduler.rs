//! The mesh's sending loop: every target, every interval, evenly spread, on the shared sockets.
//!
//! Owns pacing and outcome accounting. Each round of `mesh.interval` is cut into one slot per
//! (target, packet): a target's k packets sit interval/k apart, and targets fill the slots in
//! between, so 10 000 targets never burst. Slots due within one tick (interval/100, between 1 and
//! 10 ms) go out together, so a wakeup sends a few probes instead of one. A send more than min(10 ms, interval/10) behind its slot is
//! still sent, and counted in `meshprobe_mesh_late_sends_total`. All probes of the mesh run as
//! futures inside this one task, so a probe costs no task spawn and no cross-thread wakeup.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::runner::{MeshShared, MeshTarget};
use super::window::ProbeError;
use crate::icmp::{Answer, EchoFailure, EchoRequest, EchoResult, Pinger};

/// Sends due within one tick go out together: one wakeup per tick instead of one per send.
fn tick_for(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

type Completion = (Arc<MeshTarget>, u64, EchoResult);

async fn probe(
    pinger: Pinger,
    target: Arc<MeshTarget>,
    request: EchoRequest,
    deadline: Instant,
    send_index: u64,
) -> Completion {
    let result = pinger.echo(&request, deadline).await;
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
    }
}

/// Runs forever; idles while there is no mesh config or no target.
pub(super) async fn run(shared: Arc<MeshShared>) {
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    let mut round_start = Instant::now();
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
                    Some(done) = in_flight.next() => account(done, &table.buckets),
                }
            }
            round_start = Instant::now();
            continue;
        };
        let interval = config.interval;
        let per_target = config.packets_per_interval as usize;
        let target_count = table.targets.len();
        let slots = target_count * per_target;
        let late_after = (interval / 10).min(Duration::from_millis(10));
        let tick = tick_for(interval);
        for slot in 0..slots {
            let due = round_start + interval.mul_f64(slot as f64 / slots as f64);
            loop {
                let now = Instant::now();
                if now + tick >= due {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    Some(done) = in_flight.next() => account(done, &table.buckets),
                }
            }
            if Instant::now().saturating_duration_since(due) > late_after {
                shared.late_sends.fetch_add(1, Ordering::Relaxed);
            }
            let target = &table.targets[slot % target_count];
            let request = EchoRequest {
                destination: target.spec.address,
                scope_id: 0,
                source: None,
                ttl: None,
                dont_fragment: false,
                payload_size: config.payload_size,
            };
            let send_index = target.next_send_index.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + config.timeout;
            in_flight.push(probe(
                shared.pinger.clone(),
                Arc::clone(target),
                request,
                deadline,
                send_index,
            ));
            // Drain completions that are already there without waiting.
            while let Some(Some(done)) = futures_util::FutureExt::now_or_never(in_flight.next()) {
                account(done, &table.buckets);
            }
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
