//! Receiving on an ICMP socket: a batch of datagrams per `recvmmsg` call with their control
//! messages (kernel timestamp, TTL / hop limit), and one entry at a time from a ping socket's
//! error queue (`MSG_ERRQUEUE`).
//!
//! Part of the socket module, the engine's only `unsafe` code; it knows nothing about probes.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

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
    /// The socket's count of datagrams the kernel dropped before this one was queued
    /// (`SO_RXQ_OVFL`, a wrapping 32-bit counter; absent while it is still 0).
    pub socket_drops: Option<u32>,
}

const CONTROL_LEN: usize = 128;

/// Buffers for receiving up to `capacity` datagrams per `recvmmsg` call, and what the last call
/// received.
pub struct ReceiveBatch {
    buffers: Vec<Vec<u8>>,
    metas: Vec<ReceiveMeta>,
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
            metas: vec![ReceiveMeta::default(); capacity],
            // SAFETY: sockaddr_storage is a plain C struct for which all-zero is valid.
            names: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            controls: vec![[0u64; CONTROL_LEN / 8]; capacity],
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }

    pub fn buffer_len(&self) -> usize {
        self.buffers.first().map_or(0, Vec::len)
    }

    /// Gives every buffer `buffer_len` bytes (growing or shrinking; memory is released).
    pub fn resize(&mut self, buffer_len: usize) {
        for buffer in &mut self.buffers {
            buffer.resize(buffer_len, 0);
            buffer.shrink_to_fit();
        }
    }

    /// Receives up to the batch capacity without blocking; returns how many datagrams arrived.
    pub fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
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
            // SAFETY: all-zero is a valid mmsghdr; every pointer set below points into self.
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
        // SAFETY: fd is a live descriptor; headers, iovecs, names and controls are valid for
        // `capacity` entries and stay put for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                capacity as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for index in 0..received {
            let header = &self.headers[index];
            let mut meta = ReceiveMeta {
                len: (header.msg_len as usize).min(self.buffers[index].len()),
                source: sockaddr_to_ip(&self.names[index]),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                ..ReceiveMeta::default()
            };
            parse_control(&header.msg_hdr, &mut meta, None);
            self.metas[index] = meta;
        }
        Ok(received)
    }

    /// Puts a datagram into slot `index` as if the kernel had delivered it (for transports that
    /// are not sockets, such as the engine's in-memory test transport). Bytes beyond the buffer
    /// are cut off and the datagram is marked truncated, as `MSG_TRUNC` would.
    pub fn fill(&mut self, index: usize, bytes: &[u8], mut meta: ReceiveMeta) {
        let buffer = &mut self.buffers[index];
        let len = bytes.len().min(buffer.len());
        buffer[..len].copy_from_slice(&bytes[..len]);
        meta.len = len;
        meta.truncated |= bytes.len() > len;
        self.metas[index] = meta;
    }

    /// The bytes and metadata of datagram `index` from the last `receive` (or `fill`).
    pub fn datagram(&self, index: usize) -> (&[u8], ReceiveMeta) {
        let meta = self.metas[index];
        (&self.buffers[index][..meta.len], meta)
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
pub fn receive_queued_error(
    fd: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> io::Result<Option<QueuedError>> {
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
    // SAFETY: fd is a live descriptor; header describes valid, writable memory.
    let received = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut header,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
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
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if data_len >= size_of::<u32>() => {
                    meta.socket_drops = Some(std::ptr::read_unaligned(data.cast::<u32>()));
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
pub(super) fn sockaddr_to_ip(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
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
