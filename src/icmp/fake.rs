//! An in-memory [`Transport`] for the engine's unit tests: endpoints record what the engine sends
//! and hand it whatever datagrams or error-queue entries a test delivers, with the kernel's
//! metadata. Tests build replies with [`FakeEndpoint::reply_to`] and ICMP errors with
//! [`FakeEndpoint::error_for`], so no root, socket or network is needed.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::packet::{self, Family};
use super::socket::receive::{QueuedError, ReceiveBatch, ReceiveMeta};
use super::socket::{self, SocketKey, SocketKind};
use super::transport::{Endpoint, OutDatagram, Role, Transport, Wait};

/// One packet the engine sent.
#[derive(Debug, Clone)]
pub struct SentPacket {
    pub bytes: Vec<u8>,
    pub destination: IpAddr,
    pub ttl: Option<u8>,
    /// When it was sent (Tokio's clock, so paused-time tests see exact times).
    pub at: tokio::time::Instant,
}

impl SentPacket {
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }
}

#[derive(Default)]
pub struct FakeTransport {
    pub opened: Mutex<Vec<(SocketKey, Role, Arc<FakeEndpoint>)>>,
    next_ident: AtomicU16,
    /// Refuse ping sockets (as a closed `ping_group_range` does).
    pub refuse_dgram: std::sync::atomic::AtomicBool,
}

impl FakeTransport {
    pub fn new() -> Arc<FakeTransport> {
        Arc::new(FakeTransport {
            opened: Mutex::new(Vec::new()),
            next_ident: AtomicU16::new(4000),
            refuse_dgram: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The endpoint opened for `key` (the latest, if it was reopened).
    pub fn endpoint(&self, key: &SocketKey) -> Arc<FakeEndpoint> {
        self.try_endpoint(key)
            .unwrap_or_else(|| panic!("no endpoint for {key}"))
    }

    /// The endpoint opened for `key`, if any was.
    pub fn try_endpoint(&self, key: &SocketKey) -> Option<Arc<FakeEndpoint>> {
        let opened = self.opened.lock().unwrap();
        let found = opened.iter().rev().find(|(k, _, _)| k == key);
        found.map(|(_, _, endpoint)| Arc::clone(endpoint))
    }

    pub fn open_count(&self) -> usize {
        self.opened.lock().unwrap().len()
    }
}

impl Transport for FakeTransport {
    fn open(&self, key: &SocketKey, role: Role) -> io::Result<Arc<dyn Endpoint>> {
        if key.kind == SocketKind::Dgram && self.refuse_dgram.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let ident = match key.kind {
            SocketKind::Dgram => Some(self.next_ident.fetch_add(1, Ordering::Relaxed)),
            SocketKind::Raw => None,
        };
        let endpoint = Arc::new(FakeEndpoint {
            key: *key,
            ident,
            sent: Mutex::new(Vec::new()),
            send_calls: AtomicUsize::new(0),
            refused_destination: Mutex::new(None),
            inbox: Mutex::new(VecDeque::new()),
            errors: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
        });
        self.opened
            .lock()
            .unwrap()
            .push((*key, role, Arc::clone(&endpoint)));
        Ok(endpoint)
    }
}

pub struct FakeEndpoint {
    pub key: SocketKey,
    ident: Option<u16>,
    pub sent: Mutex<Vec<SentPacket>>,
    /// Send system calls the engine made (one per `try_send`, one per `try_send_many`).
    pub send_calls: AtomicUsize,
    /// Sends to this address fail with this errno (as a route-less destination does).
    pub refused_destination: Mutex<Option<(IpAddr, i32)>>,
    inbox: Mutex<VecDeque<(Vec<u8>, ReceiveMeta)>>,
    errors: Mutex<VecDeque<QueuedError>>,
    arrived: Notify,
}

impl FakeEndpoint {
    pub fn sent(&self) -> Vec<SentPacket> {
        self.sent.lock().unwrap().clone()
    }

    /// Queues a datagram as the kernel would deliver it to this socket.
    pub fn deliver(&self, bytes: Vec<u8>, source: IpAddr) {
        let meta = ReceiveMeta {
            source: Some(source),
            kernel_rx_ns: Some(socket::realtime_ns()),
            hop_limit: Some(61),
            ..ReceiveMeta::default()
        };
        self.inbox.lock().unwrap().push_back((bytes, meta));
        self.arrived.notify_one();
    }

    /// Queues an error-queue entry (ping sockets).
    pub fn deliver_error(&self, error: QueuedError) {
        self.errors.lock().unwrap().push_back(error);
        self.arrived.notify_one();
    }

    /// The datagram a raw or ping socket of this family receives for the echo reply to `sent`,
    /// with `payload` replaced when given.
    pub fn reply_to(&self, sent: &SentPacket, payload: Option<&[u8]>) -> Vec<u8> {
        let family = self.key.family;
        let mut message = sent.bytes.clone();
        if let Some(payload) = payload {
            message.truncate(packet::ECHO_HEADER_LEN);
            message.extend_from_slice(payload);
        }
        message[0] = match family {
            Family::V4 => 0,
            Family::V6 => 129,
        };
        self.wrap(message, sent.destination)
    }

    /// The datagram a raw socket receives for an ICMP destination-unreachable from `router`
    /// quoting `sent` with `quoted_payload` bytes of its payload.
    pub fn error_for(&self, sent: &SentPacket, router: IpAddr, quoted_payload: usize) -> Vec<u8> {
        let family = self.key.family;
        let quoted_len = (packet::ECHO_HEADER_LEN + quoted_payload).min(sent.bytes.len());
        let mut message = match family {
            Family::V4 => vec![3, 1, 0, 0, 0, 0, 0, 0],
            Family::V6 => vec![1, 3, 0, 0, 0, 0, 0, 0],
        };
        message.extend(ip_header(family, router, sent.destination, quoted_len));
        message.extend_from_slice(&sent.bytes[..quoted_len]);
        self.wrap(message, router)
    }

    /// Adds the checksum (IPv4) and, on raw IPv4 sockets, the IP header the kernel delivers.
    fn wrap(&self, mut message: Vec<u8>, source: IpAddr) -> Vec<u8> {
        if self.key.family == Family::V6 {
            return message;
        }
        message[2] = 0;
        message[3] = 0;
        let checksum = packet::internet_checksum(&message);
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
        if self.key.kind == SocketKind::Dgram {
            return message;
        }
        let mut datagram = ip_header(Family::V4, source, source, message.len());
        datagram.extend(message);
        datagram
    }
}

/// A minimal IP header for `payload_len` bytes of ICMP from `source` to `destination`.
fn ip_header(family: Family, source: IpAddr, destination: IpAddr, payload_len: usize) -> Vec<u8> {
    match (family, source, destination) {
        (Family::V4, IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = (20 + payload_len) as u16;
            let mut header = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
            header[2..4].copy_from_slice(&total.to_be_bytes());
            header.extend_from_slice(&src.octets());
            header.extend_from_slice(&dst.octets());
            header
        }
        (_, IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut header = vec![0x60, 0, 0, 0, 0, 0, 58, 64];
            header[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            header.extend_from_slice(&src.octets());
            header.extend_from_slice(&dst.octets());
            header
        }
        _ => panic!("mixed address families"),
    }
}

impl FakeEndpoint {
    fn record_send(
        &self,
        bytes: &[u8],
        destination: SocketAddr,
        ttl: Option<u8>,
    ) -> io::Result<()> {
        if let Some((refused, errno)) = *self.refused_destination.lock().unwrap()
            && refused == destination.ip()
        {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut bytes = bytes.to_vec();
        if let Some(ident) = self.ident {
            // The kernel writes a ping socket's id into every request.
            bytes[4..6].copy_from_slice(&ident.to_be_bytes());
        }
        self.sent.lock().unwrap().push(SentPacket {
            bytes,
            destination: destination.ip(),
            ttl,
            at: tokio::time::Instant::now(),
        });
        Ok(())
    }
}

impl Endpoint for FakeEndpoint {
    fn ident(&self) -> Option<u16> {
        self.ident
    }

    fn try_send(&self, bytes: &[u8], destination: SocketAddr, ttl: Option<u8>) -> io::Result<()> {
        self.send_calls.fetch_add(1, Ordering::Relaxed);
        self.record_send(bytes, destination, ttl)
    }

    fn try_send_many(&self, datagrams: &[OutDatagram<'_>]) -> io::Result<usize> {
        self.send_calls.fetch_add(1, Ordering::Relaxed);
        for (index, datagram) in datagrams.iter().enumerate() {
            if let Err(error) = self.record_send(datagram.bytes, datagram.destination, datagram.ttl)
            {
                return if index == 0 { Err(error) } else { Ok(index) };
            }
        }
        Ok(datagrams.len())
    }

    fn writable(&self) -> Wait<'_> {
        Box::pin(async { Ok(()) })
    }

    fn readable(&self) -> Wait<'_> {
        Box::pin(async move {
            loop {
                let notified = self.arrived.notified();
                if !self.inbox.lock().unwrap().is_empty() || !self.errors.lock().unwrap().is_empty()
                {
                    return Ok(());
                }
                notified.await;
            }
        })
    }

    fn try_receive(&self, batch: &mut ReceiveBatch) -> io::Result<usize> {
        let mut inbox = self.inbox.lock().unwrap();
        let mut count = 0;
        while count < batch.capacity() {
            let Some((bytes, meta)) = inbox.pop_front() else {
                break;
            };
            batch.fill(count, &bytes, meta);
            count += 1;
        }
        if count == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(count)
    }

    fn try_receive_error(&self, _buffer: &mut [u8]) -> io::Result<Option<QueuedError>> {
        Ok(self.errors.lock().unwrap().pop_front())
    }

    fn take_error(&self) -> Option<io::Error> {
        None
    }
}
