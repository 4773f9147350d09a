//! The shared-socket ICMP engine: one socket per [`SocketKey`], and a demultiplexer per socket.
//!
//! [`Pinger::echo`] sends one echo request and waits for its answer. All probes with the same
//! family, socket kind, source, TTL and DF share one socket. A receiver task per socket reads
//! replies in batches and hands each one to the probe waiting for exactly that (source address, id,
//! seq) whose payload carries that probe's nonce; everything else is rejected and counted. ICMP
//! errors that quote a waiting probe end it at once. This module does not know about HTTP or metrics
//! formats; it only counts into [`EngineStats`].

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::demux;
use super::packet::{self, Family, IcmpErrorKind};
use super::socket::{self, SocketKey, SocketKind};
use super::stats::EngineStats;
use super::table::{PendingProbe, ProbeKey, ProbeTable};

/// One echo request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest {
    pub destination: IpAddr,
    /// IPv6 scope (interface index) for link-local targets; 0 otherwise.
    pub scope_id: u32,
    pub source: Option<IpAddr>,
    /// TTL/hop limit; `None` keeps the OS default.
    pub ttl: Option<u8>,
    pub dont_fragment: bool,
    /// blackbox `payload_size` (0 means the 28-byte default payload).
    pub payload_size: usize,
}

/// A successful answer or an ICMP error that quoted our request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Echo {
        rtt: Duration,
        hop_limit: Option<u8>,
        /// The RTT's receive side came from the kernel's `SO_TIMESTAMPNS`.
        kernel_timestamp: bool,
        /// Position of this reply in the engine's receive order (for reordering detection).
        arrival: u64,
    },
    IcmpError {
        kind: IcmpErrorKind,
        icmp_type: u8,
        code: u8,
        from: Option<IpAddr>,
    },
}

/// Why no answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum EchoFailure {
    #[error("{0}")]
    Socket(#[from] SocketOpenError),
    #[error("error writing to socket: {0}")]
    Send(io::Error),
    #[error("timeout waiting for an echo reply")]
    Timeout,
}

/// Neither socket kind could be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketOpenError {
    #[error(
        "no permission to open an ICMP socket ({detail}). Fix one of: run meshprobe as root; \
         grant it CAP_NET_RAW (setcap cap_net_raw+ep /path/to/meshprobe, or \
         AmbientCapabilities=CAP_NET_RAW in systemd); or allow unprivileged ping sockets for its \
         group (sysctl -w net.ipv4.ping_group_range=\"0 2147483647\")"
    )]
    Permission { detail: String },
    #[error("error listening to socket: {0}")]
    Other(io::Error),
}

impl SocketOpenError {
    /// Classifies the errors of a ping-socket attempt (if any) and the raw-socket attempt.
    fn from_attempts(dgram_error: Option<io::Error>, raw_error: io::Error) -> SocketOpenError {
        let permission =
            |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
        if permission(&raw_error) && dgram_error.as_ref().is_none_or(permission) {
            let mut detail = format!("raw socket: {raw_error}");
            if let Some(dgram) = dgram_error {
                detail = format!("ping socket: {dgram}; {detail}");
            }
            SocketOpenError::Permission { detail }
        } else {
            SocketOpenError::Other(raw_error)
        }
    }
}

/// Checks which socket kind this process may open for `family`, without keeping it open.
pub fn check_permissions(family: Family) -> Result<SocketKind, SocketOpenError> {
    let key = |kind| SocketKey {
        family,
        kind,
        source: None,
        ttl: None,
        dont_fragment: false,
    };
    let dgram_error = match socket::open(&key(SocketKind::Dgram)) {
        Ok(_) => return Ok(SocketKind::Dgram),
        Err(error) => error,
    };
    match socket::open(&key(SocketKind::Raw)) {
        Ok(_) => Ok(SocketKind::Raw),
        Err(raw_error) => Err(SocketOpenError::from_attempts(Some(dgram_error), raw_error)),
    }
}

/// The result of one [`Pinger::echo`] call.
#[derive(Debug)]
pub struct EchoResult {
    pub socket_kind: Option<SocketKind>,
    pub id: u16,
    pub seq: u16,
    /// Socket lookup or creation plus packet encoding (blackbox's `setup` phase).
    pub setup: Duration,
    /// From just before the send until the answer was handled (blackbox's `rtt` window).
    pub waited: Duration,
    pub outcome: Result<Answer, EchoFailure>,
}

/// One shared socket, its probe table and what its receiver needs to know.
pub(super) struct SharedSocket {
    pub(super) key: SocketKey,
    pub(super) fd: AsyncFd<Socket>,
    /// Kernel-assigned echo id of a ping socket.
    pub(super) ident: Option<u16>,
    pub(super) probes: Mutex<ProbeTable>,
    pub(super) largest_payload: AtomicUsize,
}

impl SharedSocket {
    pub(super) fn probes(&self) -> MutexGuard<'_, ProbeTable> {
        // A panic while holding this lock cannot leave the map inconsistent, so recover it.
        self.probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes a probe's pending entry however the probe ends (answer, timeout or cancellation).
struct PendingGuard<'a> {
    socket: &'a SharedSocket,
    key: ProbeKey,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.socket.probes().abandon(&self.key);
    }
}

/// How long a failed ping-socket open is remembered before it is tried again.
const DGRAM_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The process-wide ICMP engine. Cheap to clone.
#[derive(Clone)]
pub struct Pinger {
    inner: Arc<PingerInner>,
}

/// Told about replies that match no waiting probe but a recently answered one (duplicates).
pub trait ReplyObserver: Send + Sync {
    fn duplicate(&self, address: IpAddr);
}

pub(super) struct PingerInner {
    pub(super) observer: arc_swap::ArcSwapOption<Box<dyn ReplyObserver>>,
    sockets: Mutex<HashMap<SocketKey, Arc<SharedSocket>>>,
    dgram_unavailable: Mutex<HashMap<Family, Instant>>,
    sequence: AtomicU16,
    pub(super) stats: Arc<EngineStats>,
    /// Counts accepted replies in the order they were received.
    pub(super) arrivals: AtomicU64,
}

impl Default for Pinger {
    fn default() -> Self {
        Self::new()
    }
}

impl Pinger {
    pub fn new() -> Pinger {
        Pinger {
            inner: Arc::new(PingerInner {
                observer: arc_swap::ArcSwapOption::empty(),
                arrivals: AtomicU64::new(0),
                sockets: Mutex::new(HashMap::new()),
                dgram_unavailable: Mutex::new(HashMap::new()),
                sequence: AtomicU16::new(fastrand::u16(..)),
                stats: Arc::new(EngineStats::default()),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.inner.stats
    }

    /// Installs the observer told about duplicate replies (the mesh attributes them to targets).
    pub fn set_observer(&self, observer: Box<dyn ReplyObserver>) {
        self.inner.observer.store(Some(Arc::new(observer)));
    }

    /// Sends one echo request and waits until `deadline` for its reply or an ICMP error.
    pub async fn echo(&self, request: &EchoRequest, deadline: tokio::time::Instant) -> EchoResult {
        let setup_start = Instant::now();
        let shared = match self.socket_for(request) {
            Ok(shared) => shared,
            Err(error) => {
                return EchoResult {
                    socket_kind: None,
                    id: 0,
                    seq: 0,
                    setup: Duration::ZERO,
                    waited: Duration::ZERO,
                    outcome: Err(EchoFailure::Socket(error)),
                };
            }
        };
        let family = shared.key.family;
        let id = shared.ident.unwrap_or_else(|| fastrand::u16(..));
        let nonce = fastrand::u64(..);
        shared
            .largest_payload
            .fetch_max(packet::payload_len(request.payload_size), Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();

        // Pick a sequence number no other waiting probe to this address uses, register the probe,
        // and take the send timestamp last, just before the system call.
        let mut packet_bytes = Vec::with_capacity(packet::ECHO_HEADER_LEN + 64);
        let (key, setup, sent_at) = {
            let mut probes = shared.probes();
            let mut seq = self.next_sequence();
            let key = loop {
                let key = ProbeKey {
                    address: request.destination,
                    id,
                    seq,
                };
                if !probes.is_waiting(&key) {
                    break key;
                }
                seq = self.next_sequence();
            };
            packet::encode_echo_request(
                &mut packet_bytes,
                family,
                id,
                seq,
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
                    sent_realtime_ns: socket::realtime_ns(),
                    sent_at,
                    answer: answer_tx,
                },
            );
            (key, setup, sent_at)
        };
        let guard = PendingGuard {
            socket: &shared,
            key,
        };
        let destination = socket::destination_addr(request.destination, request.scope_id);
        let send_result = self.send(&shared, &packet_bytes, destination).await;
        let outcome = match send_result {
            Err(error) => {
                self.inner.stats.count_send_error();
                Err(EchoFailure::Send(error))
            }
            Ok(()) => {
                self.inner.stats.count_sent(family);
                let mut answer_rx = answer_rx;
                match tokio::time::timeout_at(deadline, &mut answer_rx).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(_closed)) => Err(EchoFailure::Timeout),
                    Err(_elapsed) => {
                        // The receiver may have answered between the timer firing and now.
                        drop(guard);
                        match answer_rx.try_recv() {
                            Ok(answer) => Ok(answer),
                            Err(_) => Err(EchoFailure::Timeout),
                        }
                    }
                }
            }
        };
        EchoResult {
            socket_kind: Some(shared.key.kind),
            id,
            seq: key.seq,
            setup,
            waited: sent_at.elapsed(),
            outcome,
        }
    }

    fn next_sequence(&self) -> u16 {
        self.inner
            .sequence
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    async fn send(
        &self,
        shared: &SharedSocket,
        bytes: &[u8],
        destination: std::net::SocketAddr,
    ) -> io::Result<()> {
        // A ping socket reports an earlier probe's ICMP error once through sk_err, which the next
        // send would return; clear it and retry so one probe's error never fails another probe.
        let mut async_error_retries = 2;
        loop {
            match socket::send_to(shared.fd.get_ref(), bytes, destination) {
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    let mut ready = shared.fd.writable().await?;
                    ready.clear_ready();
                }
                Err(error)
                    if shared.key.kind == SocketKind::Dgram
                        && async_error_retries > 0
                        && socket::is_async_icmp_errno(&error) =>
                {
                    async_error_retries -= 1;
                    let _ = socket::take_socket_error(shared.fd.get_ref());
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Finds or opens the shared socket for a request: ping socket first, raw second, as blackbox
    /// does; IPv4 with DF is always raw.
    fn socket_for(&self, request: &EchoRequest) -> Result<Arc<SharedSocket>, SocketOpenError> {
        let family = Family::of(&request.destination);
        let dont_fragment = request.dont_fragment && family == Family::V4;
        let base = SocketKey {
            family,
            kind: SocketKind::Dgram,
            source: request.source,
            ttl: request.ttl,
            dont_fragment,
        };
        let raw_key = SocketKey {
            kind: SocketKind::Raw,
            ..base
        };
        let try_dgram = !dont_fragment && self.dgram_may_work(family);
        {
            let sockets = self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner());
            let preferred = if try_dgram { &base } else { &raw_key };
            if let Some(found) = sockets.get(preferred) {
                return Ok(Arc::clone(found));
            }
        }
        let mut dgram_error = None;
        if try_dgram {
            match self.open_shared(base) {
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
        self.open_shared(raw_key).map_err(|raw_error| {
            self.inner.stats.count_socket_open_error();
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

    fn open_shared(&self, key: SocketKey) -> io::Result<Arc<SharedSocket>> {
        let mut sockets = self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = sockets.get(&key) {
            return Ok(Arc::clone(found));
        }
        let opened = socket::open(&key)?;
        let ident = match key.kind {
            SocketKind::Dgram => Some(socket::ping_socket_ident(&opened)?),
            SocketKind::Raw => None,
        };
        let interest = Interest::READABLE | Interest::WRITABLE | Interest::ERROR;
        // SAFETY: socket2::Socket owns its descriptor and always returns the same one from
        // as_raw_fd; it stays open until the AsyncFd (which owns the Socket) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(opened, interest) }
            .map_err(|error| error.into_parts().1)?;
        let shared = Arc::new(SharedSocket {
            key,
            fd,
            ident,
            probes: Mutex::new(ProbeTable::default()),
            largest_payload: AtomicUsize::new(packet::BLACKBOX_PAYLOAD.len()),
        });
        tracing::debug!(?key, ident, "opened shared ICMP socket");
        sockets.insert(key, Arc::clone(&shared));
        self.inner
            .stats
            .count_socket_opened(key.family, key.kind == SocketKind::Raw);
        tokio::spawn(demux::receive_loop(
            Arc::clone(&shared),
            Arc::clone(&self.inner),
        ));
        Ok(shared)
    }
}
