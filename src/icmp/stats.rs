//! Engine counters: packets sent and received, replies rejected by reason, socket and I/O errors.
//!
//! Plain atomics, written by the engine on its hot path and read by the `/metrics` renderer. This
//! module owns the reason taxonomy for rejected packets; it does not format anything.

use std::sync::atomic::{AtomicU64, Ordering};

use super::packet::{Family, IcmpErrorKind};

/// Why a received ICMP packet was not accepted as the answer to a waiting probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Shorter than its headers claim, or not decodable.
    Malformed,
    /// Larger than the receive buffer.
    Truncated,
    /// ICMPv4 checksum wrong (corrupted or forged).
    BadChecksum,
    /// No probe is or was recently waiting for this (source, id, seq): foreign or forged.
    UnknownProbe,
    /// A second reply to a probe that was already answered.
    Duplicate,
    /// A reply to a probe that had already timed out.
    Late,
    /// A probe waits for this (source, id, seq) but the payload or nonce differs.
    PayloadMismatch,
    /// An ICMP error or other message that quotes none of our waiting probes.
    UnrelatedError,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Malformed,
        RejectReason::Truncated,
        RejectReason::BadChecksum,
        RejectReason::UnknownProbe,
        RejectReason::Duplicate,
        RejectReason::Late,
        RejectReason::PayloadMismatch,
        RejectReason::UnrelatedError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Truncated => "truncated",
            RejectReason::BadChecksum => "bad_checksum",
            RejectReason::UnknownProbe => "unknown_probe",
            RejectReason::Duplicate => "duplicate",
            RejectReason::Late => "late",
            RejectReason::PayloadMismatch => "payload_mismatch",
            RejectReason::UnrelatedError => "unrelated",
        }
    }
}

/// The ICMP error kinds, in the order their counters are kept.
pub const ICMP_ERROR_KINDS: [IcmpErrorKind; 4] = [
    IcmpErrorKind::DestinationUnreachable,
    IcmpErrorKind::PacketTooBig,
    IcmpErrorKind::TimeExceeded,
    IcmpErrorKind::ParameterProblem,
];

/// Counters the engine keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct EngineStats {
    sent: [AtomicU64; 2],
    received: [AtomicU64; 2],
    matched: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    icmp_errors: [AtomicU64; ICMP_ERROR_KINDS.len()],
    send_errors: AtomicU64,
    receive_errors: AtomicU64,
    /// Datagrams the kernel dropped on receiving sockets before they were read.
    receive_drops: AtomicU64,
    socket_open_errors: AtomicU64,
    /// Echo requests refused because no sequence number was free for their destination.
    busy: AtomicU64,
    /// ICMP errors that quoted a waiting probe too briefly to carry its nonce.
    error_hints: AtomicU64,
    /// Open shared sockets, indexed by [family][kind: 0 = dgram, 1 = raw].
    sockets_open: [[AtomicU64; 2]; 2],
}

fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl EngineStats {
    pub fn count_sent(&self, family: Family) {
        self.sent[family_index(family)].fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_received(&self, family: Family) {
        self.received[family_index(family)].fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_matched(&self) {
        self.matched.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_rejected(&self, reason: RejectReason) {
        let index = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[index].fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_icmp_error(&self, kind: IcmpErrorKind) {
        let index = ICMP_ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.icmp_errors[index].fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_receive_error(&self) {
        self.receive_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_receive_drops(&self, drops: u64) {
        self.receive_drops.fetch_add(drops, Ordering::Relaxed);
    }
    pub fn count_socket_open_error(&self) {
        self.socket_open_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_error_hint(&self) {
        self.error_hints.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_socket_opened(&self, family: Family, raw: bool) {
        self.sockets_open[family_index(family)][usize::from(raw)].fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_socket_closed(&self, family: Family, raw: bool) {
        self.sockets_open[family_index(family)][usize::from(raw)].fetch_sub(1, Ordering::Relaxed);
    }
    /// Shared sockets open for `family`, (dgram, raw).
    pub fn sockets_open(&self, family: Family) -> (u64, u64) {
        let [dgram, raw] = &self.sockets_open[family_index(family)];
        (dgram.load(Ordering::Relaxed), raw.load(Ordering::Relaxed))
    }
    pub fn sent(&self, family: Family) -> u64 {
        self.sent[family_index(family)].load(Ordering::Relaxed)
    }
    pub fn received(&self, family: Family) -> u64 {
        self.received[family_index(family)].load(Ordering::Relaxed)
    }
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::Relaxed)
    }
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        let index = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[index].load(Ordering::Relaxed)
    }
    pub fn icmp_errors(&self, kind: IcmpErrorKind) -> u64 {
        let index = ICMP_ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.icmp_errors[index].load(Ordering::Relaxed)
    }
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }
    pub fn receive_errors(&self) -> u64 {
        self.receive_errors.load(Ordering::Relaxed)
    }
    pub fn receive_drops(&self) -> u64 {
        self.receive_drops.load(Ordering::Relaxed)
    }
    pub fn socket_open_errors(&self) -> u64 {
        self.socket_open_errors.load(Ordering::Relaxed)
    }
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }
    pub fn error_hints(&self) -> u64 {
        self.error_hints.load(Ordering::Relaxed)
    }
}
