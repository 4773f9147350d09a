//! Batched sending: many echo requests in one `sendmmsg(2)` call, each with its own destination
//! and, when asked, its own TTL / hop limit control message.
//!
//! The mesh sends the probes due in one pacing tick together, so the per-probe system-call cost
//! (entry, socket lock, fd lookup) is paid once per batch. Owns the `mmsghdr` construction; what
//! goes into a batch and what a failure means for each probe is the engine's business.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};

use super::HOP_LIMIT_CONTROL_LEN;

/// The most datagrams one call hands the kernel (`UIO_MAXIOV`, the kernel's own cap).
pub const MAX_BATCH: usize = 1024;

/// One datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct OutDatagram<'a> {
    pub bytes: &'a [u8],
    pub destination: SocketAddr,
    /// TTL / hop limit of this packet; `None` keeps the socket's default.
    pub ttl: Option<u8>,
}

/// Sends the datagrams in order with one `sendmmsg` (at most [`MAX_BATCH`] of them) and returns
/// how many the kernel took. Like `sendmmsg` itself: an error on the first datagram is returned
/// as the error; an error on a later one ends the batch early, and the caller learns it by
/// sending the rest again. Never blocks (`MSG_DONTWAIT`).
pub fn send_many(socket: &Socket, datagrams: &[OutDatagram<'_>]) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_BATCH)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    let addresses: Vec<SockAddr> = datagrams
        .iter()
        .map(|d| SockAddr::from(d.destination))
        .collect();
    let mut iovecs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.bytes.as_ptr().cast_mut().cast(),
            iov_len: d.bytes.len(),
        })
        .collect();
    let mut controls = vec![[0u64; HOP_LIMIT_CONTROL_LEN / 8]; datagrams.len()];
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    let mut headers: Vec<libc::mmsghdr> = (0..datagrams.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (index, datagram) in datagrams.iter().enumerate() {
        let header = &mut headers[index].msg_hdr;
        header.msg_name = addresses[index].as_ptr().cast_mut().cast();
        header.msg_namelen = addresses[index].len();
        header.msg_iov = &mut iovecs[index];
        header.msg_iovlen = 1;
        let Some(hop_limit) = datagram.ttl else {
            continue;
        };
        let (level, name) = match datagram.destination {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_TTL),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT),
        };
        header.msg_control = controls[index].as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a length.
        header.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as _;
        // SAFETY: the header's control buffer (controls[index], HOP_LIMIT_CONTROL_LEN bytes,
        // 8-aligned) holds CMSG_SPACE(sizeof(int)) bytes, so CMSG_FIRSTHDR is non-null and has
        // room for one cmsghdr followed by one int, which is all that is written.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(header);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = name;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(
                libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                libc::c_int::from(hop_limit),
            );
        }
    }
    // SAFETY: `headers` holds `headers.len()` initialised mmsghdrs whose name, iov and control
    // pointers point into `addresses`, `iovecs`, `controls` and the callers' byte slices, all of
    // which outlive the call; the kernel reads them and writes only each msg_len.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}
