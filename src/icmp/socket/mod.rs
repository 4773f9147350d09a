//! ICMP socket creation, options, sending with a per-packet hop limit (one datagram here, many
//! per system call in [`send_many`]), and (in [`receive`]) batched receive with control messages. `super::system` wraps it all as the engine's
//! production transport.
//!
//! This module owns every system call on an ICMP socket and is the only place in the engine
//! allowed to use `unsafe`. It knows nothing about probes or matching; the demultiplexer does that.

#![allow(unsafe_code)]

pub mod receive;
pub mod send_many;

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::packet::Family;

/// What a socket is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends, and receives the replies meant for it.
    SendReceive,
    /// Only sends (a raw socket bound to a source address or with DF set: the family's one
    /// receiving raw socket reads its replies, so this one must receive nothing).
    SendOnly,
}

/// Which kind of ICMP socket a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketKind {
    /// Unprivileged ping socket; the kernel owns the echo id and filters replies by it.
    Dgram,
    /// Raw socket; needs root or CAP_NET_RAW and sees every ICMP packet the filter lets through.
    Raw,
}

impl SocketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Dgram => "dgram",
            SocketKind::Raw => "raw",
        }
    }
}

/// Everything that makes two probes unable to share one socket. The TTL is not part of it: it
/// is set per packet (`IP_TTL` / `IPV6_HOPLIMIT` control messages), which raw and ping sockets
/// both accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketKey {
    pub family: Family,
    pub kind: SocketKind,
    /// Bind address (`source_ip_address`); `None` binds the unspecified address.
    pub source: Option<IpAddr>,
    /// Set DF (IPv4 only; `IP_MTU_DISCOVER = IP_PMTUDISC_DO`).
    pub dont_fragment: bool,
}

impl std::fmt::Display for SocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            Family::V4 => "ip4",
            Family::V6 => "ip6",
        };
        write!(f, "{family} {}", self.kind.as_str())?;
        if let Some(source) = self.source {
            write!(f, " from {source}")?;
        }
        if self.dont_fragment {
            write!(f, " DF")?;
        }
        Ok(())
    }
}

/// Opens and configures a socket for `key`. The socket is non-blocking and bound.
///
/// A [`Role::SendOnly`] raw socket blocks every ICMP type with its filter: every raw socket of a
/// family receives every ICMP packet, so only one of them (the family's unbound receiver) may
/// read, or each reply would be seen twice.
pub fn open(key: &SocketKey, role: Role) -> io::Result<Socket> {
    let (domain, protocol) = match key.family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    let socket_type = match key.kind {
        SocketKind::Dgram => Type::DGRAM,
        SocketKind::Raw => Type::RAW,
    };
    let socket = Socket::new(domain, socket_type, Some(protocol))?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    let bind_addr = match (key.source, key.family) {
        (Some(addr), _) => SocketAddr::new(addr, 0),
        (None, Family::V4) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (None, Family::V6) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    socket.bind(&SockAddr::from(bind_addr))?;
    let fd = socket.as_fd_borrowed();
    if key.dont_fragment && key.family == Family::V4 {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?;
    }
    if role == Role::SendOnly && key.kind == SocketKind::Raw {
        match key.family {
            Family::V4 => set_icmp_filter_v4(fd, &[])?,
            Family::V6 => set_icmp6_filter(fd, &[])?,
        }
        return Ok(socket);
    }
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    // Each datagram then carries the socket's drop count, so replies the kernel had to throw
    // away for want of buffer space are counted (`meshprobe_socket_receive_drops_total`).
    set_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    match key.family {
        Family::V4 => set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?,
        Family::V6 => set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?,
    }
    match (key.kind, key.family) {
        (SocketKind::Dgram, Family::V4) => set_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)?,
        (SocketKind::Dgram, Family::V6) => set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?,
        (SocketKind::Raw, Family::V4) => set_icmp_filter_v4(fd, &ICMP4_WANTED)?,
        (SocketKind::Raw, Family::V6) => set_icmp6_filter(fd, &ICMP6_WANTED)?,
    }
    // A large receive buffer absorbs a burst of replies to a thousand concurrent probes.
    // SO_RCVBUFFORCE works with CAP_NET_ADMIN; otherwise fall back to the sysctl-capped SO_RCVBUF.
    const RECEIVE_BUFFER: libc::c_int = 4 << 20;
    if set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER).is_err() {
        let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER);
        warn_once_if_small_receive_buffer(&socket, RECEIVE_BUFFER as usize);
    }
    Ok(socket)
}

/// Says once per process that the kernel capped the receive buffer (no CAP_NET_ADMIN, and
/// `net.core.rmem_max` below the wish): a large mesh can then lose replies to its own buffer.
fn warn_once_if_small_receive_buffer(socket: &Socket, wished: usize) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // The kernel reports twice what was set (it counts its bookkeeping too).
    let Ok(granted) = socket.recv_buffer_size() else {
        return;
    };
    if granted < 2 * wished && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            granted_bytes = granted,
            wished_bytes = 2 * wished,
            "ICMP receive buffer capped by net.core.rmem_max: under load, replies may be dropped before they are read (meshprobe_socket_receive_drops_total); for meshes of thousands of targets raise it (sysctl net.core.rmem_max=8388608)"
        );
    }
}

/// A borrowed view of a socket's descriptor, for the option setters below.
trait BorrowFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl BorrowFd for Socket {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// The echo id the kernel assigned to a bound ping socket (its "port").
pub fn ping_socket_ident(socket: &Socket) -> io::Result<u16> {
    let local = socket.local_addr()?;
    local
        .as_socket()
        .map(|addr| addr.port())
        .ok_or_else(|| io::Error::other("ping socket has no local address"))
}

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is a live descriptor (borrowed for the call); value is a valid c_int that
    // outlives the call, and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// ICMP types the receiving raw IPv4 socket lets through: echo reply and the errors we classify.
const ICMP4_WANTED: [u8; 4] = [0, 3, 11, 12];
/// ICMPv6 types the receiving raw IPv6 socket lets through.
const ICMP6_WANTED: [u8; 5] = [129, 1, 2, 3, 4];

/// `ICMP_FILTER` (SOL_RAW, 1): a 32-bit mask where a set bit blocks that type. Types above 31
/// are never delivered to a filtered socket.
fn set_icmp_filter_v4(fd: BorrowedFd<'_>, wanted: &[u8]) -> io::Result<()> {
    const ICMP_FILTER: libc::c_int = 1;
    let mut mask: u32 = u32::MAX;
    for icmp_type in wanted {
        mask &= !(1u32 << icmp_type);
    }
    // SAFETY: fd is a live descriptor; mask is a u32 that outlives the call, and the length
    // matches the kernel's struct icmp_filter.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_RAW,
            ICMP_FILTER,
            (&mask as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ICMP6_FILTER` (IPPROTO_ICMPV6, 1): 256 bits where a set bit blocks that type.
fn set_icmp6_filter(fd: BorrowedFd<'_>, wanted: &[u8]) -> io::Result<()> {
    const ICMP6_FILTER: libc::c_int = 1;
    let mut filter = [u32::MAX; 8];
    for icmp_type in wanted {
        filter[usize::from(icmp_type >> 5)] &= !(1u32 << (icmp_type & 31));
    }
    // SAFETY: fd is a live descriptor; filter is 32 bytes that outlive the call, matching
    // struct icmp6_filter.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            size_of::<[u32; 8]>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Registers an opened socket with Tokio's reactor for reading, writing and error-queue events.
pub fn register(socket: Socket) -> io::Result<tokio::io::unix::AsyncFd<Socket>> {
    use tokio::io::Interest;
    let interest = Interest::READABLE | Interest::WRITABLE | Interest::ERROR;
    // SAFETY: socket2::Socket owns its descriptor and always returns the same one from
    // as_raw_fd; it stays open until the AsyncFd (which owns the Socket) is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, interest) }
        .map_err(|error| error.into_parts().1)
}

/// Reads and clears a socket's pending asynchronous error (`SO_ERROR`).
pub fn take_socket_error(socket: &Socket) -> Option<io::Error> {
    socket.take_error().ok().flatten()
}

/// Room for one `int` control message (`CMSG_SPACE(sizeof(int))` is 16 on Linux).
const HOP_LIMIT_CONTROL_LEN: usize = 32;

/// Sends one datagram without blocking, with `hop_limit` as this packet's TTL / hop limit (an
/// `IP_TTL` or `IPV6_HOPLIMIT` control message) or the socket's default when `None`.
pub fn send_to(
    socket: &Socket,
    bytes: &[u8],
    destination: SocketAddr,
    hop_limit: Option<u8>,
) -> io::Result<usize> {
    let address = SockAddr::from(destination);
    let Some(hop_limit) = hop_limit else {
        return socket.send_to(bytes, &address);
    };
    let (level, name) = match destination {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_TTL),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT),
    };
    let value = libc::c_int::from(hop_limit);
    let mut control = [0u64; HOP_LIMIT_CONTROL_LEN / 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr. Every pointer set below (name, iov, control) points to
    // memory that lives until sendmsg returns; the kernel only reads through them (iov_base is
    // cast to *mut because the C struct has no const variant). CMSG_FIRSTHDR of a msghdr whose
    // control buffer holds CMSG_SPACE(sizeof(int)) bytes is non-null and has room for one int.
    let sent = unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_name = address.as_ptr().cast_mut().cast();
        header.msg_namelen = address.len();
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = name;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), value);
        libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_DONTWAIT)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Nanoseconds since the Unix epoch on CLOCK_REALTIME, the clock of `SO_TIMESTAMPNS`.
pub fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The socket address to send an echo request to (port 0, scope id for link-local IPv6).
pub fn destination_addr(address: IpAddr, scope_id: u32) -> SocketAddr {
    match address {
        IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, 0)),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, scope_id)),
    }
}

/// Errors a ping socket reports once through `sk_err` after an ICMP error arrived for an earlier
/// packet; a send or receive that returns one of these is not about the current call.
pub fn is_async_icmp_errno(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ECONNREFUSED
                | libc::EPROTO
                | libc::EHOSTDOWN
                | libc::EMSGSIZE
        )
    )
}
