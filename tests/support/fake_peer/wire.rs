//! Wire format of the fake peer: parses the echo requests it reads from its TUN device and builds
//! the IPv4/IPv6 packets it writes back (honest or hostile), computing every checksum itself: the
//! IPv4 header checksum, the ICMPv4 checksum and the ICMPv6 checksum over the pseudo-header.
//!
//! Written independently of meshprobe's `icmp::packet`, so a shared misunderstanding of the wire
//! format cannot hide a bug. Bytes from the network are never trusted: anything malformed gives
//! `None` and is skipped by the caller. No I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ErrorKind, REPLY_TTL};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ICMP_HEADER: usize = 8;
const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// RFC 1812: an ICMPv4 error quotes as much as fits in 576 bytes.
const ICMPV4_ERROR_MAX: usize = 576;
/// RFC 4443: an ICMPv6 error must fit in the minimum MTU.
const ICMPV6_ERROR_MAX: usize = 1280;

/// An echo request read from the TUN device.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prober's address.
    pub source: IpAddr,
    /// The address the fake peer answers for.
    pub destination: IpAddr,
    pub id: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
    /// The whole IP datagram, for quoting in ICMP errors.
    pub datagram: Vec<u8>,
}

/// Why a packet read from the device is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not an echo request (router solicitations, MLD reports, ...): ignored silently.
    NotEcho,
    /// Claims to be an echo request but its lengths or checksums are wrong.
    Malformed,
}

/// ICMP type and code of an error kind in ICMPv4 or ICMPv6.
fn error_type_code(kind: ErrorKind, v6: bool) -> (u8, u8) {
    match (kind, v6) {
        (ErrorKind::Unreachable { code }, false) => (3, code),
        (ErrorKind::Unreachable { code }, true) => (1, code),
        (ErrorKind::TimeExceeded, false) => (11, 0),
        (ErrorKind::TimeExceeded, true) => (3, 0),
    }
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => u32::from(*high) << 8 | u32::from(*low),
            [high] => u32::from(*high) << 8,
            _ => 0,
        })
        .fold(0u32, |sum, word| {
            let sum = sum + word;
            (sum & 0xffff) + (sum >> 16)
        });
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMPv6 checksum: RFC 4443 section 2.3, over the RFC 8200 pseudo-header and the message.
pub fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut covered = Vec::with_capacity(40 + message.len());
    covered.extend_from_slice(&source.octets());
    covered.extend_from_slice(&destination.octets());
    covered.extend_from_slice(&(message.len() as u32).to_be_bytes());
    covered.extend_from_slice(&[0, 0, 0, 58]);
    covered.extend_from_slice(message);
    checksum(&covered)
}

/// Parses one packet read from the TUN device (no packet-information header).
pub fn parse_request(packet: &[u8]) -> Result<Request, Skip> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        _ => Err(Skip::NotEcho),
    }
}

fn parse_v4(packet: &[u8]) -> Result<Request, Skip> {
    let header_len = usize::from(packet.first().ok_or(Skip::Malformed)? & 0x0f) * 4;
    if header_len < IPV4_HEADER || packet.len() < header_len {
        return Err(Skip::Malformed);
    }
    if packet[9] != 1 {
        return Err(Skip::NotEcho);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let fragmented = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    if total > packet.len() || total < header_len + ICMP_HEADER || fragmented {
        return Err(Skip::Malformed);
    }
    let icmp = &packet[header_len..total];
    if icmp[0] != ICMPV4_ECHO_REQUEST || icmp[1] != 0 {
        return Err(Skip::NotEcho);
    }
    if checksum(&packet[..header_len]) != 0 || checksum(icmp) != 0 {
        return Err(Skip::Malformed);
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok(Request {
        source: source.into(),
        destination: destination.into(),
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: icmp[ICMP_HEADER..].to_vec(),
        datagram: packet[..total].to_vec(),
    })
}

fn v6_addresses(packet: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let source: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
    let destination: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    Some((Ipv6Addr::from(source), Ipv6Addr::from(destination)))
}

fn parse_v6(packet: &[u8]) -> Result<Request, Skip> {
    let (source, destination) = v6_addresses(packet).ok_or(Skip::Malformed)?;
    // Echo requests from meshprobe carry no extension headers.
    if packet[6] != 58 {
        return Err(Skip::NotEcho);
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let end = IPV6_HEADER + payload_len;
    if end > packet.len() || payload_len < ICMP_HEADER {
        return Err(Skip::Malformed);
    }
    let icmp = &packet[IPV6_HEADER..end];
    if icmp[0] != ICMPV6_ECHO_REQUEST || icmp[1] != 0 {
        return Err(Skip::NotEcho);
    }
    if icmpv6_checksum(source, destination, icmp) != 0 {
        return Err(Skip::Malformed);
    }
    Ok(Request {
        source: source.into(),
        destination: destination.into(),
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: icmp[ICMP_HEADER..].to_vec(),
        datagram: packet[..end].to_vec(),
    })
}

/// An ICMP message with a zero checksum: type, code, 4 bytes of rest-of-header, body.
fn icmp_message(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ICMP_HEADER + body.len());
    message.extend_from_slice(&[icmp_type, code, 0, 0]);
    message.extend_from_slice(&rest);
    message.extend_from_slice(body);
    message
}

fn echo_rest(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

/// Fills in the ICMP checksum (spoiling it when asked) and prepends an IP header with its own
/// checksum (IPv4). `None` when the two addresses are of different families.
pub fn datagram(
    source: IpAddr,
    destination: IpAddr,
    mut message: Vec<u8>,
    corrupt_checksum: bool,
    ip_id: u16,
) -> Option<Vec<u8>> {
    let spoil = if corrupt_checksum { 0x5a5a } else { 0 };
    match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            let sum = checksum(&message) ^ spoil;
            message.get_mut(2..4)?.copy_from_slice(&sum.to_be_bytes());
            let total = u16::try_from(IPV4_HEADER + message.len()).ok()?;
            let mut packet = Vec::with_capacity(usize::from(total));
            packet.extend_from_slice(&[0x45, 0]);
            packet.extend_from_slice(&total.to_be_bytes());
            packet.extend_from_slice(&ip_id.to_be_bytes());
            packet.extend_from_slice(&[0, 0, REPLY_TTL, 1, 0, 0]);
            packet.extend_from_slice(&source.octets());
            packet.extend_from_slice(&destination.octets());
            let header_sum = checksum(&packet);
            packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
            packet.extend_from_slice(&message);
            Some(packet)
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            let sum = icmpv6_checksum(source, destination, &message) ^ spoil;
            message.get_mut(2..4)?.copy_from_slice(&sum.to_be_bytes());
            let payload_len = u16::try_from(message.len()).ok()?;
            let mut packet = Vec::with_capacity(IPV6_HEADER + message.len());
            packet.extend_from_slice(&[0x60, 0, 0, 0]);
            packet.extend_from_slice(&payload_len.to_be_bytes());
            packet.extend_from_slice(&[58, REPLY_TTL]);
            packet.extend_from_slice(&source.octets());
            packet.extend_from_slice(&destination.octets());
            packet.extend_from_slice(&message);
            Some(packet)
        }
        _ => None,
    }
}

/// An echo reply from `source` to the prober with the given fields.
pub fn echo_reply(
    request: &Request,
    source: IpAddr,
    id: u16,
    seq: u16,
    payload: &[u8],
    corrupt_checksum: bool,
    ip_id: u16,
) -> Option<Vec<u8>> {
    let reply_type = match request.source {
        IpAddr::V4(_) => ICMPV4_ECHO_REPLY,
        IpAddr::V6(_) => ICMPV6_ECHO_REPLY,
    };
    let message = icmp_message(reply_type, 0, echo_rest(id, seq), payload);
    datagram(source, request.source, message, corrupt_checksum, ip_id)
}

/// A copy of `request` whose first payload byte (the start of meshprobe's nonce) is changed, with
/// valid checksums: what a quote of some other probe to the same target looks like.
pub fn foreign_request(request: &Request, ip_id: u16) -> Option<Vec<u8>> {
    let mut payload = request.payload.clone();
    if let Some(first) = payload.first_mut() {
        *first ^= 0xff;
    }
    let request_type = match request.source {
        IpAddr::V4(_) => ICMPV4_ECHO_REQUEST,
        IpAddr::V6(_) => ICMPV6_ECHO_REQUEST,
    };
    let message = icmp_message(
        request_type,
        0,
        echo_rest(request.id, request.seq),
        &payload,
    );
    datagram(request.source, request.destination, message, false, ip_id)
}

/// An ICMP error from `from` to the prober quoting `quoted` (normally the request's datagram),
/// truncated as a router would.
pub fn icmp_error(
    request: &Request,
    from: IpAddr,
    kind: ErrorKind,
    quoted: &[u8],
    ip_id: u16,
) -> Option<Vec<u8>> {
    let (v6, limit) = match request.source {
        IpAddr::V4(_) => (false, ICMPV4_ERROR_MAX - IPV4_HEADER - ICMP_HEADER),
        IpAddr::V6(_) => (true, ICMPV6_ERROR_MAX - IPV6_HEADER - ICMP_HEADER),
    };
    let (icmp_type, code) = error_type_code(kind, v6);
    let quote = &quoted[..quoted.len().min(limit)];
    let message = icmp_message(icmp_type, code, [0; 4], quote);
    datagram(from, request.source, message, false, ip_id)
}
