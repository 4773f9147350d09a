//! The receive side of the engine: a [`Channel`] is one receiving endpoint with its probe table,
//! and [`EngineCore`] is what every channel's receiver shares (counters, arrival order, and the
//! echo ids of the process's ping sockets).
//!
//! A ping socket is its own channel (the kernel hands it only replies to its own id). All raw
//! sockets of a family share one channel: the family's unbound raw socket reads every reply, and
//! raw sockets bound to a source or with DF set only send. No I/O here beyond holding the
//! endpoint; `demux.rs` runs the receive loop.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::packet::Family;
use super::socket::SocketKey;
use super::socket::receive::ReceiveBatch;
use super::stats::EngineStats;
use super::table::ProbeTable;
use super::transport::Endpoint;

/// Datagrams per read when the sender catches up on queued replies (the receive loop reads 64).
const CATCH_UP_BATCH: usize = 16;

/// One receiving endpoint and the probes waiting on it.
pub struct Channel {
    /// The key of the endpoint that receives (for raw channels: the family's unbound socket).
    pub key: SocketKey,
    pub endpoint: Arc<dyn Endpoint>,
    probes: Mutex<ProbeTable>,
    /// Buffers for [`Channel::read_queued_now`], separate from the receive loop's own; made at
    /// first use.
    catch_up: Mutex<Option<(ReceiveBatch, Vec<u8>)>>,
    /// The socket's drop count as last reported with a datagram (`SO_RXQ_OVFL`).
    drops_seen: AtomicU32,
    closed: AtomicBool,
    close_signal: Notify,
}

impl Channel {
    pub fn new(key: SocketKey, endpoint: Arc<dyn Endpoint>) -> Channel {
        Channel {
            key,
            endpoint,
            probes: Mutex::new(ProbeTable::default()),
            catch_up: Mutex::new(None),
            drops_seen: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            close_signal: Notify::new(),
        }
    }

    pub fn probes(&self) -> MutexGuard<'_, ProbeTable> {
        // A panic while holding this lock cannot leave the map inconsistent, so recover it.
        self.probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads and handles every datagram queued on the endpoint now, from outside the receive
    /// loop (which may be behind on a busy machine): the sender does this before it expires
    /// probes, so a reply that arrived before its deadline is matched, never counted lost.
    pub fn read_queued_now(&self, engine: &EngineCore) {
        let mut scratch = self
            .catch_up
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (batch, error_buffer) = scratch.get_or_insert_with(|| {
            (
                ReceiveBatch::new(CATCH_UP_BATCH, super::demux::DEFAULT_BUFFER),
                vec![0; super::demux::DEFAULT_BUFFER],
            )
        });
        super::demux::read_queued(self, engine, batch, error_buffer);
    }

    /// Takes the socket's drop count that came with a datagram; answers how many drops it adds
    /// to the highest count seen (the kernel's counter is 32 bits and wraps). The receive loop
    /// and the sender's catch-up read may handle datagrams out of queue order, so an older,
    /// lower count adds nothing.
    pub fn note_socket_drops(&self, reported: u32) -> u32 {
        let is_newer = |seen: u32| (reported.wrapping_sub(seen) as i32) > 0;
        match self
            .drops_seen
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                is_newer(seen).then_some(reported)
            }) {
            Ok(seen) => reported.wrapping_sub(seen),
            Err(_) => 0,
        }
    }

    /// Stops the channel's receiver; the endpoint closes when the last user drops it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_signal.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once [`Channel::close`] was called.
    pub async fn closed(&self) {
        while !self.is_closed() {
            self.close_signal.notified().await;
        }
    }
}

/// State shared by the engine and every channel's receiver.
#[derive(Default)]
pub struct EngineCore {
    pub stats: Arc<EngineStats>,
    /// Counts accepted replies in the order they were received.
    pub arrivals: AtomicU64,
    /// Echo ids of the open ping sockets. A raw socket also sees their replies and errors; it
    /// leaves those to the ping socket instead of counting them twice or as unknown, and raw
    /// probes never use these ids.
    ping_idents: ArcSwap<Vec<(Family, u16)>>,
}

impl EngineCore {
    pub fn is_ping_ident(&self, family: Family, id: u16) -> bool {
        self.ping_idents.load().contains(&(family, id))
    }

    pub fn add_ping_ident(&self, family: Family, id: u16) {
        self.ping_idents.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push((family, id));
            next
        });
    }

    pub fn remove_ping_ident(&self, family: Family, id: u16) {
        self.ping_idents.rcu(|current| {
            let mut next = Vec::clone(current);
            if let Some(position) = next.iter().position(|entry| *entry == (family, id)) {
                next.swap_remove(position);
            }
            next
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmp::fake::FakeTransport;
    use crate::icmp::socket::SocketKind;
    use crate::icmp::transport::{Role, Transport};

    #[test]
    fn socket_drops_add_up_forward_only_and_across_the_wrap() {
        let key = SocketKey {
            family: Family::V4,
            kind: SocketKind::Raw,
            source: None,
            dont_fragment: false,
        };
        let endpoint = FakeTransport::new()
            .open(&key, Role::SendReceive)
            .expect("fake endpoint");
        let channel = Channel::new(key, endpoint);
        assert_eq!(channel.note_socket_drops(5), 5);
        assert_eq!(channel.note_socket_drops(5), 0, "the same count again");
        assert_eq!(channel.note_socket_drops(12), 7);
        // A datagram queued earlier, handled later by the other reader: adds nothing.
        assert_eq!(channel.note_socket_drops(9), 0);
        assert_eq!(channel.note_socket_drops(12), 0);
        // The kernel's 32-bit counter wraps: a count that moved under half the range ahead
        // is newer, one half the range or more away is taken for an old one.
        assert_eq!(channel.note_socket_drops(12 + (1 << 31)), 0);
        assert_eq!(channel.note_socket_drops(11 + (1 << 31)), (1 << 31) - 1);
        assert_eq!(channel.note_socket_drops(u32::MAX - 1), (1 << 31) - 13);
        assert_eq!(channel.note_socket_drops(3), 5);
    }
}
