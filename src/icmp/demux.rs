//! The receive side of a shared socket: one task per socket that drains it in batches and hands
//! each answer to exactly the probe it belongs to.
//!
//! Owns reading (`recvmmsg`, and the error queue of ping sockets), decoding through
//! [`super::packet`], matching through [`super::table::ProbeTable`], RTT computation from kernel
//! timestamps, and counting every rejected packet by reason. It never sends.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::Interest;

use super::packet::{self, Family, IcmpErrorKind, Received};
use super::pinger::{Answer, PingerInner, SharedSocket};
use super::socket::{self, ReceiveBatch, SocketKind};
use super::stats::{EngineStats, RejectReason};
use super::table::{PendingProbe, ProbeKey};

const BATCH: usize = 64;
/// Room for the IP header (raw IPv4) and the echo header in front of the largest payload.
const HEADROOM: usize = 128;

/// Runs for the life of the process, reading `shared`'s socket.
pub(super) async fn receive_loop(shared: Arc<SharedSocket>, engine: Arc<PingerInner>) {
    let stats = &engine.stats;
    let mut batch = ReceiveBatch::new(BATCH, 2048);
    let mut error_buffer = vec![0u8; 2048];
    loop {
        let needed = shared.largest_payload.load(Ordering::Relaxed) + HEADROOM;
        if needed > batch.buffer_len() {
            batch = ReceiveBatch::new(BATCH, needed.next_power_of_two());
            error_buffer.resize(needed.next_power_of_two(), 0);
        }
        let mut ready = match shared.fd.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::error!(%error, "ICMP socket poll failed; receiver stops");
                stats.count_receive_error();
                return;
            }
        };
        let readiness = ready.ready();
        let fd = shared.fd.get_ref().as_raw_fd();
        if shared.key.kind == SocketKind::Dgram {
            drain_error_queue(&shared, stats, fd, &mut error_buffer);
        }
        loop {
            match batch.receive(fd) {
                Ok(0) => break,
                Ok(count) => {
                    for index in 0..count {
                        let (bytes, meta) = batch.datagram(index);
                        handle_datagram(&shared, &engine, bytes, &meta);
                    }
                    if count < BATCH {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if socket::is_async_icmp_errno(&error) => {
                    // sk_err from an ICMP error on a ping socket; the error queue has the details.
                    drain_error_queue(&shared, stats, fd, &mut error_buffer);
                }
                Err(error) => {
                    stats.count_receive_error();
                    tracing::warn!(%error, "Error reading from socket");
                    break;
                }
            }
        }
        ready.clear_ready_matching(readiness);
    }
}

fn drain_error_queue(shared: &SharedSocket, stats: &EngineStats, fd: i32, buffer: &mut [u8]) {
    loop {
        match socket::receive_queued_error(fd, buffer) {
            Ok(Some(queued)) => handle_queued_error(shared, stats, &queued),
            Ok(None) => break,
            Err(error) => {
                if error.kind() != io::ErrorKind::Interrupted {
                    stats.count_receive_error();
                    break;
                }
            }
        }
    }
    let _ = socket::take_socket_error(shared.fd.get_ref());
}

fn handle_queued_error(shared: &SharedSocket, stats: &EngineStats, queued: &socket::QueuedError) {
    let family = shared.key.family;
    stats.count_received(family);
    let is_icmp_origin =
        queued.origin == libc::SO_EE_ORIGIN_ICMP || queued.origin == libc::SO_EE_ORIGIN_ICMP6;
    let kind = IcmpErrorKind::classify(family, queued.icmp_type, queued.icmp_code);
    let (Some(kind), true, Some(destination)) = (kind, is_icmp_origin, queued.destination) else {
        stats.count_rejected(RejectReason::UnrelatedError);
        return;
    };
    let Some((id, seq, payload)) = packet::parse_own_request(family, &queued.original) else {
        stats.count_rejected(RejectReason::UnrelatedError);
        return;
    };
    let answer = Answer::IcmpError {
        kind,
        icmp_type: queued.icmp_type,
        code: queued.icmp_code,
        from: queued.offender,
    };
    complete_with_error(
        shared,
        stats,
        ProbeKey {
            address: destination,
            id,
            seq,
        },
        payload,
        answer,
    );
}

fn handle_datagram(
    shared: &SharedSocket,
    engine: &PingerInner,
    bytes: &[u8],
    meta: &socket::ReceiveMeta,
) {
    let stats = &engine.stats;
    let family = shared.key.family;
    stats.count_received(family);
    let received_at = Instant::now();
    if meta.truncated {
        stats.count_rejected(RejectReason::Truncated);
        return;
    }
    let (message, source, header_ttl) = match (family, shared.key.kind) {
        (Family::V4, SocketKind::Raw) => match packet::parse_ipv4(bytes) {
            Ok(view) => (view.payload, Some(IpAddr::V4(view.source)), Some(view.ttl)),
            Err(_) => {
                stats.count_rejected(RejectReason::Malformed);
                return;
            }
        },
        _ => (bytes, meta.source, None),
    };
    let verify_checksum = family == Family::V4 && shared.key.kind == SocketKind::Raw;
    let parsed = match packet::parse_icmp(family, message, verify_checksum) {
        Ok(parsed) => parsed,
        Err(packet::ParseError::BadChecksum) => {
            stats.count_rejected(RejectReason::BadChecksum);
            return;
        }
        Err(_) => {
            stats.count_rejected(RejectReason::Malformed);
            return;
        }
    };
    match parsed {
        Received::EchoReply { id, seq, payload } => {
            let Some(address) = source else {
                stats.count_rejected(RejectReason::Malformed);
                return;
            };
            let key = ProbeKey { address, id, seq };
            let taken = shared.probes().take_for_reply(&key, payload);
            match taken {
                Ok(probe) => {
                    let (rtt, kernel_timestamp) =
                        measure_rtt(&probe, meta.kernel_rx_ns, received_at);
                    let answer = Answer::Echo {
                        rtt,
                        hop_limit: meta.hop_limit.or(header_ttl),
                        kernel_timestamp,
                        arrival: engine.arrivals.fetch_add(1, Ordering::Relaxed),
                    };
                    // The probe may have given up in the meantime; then the answer is dropped.
                    let _ = probe.answer.send(answer);
                    stats.count_matched();
                }
                Err(reason) => {
                    if reason == RejectReason::Duplicate
                        && let Some(observer) = engine.observer.load().as_ref()
                    {
                        observer.duplicate(address);
                    }
                    stats.count_rejected(reason);
                }
            }
        }
        Received::Error {
            kind,
            icmp_type,
            code,
            quoted,
        } => {
            let key = ProbeKey {
                address: quoted.destination,
                id: quoted.id,
                seq: quoted.seq,
            };
            let answer = Answer::IcmpError {
                kind,
                icmp_type,
                code,
                from: source,
            };
            complete_with_error(shared, stats, key, quoted.payload_prefix, answer);
        }
        Received::Other { .. } => stats.count_rejected(RejectReason::UnrelatedError),
    }
}

fn complete_with_error(
    shared: &SharedSocket,
    stats: &EngineStats,
    key: ProbeKey,
    quoted_payload: &[u8],
    answer: Answer,
) {
    let taken = shared.probes().take_for_error(&key, quoted_payload);
    match taken {
        Ok(probe) => {
            if let Answer::IcmpError { kind, .. } = answer {
                stats.count_icmp_error(kind);
            }
            let _ = probe.answer.send(answer);
        }
        Err(reason) => stats.count_rejected(reason),
    }
}

/// RTT from the kernel receive timestamp when it is plausible, else from the monotonic clock.
fn measure_rtt(
    probe: &PendingProbe,
    kernel_rx_ns: Option<i128>,
    received_at: Instant,
) -> (Duration, bool) {
    let monotonic = received_at.saturating_duration_since(probe.sent_at);
    if let Some(rx) = kernel_rx_ns {
        let delta = rx - probe.sent_realtime_ns;
        // Reject a kernel RTT that disagrees with the monotonic clock (a wall-clock step).
        let upper = monotonic.as_nanos() as i128 + 1_000_000;
        if delta >= 0 && delta <= upper {
            return (Duration::from_nanos(delta as u64), true);
        }
    }
    (monotonic, false)
}
