//! The shared-socket ICMP engine: the process's sockets, and [`Pinger::echo`].
//!
//! All probes with the same family, socket kind, source and DF share one socket; the TTL is set
//! per packet. Each ping socket is its own receiving [`Channel`]; all raw sockets of a family send
//! into one channel read by the family's unbound raw socket (every raw socket would otherwise see
//! every reply). A probe picks a sequence number no waiting probe to its address uses, registers
//! under (address, id, seq) with a random nonce in the payload, sends, and waits for its answer;
//! sockets nobody used for [`IDLE_CLOSE`] are closed. This module owns socket bookkeeping and the
//! send path; receiving is `demux.rs`, matching `table.rs`, I/O behind [`Transport`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::channel::{Channel, EngineCore};
use super::demux;
use super::echo::{Answer, EchoFailure, EchoRequest, EchoResult, ReplyObserver, SocketOpenError};
use super::flow::{self, EchoFlow};
use super::packet::{self, Family};
use super::socket::{self, SocketKey, SocketKind};
use super::stats::EngineStats;
use super::system::SystemTransport;
use super::table::{Completion, PendingProbe, ProbeKey};
use super::transport::{Endpoint, Role, Transport};

/// How long a failed ping-socket open is remembered before it is tried again.
const DGRAM_RETRY_AFTER: Duration = Duration::from_secs(10);
/// A socket no probe used for this long is closed (a past config's source or DF, say).
pub const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// How often idle sockets are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Sequence numbers (and, on raw sockets, ids) tried for one probe before it fails as busy.
pub const SEQUENCE_ATTEMPTS: usize = 64;

/// Checks which socket kind this process may open for `family`, without keeping it open.
pub fn check_permissions(family: Family) -> Result<SocketKind, SocketOpenError> {
    let key = |kind| SocketKey {
        family,
        kind,
        source: None,
        dont_fragment: false,
    };
    let dgram_error = match socket::open(&key(SocketKind::Dgram), Role::SendReceive) {
        Ok(_) => return Ok(SocketKind::Dgram),
        Err(error) => error,
    };
    match socket::open(&key(SocketKind::Raw), Role::SendReceive) {
        Ok(_) => Ok(SocketKind::Raw),
        Err(raw_error) => Err(SocketOpenError::from_attempts(Some(dgram_error), raw_error)),
    }
}

/// One socket probes send on, and the channel their answers arrive on.
struct SendSocket {
    key: SocketKey,
    endpoint: Arc<dyn Endpoint>,
    channel: Arc<Channel>,
    /// Milliseconds since the engine's epoch of the last probe that used this socket.
    last_used_ms: AtomicU64,
}

/// How often one send clears a stale ICMP error of a ping socket and tries again.
const ASYNC_ERROR_RETRIES: u8 = 2;

impl SendSocket {
    /// A ping socket reports an earlier probe's ICMP error once through sk_err, which the next
    /// send returns. True (after clearing it) when `error` is such a stale error and `retries`
    /// allow another try, so one probe's error never fails another probe.
    fn clears_stale_error(&self, error: &io::Error, retries: &mut u8) -> bool {
        if self.key.kind != SocketKind::Dgram
            || *retries == 0
            || !socket::is_async_icmp_errno(error)
        {
            return false;
        }
        *retries -= 1;
        let _ = self.endpoint.take_error();
        true
    }

    /// True when this socket is the one its channel reads.
    fn receives(&self) -> bool {
        self.channel.key == self.key
    }
}

/// Removes a probe's pending entry however the probe ends (answer, timeout or cancellation).
struct PendingGuard<'a> {
    channel: &'a Channel,
    key: ProbeKey,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.channel.probes().abandon(&self.key);
    }
}

/// The process-wide ICMP engine. Cheap to clone.
#[derive(Clone)]
pub struct Pinger {
    inner: Arc<PingerInner>,
}

struct PingerInner {
    transport: Arc<dyn Transport>,
    core: Arc<EngineCore>,
    sockets: Mutex<HashMap<SocketKey, Arc<SendSocket>>>,
    dgram_unavailable: Mutex<HashMap<Family, Instant>>,
    sequence: AtomicU16,
    /// Keys the per-destination sequence offset, so one destination's numbers say nothing
    /// about another's.
    sequence_keys: std::collections::hash_map::RandomState,
    epoch: tokio::time::Instant,
    sweeper_started: std::sync::Once,
    /// Moving average of the time one datagram of a batch takes in `sendmmsg`, in ns: the
    /// n-th datagram of a batch is stamped as sent n times this after the call starts.
    batch_ns_per_datagram: AtomicU64,
}

impl Default for Pinger {
    fn default() -> Self {
        Self::new()
    }
}

impl Pinger {
    /// An engine on real ICMP sockets.
    pub fn new() -> Pinger {
        Pinger::with_transport(Arc::new(SystemTransport))
    }

    /// An engine on the given transport (tests use an in-memory one).
    pub fn with_transport(transport: Arc<dyn Transport>) -> Pinger {
        Pinger {
            inner: Arc::new(PingerInner {
                transport,
                core: Arc::new(EngineCore::default()),
                sockets: Mutex::new(HashMap::new()),
                dgram_unavailable: Mutex::new(HashMap::new()),
                sequence: AtomicU16::new(fastrand::u16(..)),
                sequence_keys: std::collections::hash_map::RandomState::new(),
                epoch: tokio::time::Instant::now(),
                sweeper_started: std::sync::Once::new(),
                batch_ns_per_datagram: AtomicU64::new(1_000),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.inner.core.stats
    }

    /// Sends one echo request and waits until `deadline` for its reply or an ICMP error.
    pub async fn echo(&self, request: &EchoRequest, deadline: tokio::time::Instant) -> EchoResult {
        self.echo_observed(request, deadline, None).await
    }

    /// [`Pinger::echo`], telling `observer` about any duplicate reply to this probe.
    pub async fn echo_observed(
        &self,
        request: &EchoRequest,
        deadline: tokio::time::Instant,
        observer: Option<Arc<dyn ReplyObserver>>,
    ) -> EchoResult {
        self.echo_with(request, deadline, observer, None).await
    }

    /// [`Pinger::echo`] in a Paris-traceroute flow: the echo id (on raw sockets) and the ICMP
    /// checksum are `flow`'s whatever the sequence number, the payload's nonce compensating
    /// (`icmp/flow.rs`). Needs a payload of at least 8 bytes ([`flow::payload_fits_flow`]);
    /// with a shorter one the probe goes out outside the flow.
    pub async fn echo_in_flow(
        &self,
        request: &EchoRequest,
        deadline: tokio::time::Instant,
        flow: EchoFlow,
    ) -> EchoResult {
        let flow = Some(flow).filter(|_| flow::payload_fits_flow(request.payload_size));
        self.echo_with(request, deadline, None, flow).await
    }

    async fn echo_with(
        &self,
        request: &EchoRequest,
        deadline: tokio::time::Instant,
        observer: Option<Arc<dyn ReplyObserver>>,
        flow: Option<EchoFlow>,
    ) -> EchoResult {
        let setup_start = Instant::now();
        let failed = |socket_kind, outcome| EchoResult {
            socket_kind,
            id: 0,
            seq: 0,
            setup: setup_start.elapsed(),
            waited: Duration::ZERO,
            outcome: Err(outcome),
        };
        let sender = match self.socket_for(request) {
            Ok(sender) => sender,
            Err(error) => return failed(None, EchoFailure::Socket(error)),
        };
        let channel = &sender.channel;
        let family = sender.key.family;
        let (answer_tx, answer_rx) = oneshot::channel();

        // Pick an (id, seq) no other waiting probe to this address uses, register the probe, and
        // take the send timestamp last, just before the system call.
        let mut packet_bytes = Vec::with_capacity(packet::ECHO_HEADER_LEN + 64);
        let registered = {
            let mut probes = channel.probes();
            let flow_id = flow.map(|flow| flow.id);
            match self.free_key(&sender, request.destination, flow_id, |key| {
                probes.is_waiting(key)
            }) {
                None => None,
                Some(key) => {
                    let nonce = match flow {
                        None => fastrand::u64(..),
                        Some(flow) => flow::flow_nonce(
                            family,
                            key.id,
                            key.seq,
                            request.payload_size,
                            fastrand::u64(..),
                            flow.checksum,
                        ),
                    };
                    packet::encode_echo_request(
                        &mut packet_bytes,
                        family,
                        key.id,
                        key.seq,
                        request.payload_size,
                        nonce,
                    );
                    let setup = setup_start.elapsed();
                    let sent_at = Instant::now();
                    probes.insert(
                        key,
                        PendingProbe {
                            nonce,
                            payload_size: request.payload_size,
                            sent_realtime_ns: socket::realtime_ns() as i64,
                            sent_at,
                            completion: Completion::Waiter {
                                answer: answer_tx,
                                observer,
                            },
                            expires_at: None,
                            hint: None,
                        },
                    );
                    Some((key, setup, sent_at))
                }
            }
        };
        let Some((key, setup, sent_at)) = registered else {
            self.stats().count_busy();
            return failed(Some(sender.key.kind), EchoFailure::Busy);
        };
        let guard = PendingGuard {
            channel: channel.as_ref(),
            key,
        };
        let destination = socket::destination_addr(request.destination, request.scope_id);
        let send_result = self
            .send(&sender, &packet_bytes, destination, request.ttl)
            .await;
        let outcome = match send_result {
            Err(error) => {
                self.stats().count_send_error();
                Err(EchoFailure::Send(error))
            }
            Ok(()) => {
                self.stats().count_sent(family);
                let mut answer_rx = answer_rx;
                match tokio::time::timeout_at(deadline, &mut answer_rx).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(_closed)) => Err(EchoFailure::Timeout),
                    Err(_elapsed) => {
                        let hint = channel.probes().abandon(&key);
                        drop(guard);
                        // The receiver may have answered between the timer firing and now.
                        match (answer_rx.try_recv(), hint) {
                            (Ok(answer), _) => Ok(answer),
                            (Err(_), Some(hint)) => {
                                if let Answer::IcmpError { kind, .. } = hint {
                                    self.stats().count_icmp_error(kind);
                                }
                                Ok(hint)
                            }
                            (Err(_), None) => Err(EchoFailure::Timeout),
                        }
                    }
                }
            }
        };
        EchoResult {
            socket_kind: Some(sender.key.kind),
            id: key.id,
            seq: key.seq,
            setup,
            waited: sent_at.elapsed(),
            outcome,
        }
    }

    /// An (id, seq) for a probe to `destination` that `is_waiting` says is free, or `None` after
    /// [`SEQUENCE_ATTEMPTS`] tries. The sequence number is the process-wide counter plus a
    /// secret per-destination offset; raw sockets also draw a random id per try, or keep
    /// `raw_id` (a flow's) unless one of the process's ping sockets owns it.
    fn free_key(
        &self,
        sender: &SendSocket,
        destination: IpAddr,
        raw_id: Option<u16>,
        is_waiting: impl Fn(&ProbeKey) -> bool,
    ) -> Option<ProbeKey> {
        let offset = self.inner.sequence_keys.hash_one(destination) as u16;
        let ping_ident = sender.channel.endpoint.ident();
        let family = sender.key.family;
        let raw_id = raw_id.filter(|id| !self.inner.core.is_ping_ident(family, *id));
        for _ in 0..SEQUENCE_ATTEMPTS {
            let counter = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
            let key = ProbeKey {
                address: destination,
                id: ping_ident.or(raw_id).unwrap_or_else(|| self.raw_id(family)),
                seq: counter.wrapping_add(1).wrapping_add(offset),
            };
            if !is_waiting(&key) {
                return Some(key);
            }
        }
        None
    }

    /// A random echo id for a raw probe that none of the process's ping sockets owns.
    fn raw_id(&self, family: Family) -> u16 {
        loop {
            let id = fastrand::u16(..);
            if !self.inner.core.is_ping_ident(family, id) {
                return id;
            }
        }
    }

    async fn send(
        &self,
        sender: &SendSocket,
        bytes: &[u8],
        destination: SocketAddr,
        ttl: Option<u8>,
    ) -> io::Result<()> {
        let mut retries = ASYNC_ERROR_RETRIES;
        loop {
            match sender.endpoint.try_send(bytes, destination, ttl) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    sender.endpoint.writable().await?;
                }
                Err(error) if sender.clears_stale_error(&error, &mut retries) => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn sockets(&self) -> MutexGuard<'_, HashMap<SocketKey, Arc<SendSocket>>> {
        self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// Finds or opens the socket for a request: ping socket first, raw second, as blackbox
    /// does; IPv4 with DF is always raw.
    fn socket_for(&self, request: &EchoRequest) -> Result<Arc<SendSocket>, SocketOpenError> {
        let family = Family::of(&request.destination);
        let dont_fragment = request.dont_fragment && family == Family::V4;
        let dgram_key = SocketKey {
            family,
            kind: SocketKind::Dgram,
            source: request.source,
            dont_fragment: false,
        };
        let raw_key = SocketKey {
            kind: SocketKind::Raw,
            dont_fragment,
            ..dgram_key
        };
        let try_dgram = !dont_fragment && self.dgram_may_work(family);
        let preferred = if try_dgram { dgram_key } else { raw_key };
        if let Some(found) = self.sockets().get(&preferred) {
            found.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
            return Ok(Arc::clone(found));
        }
        let mut dgram_error = None;
        if try_dgram {
            match self.open(dgram_key) {
                Ok(shared) => return Ok(shared),
                Err(error) => {
                    tracing::debug!(%error, "Unable to do unprivileged listen on socket, will attempt privileged");
                    // Remember only a lack of permission; a missing source address is not.
                    if matches!(error.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
                        self.inner
                            .dgram_unavailable
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(family, Instant::now());
                    }
                    dgram_error = Some(error);
                }
            }
        }
        self.open(raw_key).map_err(|raw_error| {
            self.stats().count_socket_open_error();
            SocketOpenError::from_attempts(dgram_error, raw_error)
        })
    }

    fn dgram_may_work(&self, family: Family) -> bool {
        let unavailable = self
            .inner
            .dgram_unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        unavailable
            .get(&family)
            .is_none_or(|since| since.elapsed() >= DGRAM_RETRY_AFTER)
    }

    /// Opens the socket for `key` (and, for a raw key, its family's receiving raw socket).
    fn open(&self, key: SocketKey) -> io::Result<Arc<SendSocket>> {
        self.start_sweeper();
        let mut sockets = self.sockets();
        if let Some(found) = sockets.get(&key) {
            return Ok(Arc::clone(found));
        }
        let receiver_key = match key.kind {
            SocketKind::Dgram => key,
            SocketKind::Raw => SocketKey {
                source: None,
                dont_fragment: false,
                ..key
            },
        };
        let receiver = match sockets.get(&receiver_key) {
            Some(found) => Arc::clone(found),
            None => {
                let opened = self.open_receiver(receiver_key)?;
                sockets.insert(receiver_key, Arc::clone(&opened));
                opened
            }
        };
        if receiver_key == key {
            return Ok(receiver);
        }
        let endpoint = self.inner.transport.open(&key, Role::SendOnly)?;
        let sender = Arc::new(SendSocket {
            key,
            endpoint,
            channel: Arc::clone(&receiver.channel),
            last_used_ms: AtomicU64::new(self.now_ms()),
        });
        tracing::debug!(socket = %key, "opened send-only ICMP socket");
        self.stats().count_socket_opened(key.family, true);
        sockets.insert(key, Arc::clone(&sender));
        Ok(sender)
    }

    fn open_receiver(&self, key: SocketKey) -> io::Result<Arc<SendSocket>> {
        let endpoint = self.inner.transport.open(&key, Role::SendReceive)?;
        if key.kind == SocketKind::Dgram {
            let ident = endpoint
                .ident()
                .ok_or_else(|| io::Error::other("ping socket has no echo id"))?;
            self.inner.core.add_ping_ident(key.family, ident);
        }
        let channel = Arc::new(Channel::new(key, Arc::clone(&endpoint)));
        tracing::debug!(socket = %key, ident = endpoint.ident(), "opened shared ICMP socket");
        self.stats()
            .count_socket_opened(key.family, key.kind == SocketKind::Raw);
        tokio::spawn(demux::receive_loop(
            Arc::clone(&channel),
            Arc::clone(&self.inner.core),
        ));
        Ok(Arc::new(SendSocket {
            key,
            endpoint,
            channel,
            last_used_ms: AtomicU64::new(self.now_ms()),
        }))
    }

    /// Starts the task that closes idle sockets (once, from inside the runtime).
    fn start_sweeper(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.sweeper_started.call_once(|| {
            tokio::spawn(sweep_loop(weak));
        });
    }

    /// Closes the sockets no probe used for [`IDLE_CLOSE`]. A receiving socket stays while
    /// probes wait on its channel or another socket still sends into it.
    fn close_idle(&self) -> usize {
        let now = self.now_ms();
        let idle_ms = IDLE_CLOSE.as_millis() as u64;
        let mut sockets = self.sockets();
        let is_idle =
            |s: &SendSocket| now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) >= idle_ms;
        let idle_senders: Vec<SocketKey> = sockets
            .values()
            .filter(|s| !s.receives() && is_idle(s))
            .map(|s| s.key)
            .collect();
        for key in &idle_senders {
            sockets.remove(key);
        }
        let idle_receivers: Vec<SocketKey> = sockets
            .values()
            .filter(|s| s.receives() && is_idle(s))
            .filter(|s| s.channel.probes().waiting_count() == 0)
            .filter(|s| {
                !sockets
                    .values()
                    .any(|other| !other.receives() && Arc::ptr_eq(&other.channel, &s.channel))
            })
            .map(|s| s.key)
            .collect();
        for key in &idle_receivers {
            if let Some(receiver) = sockets.remove(key) {
                receiver.channel.close();
                if let Some(ident) = receiver.endpoint.ident() {
                    self.inner.core.remove_ping_ident(key.family, ident);
                }
            }
        }
        for key in idle_senders.iter().chain(&idle_receivers) {
            tracing::debug!(socket = %key, "closed idle ICMP socket");
            self.stats()
                .count_socket_closed(key.family, key.kind == SocketKind::Raw);
        }
        idle_senders.len() + idle_receivers.len()
    }
}

async fn sweep_loop(engine: Weak<PingerInner>) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        Pinger { inner }.close_idle();
    }
}

#[path = "batch.rs"]
mod batch;
pub use batch::{BatchProbe, Ticket};

#[cfg(test)]
#[path = "pinger_tests.rs"]
mod tests;
