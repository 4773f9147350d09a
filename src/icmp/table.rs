//! The per-socket probe table: probes waiting for an answer, and a bounded memory of recently
//! finished ones.
//!
//! Owns the matching rules: a reply is accepted only for a waiting (address, id, seq) whose payload
//! carries that probe's nonce; an ICMP error only if its quote agrees with the nonce. The memory of
//! finished probes turns "no such probe" into the precise reasons `duplicate` (it was already
//! answered) and `late` (it had already timed out). No I/O, no locking (the caller holds the lock).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::oneshot;

use super::packet;
use super::pinger::Answer;
use super::stats::RejectReason;

/// What identifies one probe on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub address: IpAddr,
    pub id: u16,
    pub seq: u16,
}

/// A probe waiting for its answer.
pub struct PendingProbe {
    pub nonce: u64,
    pub payload_size: usize,
    pub sent_realtime_ns: i128,
    pub sent_at: Instant,
    pub answer: oneshot::Sender<Answer>,
}

#[derive(Debug, Clone, Copy)]
struct FinishedProbe {
    nonce: u64,
    answered: bool,
}

/// How many finished probes each socket remembers (for `duplicate` and `late`).
pub const FINISHED_MEMORY: usize = 4_096;

/// Waiting probes plus the memory of finished ones.
#[derive(Default)]
pub struct ProbeTable {
    waiting: HashMap<ProbeKey, PendingProbe>,
    finished: HashMap<ProbeKey, FinishedProbe>,
    finished_order: VecDeque<ProbeKey>,
}

impl ProbeTable {
    pub fn is_waiting(&self, key: &ProbeKey) -> bool {
        self.waiting.contains_key(key)
    }

    pub fn insert(&mut self, key: ProbeKey, probe: PendingProbe) {
        self.waiting.insert(key, probe);
    }

    /// Takes the probe an echo reply answers, or says why the reply is rejected.
    pub fn take_for_reply(
        &mut self,
        key: &ProbeKey,
        payload: &[u8],
    ) -> Result<PendingProbe, RejectReason> {
        match self.waiting.get(key) {
            Some(probe) if packet::payload_matches(payload, probe.payload_size, probe.nonce) => {
                let probe = self.waiting.remove(key).ok_or(RejectReason::UnknownProbe)?;
                self.remember(*key, probe.nonce, true);
                Ok(probe)
            }
            Some(_) => Err(RejectReason::PayloadMismatch),
            None => Err(self.classify_unknown(key, payload)),
        }
    }

    /// Takes the probe an ICMP error quotes, or says why the error is rejected.
    pub fn take_for_error(
        &mut self,
        key: &ProbeKey,
        quoted_payload: &[u8],
    ) -> Result<PendingProbe, RejectReason> {
        match self.waiting.get(key) {
            Some(probe) if packet::payload_prefix_matches(quoted_payload, probe.nonce) => {
                let probe = self
                    .waiting
                    .remove(key)
                    .ok_or(RejectReason::UnrelatedError)?;
                self.remember(*key, probe.nonce, true);
                Ok(probe)
            }
            _ => Err(RejectReason::UnrelatedError),
        }
    }

    /// Forgets a waiting probe that gave up (timeout or cancellation), remembering it as late.
    pub fn abandon(&mut self, key: &ProbeKey) {
        if let Some(probe) = self.waiting.remove(key) {
            self.remember(*key, probe.nonce, false);
        }
    }

    fn classify_unknown(&self, key: &ProbeKey, payload: &[u8]) -> RejectReason {
        match self.finished.get(key) {
            Some(finished) if packet::payload_prefix_matches(payload, finished.nonce) => {
                if finished.answered {
                    RejectReason::Duplicate
                } else {
                    RejectReason::Late
                }
            }
            _ => RejectReason::UnknownProbe,
        }
    }

    fn remember(&mut self, key: ProbeKey, nonce: u64, answered: bool) {
        if !self.finished.contains_key(&key) {
            if self.finished_order.len() >= FINISHED_MEMORY
                && let Some(oldest) = self.finished_order.pop_front()
            {
                self.finished.remove(&oldest);
            }
            self.finished_order.push_back(key);
        }
        self.finished.insert(key, FinishedProbe { nonce, answered });
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
            answer: tx,
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
            table.take_for_reply(&key(1), &payload(12)).err(),
            Some(RejectReason::PayloadMismatch)
        );
        assert!(table.take_for_reply(&key(1), &payload(11)).is_ok());
        assert_eq!(
            table.take_for_reply(&key(1), &payload(11)).err(),
            Some(RejectReason::Duplicate)
        );
        let (second, _rx2) = probe(22);
        table.insert(key(2), second);
        table.abandon(&key(2));
        assert_eq!(
            table.take_for_reply(&key(2), &payload(22)).err(),
            Some(RejectReason::Late)
        );
        assert_eq!(
            table.take_for_reply(&key(3), &payload(33)).err(),
            Some(RejectReason::UnknownProbe)
        );
        assert_eq!(
            table.take_for_reply(&key(2), &payload(99)).err(),
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
}
