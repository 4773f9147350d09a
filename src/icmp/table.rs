//! The per-channel probe table: probes waiting for an answer, and a bounded memory of recently
//! finished ones.
//!
//! Owns the matching rules: a reply is accepted only for a waiting (address, id, seq) whose payload
//! carries that probe's nonce. An ICMP error ends a probe only if its quote carries the nonce; a
//! quote too short to carry it (RFC 792's minimum: IP header + 8 bytes) is kept as a hint that
//! becomes the probe's outcome only if no reply arrives by the deadline, so an off-path attacker
//! who guesses (id, seq) cannot fail a live target. The memory of finished probes turns "no such
//! probe" into the precise reasons `duplicate` (it was already answered, and the probe's own
//! observer is told) and `late` (it had already timed out). No I/O, no locking (the caller holds
//! the lock).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::echo::{Answer, AnswerSink, EchoFailure, ReplyObserver};
use super::packet;
use super::stats::RejectReason;

/// What identifies one probe on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub address: IpAddr,
    pub id: u16,
    pub seq: u16,
}

/// Where a probe's outcome goes.
pub enum Completion {
    /// A caller awaiting [`super::Pinger::echo`], which runs its own timer.
    Waiter {
        answer: oneshot::Sender<Answer>,
        /// Told about duplicate replies to this probe.
        observer: Option<Arc<dyn ReplyObserver>>,
    },
    /// A probe of [`super::Pinger::send_batch`]: its sink is told by the receiver, or by the
    /// sender's [`super::Pinger::expire`] once its deadline passed.
    Sink {
        sink: Arc<dyn AnswerSink>,
        send_index: u64,
    },
}

impl Completion {
    /// Who is told about duplicates of this probe (a sink always is).
    fn observer(&self) -> Option<Arc<dyn ReplyObserver>> {
        match self {
            Completion::Waiter { observer, .. } => observer.clone(),
            Completion::Sink { sink, .. } => Some(Arc::clone(sink) as Arc<dyn ReplyObserver>),
        }
    }

    /// Hands the outcome over (a waiter that gave up meanwhile just drops it).
    pub fn settle(self, outcome: Result<Answer, EchoFailure>) {
        match (self, outcome) {
            (Completion::Waiter { answer: sender, .. }, Ok(answer)) => {
                let _ = sender.send(answer);
            }
            // A dropped sender tells the waiter there is no answer.
            (Completion::Waiter { .. }, Err(_)) => {}
            (Completion::Sink { sink, send_index }, outcome) => sink.settle(send_index, outcome),
        }
    }
}

/// A probe waiting for its answer (about 100 bytes: one exists per probe in flight, 100 000 of
/// them at 100 000 probes/s with a 1 s timeout).
pub struct PendingProbe {
    pub nonce: u64,
    pub payload_size: usize,
    /// CLOCK_REALTIME at the send, in ns since the Unix epoch (the clock of kernel receive
    /// timestamps).
    pub sent_realtime_ns: i64,
    pub sent_at: Instant,
    pub completion: Completion,
    /// A reply received after this instant is late, even if nobody expired the probe yet
    /// (batch probes, whose expiry runs on the sender's tick).
    pub expires_at: Option<Instant>,
    /// An ICMP error whose quote was too short to carry the nonce (rare, so boxed).
    pub hint: Option<Box<Answer>>,
}

struct FinishedProbe {
    nonce: u64,
    answered: bool,
    observer: Option<Arc<dyn ReplyObserver>>,
}

/// How many finished probes each channel remembers at least (for `duplicate` and `late`); with
/// more probes in flight it remembers as many as are waiting, about one timeout's worth.
pub const FINISHED_MEMORY: usize = 4_096;

/// Why a reply was not accepted, and whom to tell about a duplicate.
pub struct Rejection {
    pub reason: RejectReason,
    /// The observer of the already-answered probe a duplicate belongs to.
    pub observer: Option<Arc<dyn ReplyObserver>>,
    /// A batch probe whose deadline passed before its reply came: it is finished now, as lost
    /// (or with its hint), and the reply counts as late.
    pub expired: Option<Box<PendingProbe>>,
}

impl Rejection {
    fn plain(reason: RejectReason) -> Rejection {
        Rejection {
            reason,
            observer: None,
            expired: None,
        }
    }
}

/// What happened to an ICMP error.
#[derive(Debug, PartialEq, Eq)]
pub enum ErrorVerdict {
    /// It quotes nothing we wait for (or contradicts the nonce).
    Rejected(RejectReason),
    /// It quotes a waiting probe without its nonce: kept until the probe's deadline.
    Hinted,
}

/// Waiting probes plus the memory of finished ones.
#[derive(Default)]
pub struct ProbeTable {
    waiting: HashMap<ProbeKey, PendingProbe>,
    finished: HashMap<ProbeKey, FinishedProbe>,
    finished_order: VecDeque<ProbeKey>,
    /// How many waiting probes have each payload length, for sizing receive buffers.
    payload_lengths: BTreeMap<usize, usize>,
    /// Probes finished since the maps were last checked for spare capacity.
    finished_since_shrink_check: u32,
}

/// Every this many finished probes, maps holding far more capacity than entries give it back.
const SHRINK_CHECK_EVERY: u32 = 65_536;

/// Capacity kept whatever the load: below this a map is never shrunk.
const SHRINK_FLOOR: usize = 1_024;

/// The capacity a collection of `len` entries should shrink to, if it holds under a quarter of
/// its `capacity`: twice its entries (a burst of waiting probes, e.g. a stalled receiver, would
/// otherwise keep its peak size for the life of the process: 30 MB after one at 100 000
/// probes/s).
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    let keep = (len * 2).max(SHRINK_FLOOR);
    (capacity > keep * 2).then_some(keep)
}

impl ProbeTable {
    pub fn is_waiting(&self, key: &ProbeKey) -> bool {
        self.waiting.contains_key(key)
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// The largest payload any waiting probe expects back (0 when none waits).
    pub fn largest_waiting_payload(&self) -> usize {
        self.payload_lengths
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    pub fn insert(&mut self, key: ProbeKey, probe: PendingProbe) {
        *self
            .payload_lengths
            .entry(packet::payload_len(probe.payload_size))
            .or_default() += 1;
        if let Some(replaced) = self.waiting.insert(key, probe) {
            self.forget_payload(replaced.payload_size);
        }
    }

    fn remove_waiting(&mut self, key: &ProbeKey) -> Option<PendingProbe> {
        let probe = self.waiting.remove(key)?;
        self.forget_payload(probe.payload_size);
        Some(probe)
    }

    fn forget_payload(&mut self, payload_size: usize) {
        let len = packet::payload_len(payload_size);
        if let Some(count) = self.payload_lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                self.payload_lengths.remove(&len);
            }
        }
    }

    /// Takes the probe an echo reply received at `received_at` answers, or says why the reply
    /// is rejected.
    pub fn take_for_reply(
        &mut self,
        key: &ProbeKey,
        payload: &[u8],
        received_at: Instant,
    ) -> Result<PendingProbe, Rejection> {
        match self.waiting.get(key) {
            Some(probe) if packet::payload_matches(payload, probe.payload_size, probe.nonce) => {
                let expired = probe.expires_at.is_some_and(|at| received_at > at);
                let probe = self
                    .remove_waiting(key)
                    .ok_or(Rejection::plain(RejectReason::UnknownProbe))?;
                if expired {
                    self.remember(*key, probe.nonce, false, None);
                    return Err(Rejection {
                        expired: Some(Box::new(probe)),
                        ..Rejection::plain(RejectReason::Late)
                    });
                }
                self.remember(*key, probe.nonce, true, probe.completion.observer());
                Ok(probe)
            }
            Some(_) => Err(Rejection::plain(RejectReason::PayloadMismatch)),
            None => Err(self.classify_unknown(key, payload)),
        }
    }

    /// Takes the probe an ICMP error quotes when the quote proves it (carries the nonce); keeps
    /// a shorter quote as the probe's hint; otherwise says why the error is rejected.
    pub fn take_for_error(
        &mut self,
        key: &ProbeKey,
        quoted_payload: &[u8],
        answer: Answer,
    ) -> Result<PendingProbe, ErrorVerdict> {
        let Some(probe) = self.waiting.get_mut(key) else {
            return Err(ErrorVerdict::Rejected(RejectReason::UnrelatedError));
        };
        if !packet::payload_prefix_matches(quoted_payload, probe.nonce) {
            return Err(ErrorVerdict::Rejected(RejectReason::UnrelatedError));
        }
        let nonce_len = packet::payload_len(probe.payload_size).min(packet::NONCE_LEN);
        if quoted_payload.len() < nonce_len {
            probe.hint.get_or_insert(Box::new(answer));
            return Err(ErrorVerdict::Hinted);
        }
        let probe = self
            .remove_waiting(key)
            .ok_or(ErrorVerdict::Rejected(RejectReason::UnrelatedError))?;
        self.remember(*key, probe.nonce, true, None);
        Ok(probe)
    }

    /// Sets when a registered probe was sent (a batch stamps its probes just before the
    /// system call, after registering them all).
    pub fn stamp_sent(&mut self, key: &ProbeKey, sent_at: Instant, sent_realtime_ns: i64) {
        if let Some(probe) = self.waiting.get_mut(key) {
            probe.sent_at = sent_at;
            probe.sent_realtime_ns = sent_realtime_ns;
        }
    }

    /// Forgets a waiting probe that gave up (timeout or cancellation), remembering it as late.
    /// Returns the ICMP error hint it collected, if any.
    pub fn abandon(&mut self, key: &ProbeKey) -> Option<Answer> {
        self.expire(key)
            .and_then(|probe| probe.hint.map(|hint| *hint))
    }

    /// Takes a probe whose deadline passed, if it is still waiting (nobody answered it),
    /// remembering it as late.
    pub fn expire(&mut self, key: &ProbeKey) -> Option<PendingProbe> {
        let probe = self.remove_waiting(key)?;
        self.remember(*key, probe.nonce, false, None);
        Some(probe)
    }

    fn classify_unknown(&self, key: &ProbeKey, payload: &[u8]) -> Rejection {
        match self.finished.get(key) {
            Some(finished) if packet::payload_prefix_matches(payload, finished.nonce) => {
                if finished.answered {
                    Rejection {
                        observer: finished.observer.clone(),
                        ..Rejection::plain(RejectReason::Duplicate)
                    }
                } else {
                    Rejection::plain(RejectReason::Late)
                }
            }
            _ => Rejection::plain(RejectReason::UnknownProbe),
        }
    }

    fn remember(
        &mut self,
        key: ProbeKey,
        nonce: u64,
        answered: bool,
        observer: Option<Arc<dyn ReplyObserver>>,
    ) {
        if !self.finished.contains_key(&key) {
            let memory = FINISHED_MEMORY.max(self.waiting.len());
            while self.finished_order.len() >= memory
                && let Some(oldest) = self.finished_order.pop_front()
            {
                self.finished.remove(&oldest);
            }
            self.finished_order.push_back(key);
        }
        self.finished.insert(
            key,
            FinishedProbe {
                nonce,
                answered,
                observer,
            },
        );
        self.finished_since_shrink_check += 1;
        if self.finished_since_shrink_check >= SHRINK_CHECK_EVERY {
            self.finished_since_shrink_check = 0;
            if let Some(keep) = shrunk_capacity(self.waiting.len(), self.waiting.capacity()) {
                self.waiting.shrink_to(keep);
            }
            if let Some(keep) = shrunk_capacity(self.finished.len(), self.finished.capacity()) {
                self.finished.shrink_to(keep);
            }
            let order = &mut self.finished_order;
            if let Some(keep) = shrunk_capacity(order.len(), order.capacity()) {
                order.shrink_to(keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(nonce: u64) -> (PendingProbe, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let probe = PendingProbe {
            nonce,
            payload_size: 0,
            sent_realtime_ns: 0,
            sent_at: Instant::now(),
            completion: Completion::Waiter {
                answer: tx,
                observer: None,
            },
            expires_at: None,
            hint: None,
        };
        (probe, rx)
    }

    fn payload(nonce: u64) -> Vec<u8> {
        let mut out = Vec::new();
        packet::write_payload(&mut out, 0, nonce);
        out
    }

    fn key(seq: u16) -> ProbeKey {
        ProbeKey {
            address: "198.18.0.1".parse().unwrap(),
            id: 7,
            seq,
        }
    }

    #[test]
    fn replies_are_classified_exactly() {
        let mut table = ProbeTable::default();
        let (first, _rx1) = probe(11);
        table.insert(key(1), first);
        assert_eq!(
            table
                .take_for_reply(&key(1), &payload(12), Instant::now())
                .err()
                .map(|r| r.reason),
            Some(RejectReason::PayloadMismatch)
        );
        assert!(
            table
                .take_for_reply(&key(1), &payload(11), Instant::now())
                .is_ok()
        );
        assert_eq!(
            table
                .take_for_reply(&key(1), &payload(11), Instant::now())
                .err()
                .map(|r| r.reason),
            Some(RejectReason::Duplicate)
        );
        let (second, _rx2) = probe(22);
        table.insert(key(2), second);
        table.abandon(&key(2));
        assert_eq!(
            table
                .take_for_reply(&key(2), &payload(22), Instant::now())
                .err()
                .map(|r| r.reason),
            Some(RejectReason::Late)
        );
        assert_eq!(
            table
                .take_for_reply(&key(3), &payload(33), Instant::now())
                .err()
                .map(|r| r.reason),
            Some(RejectReason::UnknownProbe)
        );
        assert_eq!(
            table
                .take_for_reply(&key(2), &payload(99), Instant::now())
                .err()
                .map(|r| r.reason),
            Some(RejectReason::UnknownProbe)
        );
        assert!(table.waiting.is_empty());
    }

    #[test]
    fn finished_memory_is_bounded() {
        let mut table = ProbeTable::default();
        for seq in 0..(FINISHED_MEMORY as u32 + 100) {
            let key = ProbeKey {
                address: "198.18.0.1".parse().unwrap(),
                id: (seq >> 16) as u16,
                seq: seq as u16,
            };
            let (p, _rx) = probe(u64::from(seq));
            table.insert(key, p);
            table.abandon(&key);
        }
        assert_eq!(table.finished.len(), FINISHED_MEMORY);
        assert_eq!(table.finished_order.len(), FINISHED_MEMORY);
    }

    #[test]
    fn capacity_left_by_a_burst_is_given_back() {
        let mut table = ProbeTable::default();
        let key_of = |n: u32| ProbeKey {
            address: "198.18.0.1".parse().unwrap(),
            id: (n >> 16) as u16,
            seq: n as u16,
        };
        // A burst: 100 000 probes wait at once, then all are answered.
        let burst = 100_000u32;
        let mut receivers = Vec::new();
        for n in 0..burst {
            let (p, rx) = probe(u64::from(n));
            receivers.push(rx);
            table.insert(key_of(n), p);
        }
        let peak = table.waiting.capacity();
        assert!(peak >= burst as usize);
        for n in 0..burst {
            assert!(
                table
                    .take_for_reply(&key_of(n), &payload(u64::from(n)), Instant::now())
                    .is_ok()
            );
        }
        // Then a steady trickle: one waits at a time.
        for n in burst..burst + SHRINK_CHECK_EVERY {
            let (p, _rx) = probe(u64::from(n));
            table.insert(key_of(n), p);
            table.abandon(&key_of(n));
        }
        assert!(table.waiting.is_empty());
        assert!(
            table.waiting.capacity() <= 2 * SHRINK_FLOOR,
            "waiting kept {} of its peak {peak}",
            table.waiting.capacity()
        );
        // The finished memory shrinks back towards its bound, and still works.
        assert!(table.finished.capacity() <= 4 * FINISHED_MEMORY.max(SHRINK_FLOOR));
        assert_eq!(table.finished.len(), FINISHED_MEMORY);
        let last = key_of(burst + SHRINK_CHECK_EVERY - 1);
        let late = table
            .take_for_reply(
                &last,
                &payload(u64::from(burst + SHRINK_CHECK_EVERY - 1)),
                Instant::now(),
            )
            .err()
            .map(|r| r.reason);
        assert_eq!(late, Some(RejectReason::Late));
    }
}
