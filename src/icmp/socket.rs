//! ICMP socket creation, options and batched receive with control messages.
//!
//! This module owns every system call on an ICMP socket: opening a raw (`SOCK_RAW`) or ping
//! (`SOCK_DGRAM`) socket for a [`SocketKey`], setting TTL/hop limit, DF, ICMP filters, kernel
//! receive timestamps and TTL control messages, sending one datagram, receiving a batch with
//! `recvmmsg`, and reading a ping socket's error queue. It knows nothing about probes or matching;
//! the demultiplexer in `pinger.rs` does that.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::packet::Family;

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

/// Everything that makes two probes unable to share one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketKey {
    pub family: Family,
    pub kind: SocketKind,
    /// Bind address (`source_ip_address`); `None` binds the unspecified address.
    pub source: Option<IpAddr>,
    /// TTL or hop limit to set; `None` keeps the OS default.
    pub ttl: Option<u8>,
    /// Set DF (IPv4 only; `IP_MTU_DISCOVER = IP_PMTUDISC_DO`).
    pub dont_fragment: bool,
}

/// Opens and configures a socket for `key`. The socket is non-blocking and bound.
pub fn open(key: &SocketKey) -> io::Result<Socket> {
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
    if let Some(ttl) = key.ttl {
        match key.family {
            Family::V4 => socket.set_ttl_v4(u32::from(ttl))?,
            Family::V6 => socket.set_unicast_hops_v6(u32::from(ttl))?,
        }
    }
    let fd = socket.as_raw_fd();
    if key.dont_fragment && key.family == Family::V4 {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?;
    }
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    match key.family {
        Family::V4 => set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?,
        Family::V6 => set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?,
    }
    match (key.kind, key.family) {
        (SocketKind::Dgram, Family::V4) => set_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)?,
        (SocketKind::Dgram, Family::V6) => set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?,
        (SocketKind::Raw, Family::V4) => set_icmp_filter_v4(fd)?,
        (SocketKind::Raw, Family::V6) => set_icmp6_filter(fd)?,
    }
    // A large receive buffer absorbs a burst of replies to a thousand concurrent probes.
    // SO_RCVBUFFORCE works with CAP_NET_ADMIN; otherwise fall back to the sysctl-capped SO_RCVBUF.
    const RECEIVE_BUFFER: libc::c_int = 4 << 20;
    if set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER).is_err() {
        let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER);
    }
    Ok(socket)
}

/// The echo id the kernel assigned to a bound ping socket (its "port").
pub fn ping_socket_ident(socket: &Socket) -> io::Result<u16> {
    let local = socket.local_addr()?;
    local
        .as_socket()
        .map(|addr| addr.port())
        .ok_or_else(|| io::Error::other("ping socket has no local address"))
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: value is a valid c_int that outlives the call; the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd,
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

/// ICMP types a raw IPv4 socket lets through: echo reply and the errors we classify.
const ICMP4_WANTED: [u8; 4] = [0, 3, 11, 12];
/// ICMPv6 types a raw IPv6 socket lets through.
const ICMP6_WANTED: [u8; 5] = [129, 1, 2, 3, 4];

/// `ICMP_FILTER` (SOL_RAW, 1): a 32-bit mask where a set bit blocks that type.
fn set_icmp_filter_v4(fd: RawFd) -> io::Result<()> {
    const ICMP_FILTER: libc::c_int = 1;
    let mut mask: u32 = u32::MAX;
    for icmp_type in ICMP4_WANTED {
        mask &= !(1u32 << icmp_type);
    }
    // SAFETY: mask is a u32 that outlives the call; the length matches the kernel's struct icmp_filter.
    let rc = unsafe {
        libc::setsockopt(
            fd,
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
fn set_icmp6_filter(fd: RawFd) -> io::Result<()> {
    const ICMP6_FILTER: libc::c_int = 1;
    let mut filter = [u32::MAX; 8];
    for icmp_type in ICMP6_WANTED {
        filter[usize::from(icmp_type >> 5)] &= !(1u32 << (icmp_type & 31));
    }
    // SAFETY: filter is 32 bytes that outlive the call, matching struct icmp6_filter.
    let rc = unsafe {
        libc::setsockopt(
            fd,
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

/// Reads and clears a socket's pending asynchronous error (`SO_ERROR`).
pub fn take_socket_error(socket: &Socket) -> Option<io::Error> {
    socket.take_error().ok().flatten()
}

/// Sends one datagram without blocking.
pub fn send_to(socket: &Socket, bytes: &[u8], destination: SocketAddr) -> io::Result<usize> {
    socket.send_to(bytes, &SockAddr::from(destination))
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

/// What the kernel told us about one received datagram.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveMeta {
    pub len: usize,
    pub source: Option<IpAddr>,
    /// Kernel receive timestamp (CLOCK_REALTIME ns) when `SO_TIMESTAMPNS` delivered one.
    pub kernel_rx_ns: Option<i128>,
    /// TTL (IPv4) or hop limit (IPv6) from the control message.
    pub hop_limit: Option<u8>,
    pub truncated: bool,
}

const CONTROL_LEN: usize = 128;

/// Buffers for receiving up to `capacity` datagrams per `recvmmsg` call.
pub struct ReceiveBatch {
    buffers: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_LEN / 8]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside iovecs/headers only ever point into this struct's own buffers and
// are rebuilt before every use; nothing is shared between threads.
unsafe impl Send for ReceiveBatch {}

impl ReceiveBatch {
    pub fn new(capacity: usize, buffer_len: usize) -> ReceiveBatch {
        ReceiveBatch {
            buffers: (0..capacity).map(|_| vec![0u8; buffer_len]).collect(),
            // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is valid.
            names: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            controls: vec![[0u64; CONTROL_LEN / 8]; capacity],
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
        }
    }

    pub fn buffer_len(&self) -> usize {
        self.buffers.first().map_or(0, Vec::len)
    }

    /// Receives up to the batch capacity without blocking; returns how many datagrams arrived.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let capacity = self.buffers.len();
        self.iovecs.clear();
        self.headers.clear();
        for buffer in &mut self.buffers {
            self.iovecs.push(libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            });
        }
        for index in 0..capacity {
            // SAFETY: all-zero is a valid msghdr; every pointer set below points into self.
            let mut header: libc::mmsghdr = unsafe { zeroed() };
            header.msg_hdr.msg_name =
                (&mut self.names[index] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovecs[index];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = self.controls[index].as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = CONTROL_LEN as _;
            self.headers.push(header);
        }
        // SAFETY: headers, iovecs, names and controls are valid for `capacity` entries and stay put
        // for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                capacity as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// The bytes and metadata of datagram `index` from the last `receive`.
    pub fn datagram(&self, index: usize) -> (&[u8], ReceiveMeta) {
        let header = &self.headers[index];
        let len = (header.msg_len as usize).min(self.buffers[index].len());
        let mut meta = ReceiveMeta {
            len,
            source: sockaddr_to_ip(&self.names[index]),
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            ..ReceiveMeta::default()
        };
        parse_control(&header.msg_hdr, &mut meta, None);
        (&self.buffers[index][..len], meta)
    }
}

/// An ICMP error delivered on a ping socket's error queue (`IP_RECVERR`/`IPV6_RECVERR`).
#[derive(Debug, Clone)]
pub struct QueuedError {
    /// Our original echo request as the kernel returns it (ICMP header onwards).
    pub original: Vec<u8>,
    /// Destination of the original request.
    pub destination: Option<IpAddr>,
    /// `SO_EE_ORIGIN_*` of the report.
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub errno: i32,
    /// The router or host that sent the ICMP error.
    pub offender: Option<IpAddr>,
    pub kernel_rx_ns: Option<i128>,
}

/// Reads one entry from the socket's error queue; `Ok(None)` when it is empty.
pub fn receive_queued_error(fd: RawFd, buffer: &mut [u8]) -> io::Result<Option<QueuedError>> {
    let mut name: MaybeUninit<libc::sockaddr_storage> = MaybeUninit::zeroed();
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the pointers set below stay valid during recvmsg.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = name.as_mut_ptr().cast();
    header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = size_of::<[u64; 64]>() as _;
    // SAFETY: header describes valid, writable memory.
    let received =
        unsafe { libc::recvmsg(fd, &mut header, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if received < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(error)
        };
    }
    let len = (received as usize).min(buffer.len());
    // SAFETY: recvmsg initialised the name it reported (zeroed beforehand in any case).
    let name = unsafe { name.assume_init() };
    let mut meta = ReceiveMeta::default();
    let mut queued = QueuedError {
        original: buffer[..len].to_vec(),
        destination: sockaddr_to_ip(&name),
        origin: 0,
        icmp_type: 0,
        icmp_code: 0,
        errno: 0,
        offender: None,
        kernel_rx_ns: None,
    };
    parse_control(&header, &mut meta, Some(&mut queued));
    queued.kernel_rx_ns = meta.kernel_rx_ns;
    Ok(Some(queued))
}

/// Walks the control messages of `header`, filling `meta` and (for error-queue reads) `queued`.
fn parse_control(
    header: &libc::msghdr,
    meta: &mut ReceiveMeta,
    mut queued: Option<&mut QueuedError>,
) {
    // SAFETY: header.msg_control/msg_controllen were filled in by the kernel; the CMSG_* macros
    // stay inside that buffer, and every read is bounds-checked against cmsg_len.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let level = (*cmsg).cmsg_level;
            let kind = (*cmsg).cmsg_type;
            let data = libc::CMSG_DATA(cmsg);
            let data_len = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            match (level, kind) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                    if data_len >= size_of::<libc::timespec>() =>
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    if ts.tv_sec != 0 || ts.tv_nsec != 0 {
                        meta.kernel_rx_ns =
                            Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
                    }
                }
                (libc::IPPROTO_IP, libc::IP_TTL) if data_len >= size_of::<libc::c_int>() => {
                    let ttl: libc::c_int = std::ptr::read_unaligned(data.cast());
                    meta.hop_limit = u8::try_from(ttl).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
                    if data_len >= size_of::<libc::c_int>() =>
                {
                    let hops: libc::c_int = std::ptr::read_unaligned(data.cast());
                    meta.hop_limit = u8::try_from(hops).ok();
                }
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
                    if data_len >= size_of::<libc::sock_extended_err>() =>
                {
                    if let Some(queued) = queued.as_deref_mut() {
                        let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                        queued.origin = ee.ee_origin;
                        queued.icmp_type = ee.ee_type;
                        queued.icmp_code = ee.ee_code;
                        queued.errno = ee.ee_errno as i32;
                        let offender_len = data_len - size_of::<libc::sock_extended_err>();
                        if offender_len >= size_of::<libc::sockaddr_in>() {
                            let mut storage: libc::sockaddr_storage = zeroed();
                            std::ptr::copy_nonoverlapping(
                                data.add(size_of::<libc::sock_extended_err>()),
                                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                                offender_len.min(size_of::<libc::sockaddr_storage>()),
                            );
                            queued.offender = sockaddr_to_ip(&storage);
                        }
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
}

/// Converts a kernel-filled socket address into an IP address (port and scope dropped).
fn sockaddr_to_ip(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, which fits inside it.
            let addr: libc::sockaddr_in = unsafe {
                std::ptr::read_unaligned((storage as *const libc::sockaddr_storage).cast())
            };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                addr.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says this storage holds a sockaddr_in6, which fits inside it.
            let addr: libc::sockaddr_in6 = unsafe {
                std::ptr::read_unaligned((storage as *const libc::sockaddr_storage).cast())
            };
            Some(IpAddr::V6(Ipv6Addr::from(addr.sin6_addr.s6_addr)))
        }
        _ => None,
    }
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
