//! The receive loop of a [`Channel`]: one task per channel that drains its endpoint in batches
//! and hands each answer to exactly the probe it belongs to.
//!
//! Owns reading (batches, and the error queue of ping sockets), receive-buffer sizing (grown
//! before each read to fit the largest payload a waiting probe expects, shrunk again when no
//! such probe waits), decoding through [`super::packet`], matching through
//! [`super::table::ProbeTable`] (a reply is on time or late by its kernel arrival time, not by
//! when it is read), RTT computation from kernel timestamps, and counting every
//! rejected packet by reason. Replies and errors that belong to one of the process's ping
//! sockets, seen again by a raw socket, are left to that socket. It never sends.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::channel::{Channel, EngineCore};
use super::echo::{Answer, EchoFailure};
use super::packet::{self, Family, IcmpErrorKind, Received};
use super::socket::SocketKind;
use super::socket::receive::{QueuedError, ReceiveBatch, ReceiveMeta};
use super::stats::{EngineStats, RejectReason};
use super::table::{ErrorVerdict, PendingProbe, ProbeKey};

const BATCH: usize = 64;
/// Room for the IP header (raw IPv4) and the echo header in front of the largest payload.
const HEADROOM: usize = 128;
/// Receive buffer size while no waiting probe needs more.
pub(super) const DEFAULT_BUFFER: usize = 2048;

/// The buffer length that fits every reply `largest_payload` implies.
fn buffer_len_for(largest_payload: usize) -> usize {
    (largest_payload + HEADROOM)
        .next_power_of_two()
        .max(DEFAULT_BUFFER)
}

/// Runs until the channel is closed, reading its endpoint.
pub(super) async fn receive_loop(channel: Arc<Channel>, engine: Arc<EngineCore>) {
    let stats = &engine.stats;
    let mut batch = ReceiveBatch::new(BATCH, DEFAULT_BUFFER);
    let mut error_buffer = vec![0u8; DEFAULT_BUFFER];
    loop {
        tokio::select! {
            ready = channel.endpoint.readable() => {
                if let Err(error) = ready {
                    tracing::error!(%error, socket = %channel.key, "ICMP socket poll failed; receiver stops");
                    stats.count_receive_error();
                    return;
                }
            }
            _ = channel.closed() => return,
        }
        read_queued(&channel, &engine, &mut batch, &mut error_buffer);
    }
}

/// Reads and handles everything queued on the channel's endpoint now, without waiting. The
/// receive loop calls it when the endpoint is readable; the sender calls it (with its own
/// buffers) before it expires probes, so a reply the kernel queued before a deadline is
/// matched rather than counted lost when the receive loop is behind.
pub(super) fn read_queued(
    channel: &Channel,
    engine: &EngineCore,
    batch: &mut ReceiveBatch,
    error_buffer: &mut Vec<u8>,
) {
    if channel.key.kind == SocketKind::Dgram {
        drain_error_queue(channel, engine, error_buffer);
    }
    loop {
        // Sized after the wait and before every read: a probe registers its payload before
        // it sends, so its reply always finds a buffer large enough.
        let wanted = buffer_len_for(channel.probes().largest_waiting_payload());
        if wanted > batch.buffer_len() || wanted * 4 <= batch.buffer_len() {
            batch.resize(wanted);
            error_buffer.resize(wanted, 0);
            error_buffer.shrink_to_fit();
        }
        match channel.endpoint.try_receive(batch) {
            Ok(0) => break,
            Ok(count) => {
                for index in 0..count {
                    let (bytes, meta) = batch.datagram(index);
                    handle_datagram(channel, engine, bytes, &meta);
                }
                if count < batch.capacity() {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if super::socket::is_async_icmp_errno(&error) => {
                // sk_err from an ICMP error on a ping socket; the error queue has the details.
                drain_error_queue(channel, engine, error_buffer);
            }
            Err(error) => {
                engine.stats.count_receive_error();
                tracing::warn!(%error, socket = %channel.key, "Error reading from socket");
                break;
            }
        }
    }
}

fn drain_error_queue(channel: &Channel, engine: &EngineCore, buffer: &mut [u8]) {
    loop {
        match channel.endpoint.try_receive_error(buffer) {
            Ok(Some(queued)) => handle_queued_error(channel, engine, &queued),
            Ok(None) => break,
            Err(error) => {
                if error.kind() != io::ErrorKind::Interrupted {
                    engine.stats.count_receive_error();
                    break;
                }
            }
        }
    }
    let _ = channel.endpoint.take_error();
}

fn handle_queued_error(channel: &Channel, engine: &EngineCore, queued: &QueuedError) {
    let stats = &engine.stats;
    let family = channel.key.family;
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
    let key = ProbeKey {
        address: destination,
        id,
        seq,
    };
    complete_with_error(channel, stats, key, payload, answer);
}

/// True when a raw channel sees a packet meant for one of our ping sockets (which reads it too).
fn belongs_to_ping_socket(channel: &Channel, engine: &EngineCore, id: u16) -> bool {
    channel.key.kind == SocketKind::Raw && engine.is_ping_ident(channel.key.family, id)
}

fn handle_datagram(channel: &Channel, engine: &EngineCore, bytes: &[u8], meta: &ReceiveMeta) {
    let stats = &engine.stats;
    let family = channel.key.family;
    let received_at = Instant::now();
    if let Some(reported) = meta.socket_drops {
        stats.count_receive_drops(u64::from(channel.note_socket_drops(reported)));
    }
    if meta.truncated {
        stats.count_received(family);
        stats.count_rejected(RejectReason::Truncated);
        return;
    }
    let (message, source, header_ttl) = match (family, channel.key.kind) {
        (Family::V4, SocketKind::Raw) => match packet::parse_ipv4(bytes) {
            Ok(view) => (view.payload, Some(IpAddr::V4(view.source)), Some(view.ttl)),
            Err(_) => {
                stats.count_received(family);
                stats.count_rejected(RejectReason::Malformed);
                return;
            }
        },
        _ => (bytes, meta.source, None),
    };
    let verify_checksum = family == Family::V4 && channel.key.kind == SocketKind::Raw;
    let parsed = packet::parse_icmp(family, message, verify_checksum);
    let sibling_id = match &parsed {
        Ok(Received::EchoReply { id, .. }) => Some(*id),
        Ok(Received::Error { quoted, .. }) => Some(quoted.id),
        _ => None,
    };
    if sibling_id.is_some_and(|id| belongs_to_ping_socket(channel, engine, id)) {
        return;
    }
    stats.count_received(family);
    let parsed = match parsed {
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
            // Deadlines are on Tokio's clock (the same as std's, except in paused-time tests).
            // A reply is judged by when it arrived, not when it is read: the time it waited in
            // the socket (kernel timestamp to now, both on the realtime clock) is taken off.
            let waited_in_socket = meta
                .kernel_rx_ns
                .map(|arrived| super::socket::realtime_ns() - arrived)
                .and_then(|waited| u64::try_from(waited).ok())
                .map_or(Duration::ZERO, Duration::from_nanos);
            let now = tokio::time::Instant::now().into_std();
            let deadline_clock = now.checked_sub(waited_in_socket).unwrap_or(now);
            let taken = channel
                .probes()
                .take_for_reply(&key, payload, deadline_clock);
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
                    // A waiter may have given up in the meantime; then the answer is dropped.
                    probe.completion.settle(Ok(answer));
                    stats.count_matched();
                }
                Err(rejection) => {
                    if let Some(observer) = &rejection.observer {
                        observer.duplicate();
                    }
                    stats.count_rejected(rejection.reason);
                    if let Some(expired) = rejection.expired {
                        settle_expired(stats, *expired);
                    }
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
            complete_with_error(channel, stats, key, quoted.payload_prefix, answer);
        }
        Received::Other { .. } => stats.count_rejected(RejectReason::UnrelatedError),
    }
}

fn complete_with_error(
    channel: &Channel,
    stats: &EngineStats,
    key: ProbeKey,
    quoted_payload: &[u8],
    answer: Answer,
) {
    let taken = channel
        .probes()
        .take_for_error(&key, quoted_payload, answer);
    match taken {
        Ok(probe) => {
            if let Answer::IcmpError { kind, .. } = answer {
                stats.count_icmp_error(kind);
            }
            probe.completion.settle(Ok(answer));
        }
        Err(ErrorVerdict::Hinted) => stats.count_error_hint(),
        Err(ErrorVerdict::Rejected(reason)) => stats.count_rejected(reason),
    }
}

/// Finishes a probe whose deadline passed: with the ICMP error it was hinted, else as lost.
pub(super) fn settle_expired(stats: &EngineStats, probe: PendingProbe) {
    match probe.hint.map(|hint| *hint) {
        Some(hint) => {
            if let Answer::IcmpError { kind, .. } = hint {
                stats.count_icmp_error(kind);
            }
            probe.completion.settle(Ok(hint));
        }
        None => probe.completion.settle(Err(EchoFailure::Timeout)),
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
        let delta = rx - i128::from(probe.sent_realtime_ns);
        // Reject a kernel RTT that disagrees with the monotonic clock (a wall-clock step).
        let upper = monotonic.as_nanos() as i128 + 1_000_000;
        if delta >= 0 && delta <= upper {
            return (Duration::from_nanos(delta as u64), true);
        }
    }
    (monotonic, false)
}
