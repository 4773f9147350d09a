//! The seam between the engine and the operating system: a [`Transport`] opens an [`Endpoint`]
//! for a [`SocketKey`], and an endpoint sends, receives in batches, and reads its error queue.
//!
//! The engine (`pinger`, `demux`) talks only to these traits. Production uses the socket-backed
//! [`super::system::SystemTransport`]; tests use the in-memory transport in `fake.rs`,
//! so matching, duplicates, late replies, sequence exhaustion, truncation and ICMP errors are
//! tested without root, in milliseconds. This module only defines the contract.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub use super::socket::Role;
use super::socket::SocketKey;
use super::socket::receive::{QueuedError, ReceiveBatch};
pub use super::socket::send_many::OutDatagram;

/// A boxed future borrowed from an endpoint (the traits stay object-safe).
pub type Wait<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// Opens endpoints. One per process, shared by every probe.
pub trait Transport: Send + Sync + 'static {
    fn open(&self, key: &SocketKey, role: Role) -> io::Result<Arc<dyn Endpoint>>;
}

/// One open ICMP socket (or its stand-in).
pub trait Endpoint: Send + Sync + 'static {
    /// The kernel-assigned echo id of a ping socket; `None` for raw sockets.
    fn ident(&self) -> Option<u16>;
    /// Sends one datagram with this packet's TTL / hop limit (`None`: the default). Never
    /// blocks: `WouldBlock` when the send buffer is full.
    fn try_send(&self, bytes: &[u8], destination: SocketAddr, ttl: Option<u8>) -> io::Result<()>;
    /// Sends datagrams in order and returns how many were taken, with `sendmmsg`'s contract:
    /// an error on the first is the error; one on a later datagram ends the batch early (the
    /// caller sends the rest again and meets it then). Never blocks.
    fn try_send_many(&self, datagrams: &[OutDatagram<'_>]) -> io::Result<usize> {
        for (index, datagram) in datagrams.iter().enumerate() {
            if let Err(error) = self.try_send(datagram.bytes, datagram.destination, datagram.ttl) {
                return if index == 0 { Err(error) } else { Ok(index) };
            }
        }
        Ok(datagrams.len())
    }
    /// Resolves when a send may succeed again.
    fn writable(&self) -> Wait<'_>;
    /// Resolves when datagrams or error-queue entries may be waiting. Readiness is consumed by
    /// this call, so the caller must then read until `WouldBlock` or a short batch.
    fn readable(&self) -> Wait<'_>;
    /// Receives up to the batch's capacity without blocking; returns how many arrived.
    fn try_receive(&self, batch: &mut ReceiveBatch) -> io::Result<usize>;
    /// Reads one entry of a ping socket's error queue; `Ok(None)` when it is empty.
    fn try_receive_error(&self, buffer: &mut [u8]) -> io::Result<Option<QueuedError>>;
    /// Reads and clears a pending asynchronous error (`SO_ERROR`).
    fn take_error(&self) -> Option<io::Error>;
}
