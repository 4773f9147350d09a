//! The engine's vocabulary: what a caller asks for ([`EchoRequest`]), what it gets back
//! ([`EchoResult`], [`Answer`], [`EchoFailure`]), the hook through which a caller hears about
//! duplicate replies to its own probes ([`ReplyObserver`]), and the one through which a batch
//! sender hears every outcome ([`AnswerSink`]).
//!
//! Plain types only: no I/O, no locking. Every other engine module depends on this one, and this
//! one on none of them but the wire-level [`super::packet`] and [`super::socket::SocketKind`].

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::packet::IcmpErrorKind;
use super::socket::SocketKind;

/// One echo request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest {
    pub destination: IpAddr,
    /// IPv6 scope (interface index) for link-local targets; 0 otherwise.
    pub scope_id: u32,
    pub source: Option<IpAddr>,
    /// TTL/hop limit of this packet; `None` keeps the OS default. Set per packet, so probes
    /// with different TTLs share one socket.
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
    /// Every sequence number the engine tried for this destination already has a probe waiting
    /// (far more probes in flight to one address than any sane config sends); nothing was sent.
    #[error("too many probes in flight to this address: no free ICMP sequence number")]
    Busy,
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
    pub(super) fn from_attempts(
        dgram_error: Option<io::Error>,
        raw_error: io::Error,
    ) -> SocketOpenError {
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

/// The result of one [`super::Pinger::echo`] call.
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

/// Told about extra replies to a probe that was already answered. A caller passes its observer
/// with the probe ([`super::Pinger::echo_observed`]), so a duplicate is credited to exactly the
/// caller that sent the original, never to another user of the same address.
pub trait ReplyObserver: Send + Sync {
    fn duplicate(&self);
}

/// Told the outcome of every probe sent with [`super::Pinger::send_batch`], exactly once per
/// probe: the answer (from the receive task, as it arrives), `Timeout` (from the sender's
/// [`super::Pinger::expire`], or a reply that came after the deadline), or why it was not sent.
/// `send_index` is what the sender passed with the probe. Also told of duplicates, as an
/// observer.
pub trait AnswerSink: ReplyObserver {
    fn settle(&self, send_index: u64, outcome: Result<Answer, EchoFailure>);
}
