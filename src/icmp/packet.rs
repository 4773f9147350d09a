//! ICMP echo encoding and decoding for IPv4 and IPv6, including the packets quoted inside ICMP errors.
//!
//! This module owns the wire format only: echo request building, the blackbox payload rules with the
//! per-probe nonce, the RFC 1071 checksum, and a parser that turns received bytes into a typed
//! [`Received`] view. It does no I/O and keeps no state, so it can be fuzzed and property-tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The payload blackbox_exporter sends when `payload_size` is 0.
pub const BLACKBOX_PAYLOAD: &[u8; 28] = b"Prometheus Blackbox Exporter";
/// Size of the nonce at the start of every payload (truncated if the payload is shorter).
pub const NONCE_LEN: usize = 8;
/// Largest ICMP payload that fits in one IPv4 datagram (65535 − 20 IP − 8 ICMP).
pub const MAX_PAYLOAD_SIZE: usize = 65507;
/// ICMP echo header length.
pub const ECHO_HEADER_LEN: usize = 8;

/// Address family of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The blackbox `probe_ip_protocol` value.
    pub fn protocol_number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    fn echo_request_type(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }

    fn echo_reply_type(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

/// Why a probe's packet was answered with an ICMP error instead of an echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    DestinationUnreachable,
    /// ICMPv6 "packet too big", or ICMPv4 "fragmentation needed and DF set" (type 3 code 4).
    PacketTooBig,
    TimeExceeded,
    ParameterProblem,
}

impl IcmpErrorKind {
    /// Stable label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            IcmpErrorKind::DestinationUnreachable => "destination_unreachable",
            IcmpErrorKind::PacketTooBig => "packet_too_big",
            IcmpErrorKind::TimeExceeded => "time_exceeded",
            IcmpErrorKind::ParameterProblem => "parameter_problem",
        }
    }

    /// Maps an ICMP type/code to an error kind, or `None` for non-error types.
    pub fn classify(family: Family, icmp_type: u8, code: u8) -> Option<IcmpErrorKind> {
        match (family, icmp_type) {
            (Family::V4, 3) if code == 4 => Some(IcmpErrorKind::PacketTooBig),
            (Family::V4, 3) => Some(IcmpErrorKind::DestinationUnreachable),
            (Family::V4, 11) => Some(IcmpErrorKind::TimeExceeded),
            (Family::V4, 12) => Some(IcmpErrorKind::ParameterProblem),
            (Family::V6, 1) => Some(IcmpErrorKind::DestinationUnreachable),
            (Family::V6, 2) => Some(IcmpErrorKind::PacketTooBig),
            (Family::V6, 3) => Some(IcmpErrorKind::TimeExceeded),
            (Family::V6, 4) => Some(IcmpErrorKind::ParameterProblem),
            _ => None,
        }
    }
}

/// The echo request an ICMP error quotes back to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedEcho<'a> {
    /// Destination of the original packet (the probe target).
    pub destination: IpAddr,
    pub id: u16,
    pub seq: u16,
    /// Whatever part of our payload the router quoted (may be empty or truncated).
    pub payload_prefix: &'a [u8],
}

/// A received ICMP message, as far as the prober cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    EchoReply {
        id: u16,
        seq: u16,
        payload: &'a [u8],
    },
    Error {
        kind: IcmpErrorKind,
        icmp_type: u8,
        code: u8,
        quoted: QuotedEcho<'a>,
    },
    /// Anything else: echo requests, errors quoting non-echo packets, unknown types.
    Other { icmp_type: u8 },
}

/// Why received bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet truncated")]
    Truncated,
    #[error("not an IPv4 packet carrying ICMP")]
    NotIcmpV4,
    #[error("ICMPv4 checksum mismatch")]
    BadChecksum,
}

/// RFC 1071 Internet checksum over `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Length of the payload blackbox sends for a module's `payload_size` (0 means the 28-byte default).
pub fn payload_len(payload_size: usize) -> usize {
    if payload_size == 0 {
        BLACKBOX_PAYLOAD.len()
    } else {
        payload_size
    }
}

/// Byte `index` of the payload for `payload_size` and `nonce`, without building it.
///
/// Layout: the 8-byte big-endian nonce (truncated if the payload is shorter), then blackbox's
/// "Prometheus Blackbox Exporter" text, then zero padding. The length follows blackbox's rule.
#[inline]
fn payload_byte(index: usize, nonce: u64) -> u8 {
    if index < NONCE_LEN {
        nonce.to_be_bytes()[index]
    } else {
        BLACKBOX_PAYLOAD
            .get(index - NONCE_LEN)
            .copied()
            .unwrap_or(0)
    }
}

/// Appends the payload for `payload_size` and `nonce` to `out`.
pub fn write_payload(out: &mut Vec<u8>, payload_size: usize, nonce: u64) {
    let len = payload_len(payload_size);
    out.extend((0..len).map(|i| payload_byte(i, nonce)));
}

/// True when `payload` is exactly the payload sent for `payload_size` and `nonce`.
pub fn payload_matches(payload: &[u8], payload_size: usize, nonce: u64) -> bool {
    payload.len() == payload_len(payload_size) && payload_prefix_matches(payload, nonce)
}

/// True when `prefix` agrees with the start of the payload sent with `nonce` (used for quotes).
pub fn payload_prefix_matches(prefix: &[u8], nonce: u64) -> bool {
    prefix
        .iter()
        .enumerate()
        .all(|(i, byte)| *byte == payload_byte(i, nonce))
}

/// Writes a complete echo request (header and payload) into `out`, replacing its contents.
///
/// IPv4 gets its checksum here. IPv6 leaves it 0: the kernel computes it with the pseudo-header on
/// both raw and ping sockets. On ping sockets the kernel also replaces `id` with the socket's ident.
pub fn encode_echo_request(
    out: &mut Vec<u8>,
    family: Family,
    id: u16,
    seq: u16,
    payload_size: usize,
    nonce: u64,
) {
    out.clear();
    out.extend_from_slice(&[family.echo_request_type(), 0, 0, 0]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    write_payload(out, payload_size, nonce);
    if family == Family::V4 {
        let checksum = internet_checksum(out);
        out[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
}

/// An IPv4 header as received on a raw socket: the ICMP message behind it and two fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4View<'a> {
    pub source: Ipv4Addr,
    pub ttl: u8,
    pub payload: &'a [u8],
}

/// Splits a raw IPv4 datagram into header fields and the ICMP message it carries.
pub fn parse_ipv4(datagram: &[u8]) -> Result<Ipv4View<'_>, ParseError> {
    let first = *datagram.first().ok_or(ParseError::Truncated)?;
    if first >> 4 != 4 {
        return Err(ParseError::NotIcmpV4);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || datagram.len() < header_len {
        return Err(ParseError::Truncated);
    }
    if datagram[9] != 1 {
        return Err(ParseError::NotIcmpV4);
    }
    let total_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let end = if total_len >= header_len && total_len <= datagram.len() {
        total_len
    } else {
        datagram.len()
    };
    Ok(Ipv4View {
        source: Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]),
        ttl: datagram[8],
        payload: &datagram[header_len..end],
    })
}

/// Decodes one ICMP message (no IP header in front).
///
/// `verify_checksum` should be true for IPv4 raw sockets, where the kernel does not check it
/// before delivery; ICMPv6 and ping sockets are verified by the kernel.
pub fn parse_icmp(
    family: Family,
    message: &[u8],
    verify_checksum: bool,
) -> Result<Received<'_>, ParseError> {
    if message.len() < ECHO_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if verify_checksum && internet_checksum(message) != 0 {
        return Err(ParseError::BadChecksum);
    }
    let icmp_type = message[0];
    let code = message[1];
    if icmp_type == family.echo_reply_type() {
        if code != 0 {
            return Ok(Received::Other { icmp_type });
        }
        return Ok(Received::EchoReply {
            id: u16::from_be_bytes([message[4], message[5]]),
            seq: u16::from_be_bytes([message[6], message[7]]),
            payload: &message[ECHO_HEADER_LEN..],
        });
    }
    let Some(kind) = IcmpErrorKind::classify(family, icmp_type, code) else {
        return Ok(Received::Other { icmp_type });
    };
    match parse_quoted(family, &message[ECHO_HEADER_LEN..])? {
        Some(quoted) => Ok(Received::Error {
            kind,
            icmp_type,
            code,
            quoted,
        }),
        None => Ok(Received::Other { icmp_type }),
    }
}

/// Parses the original packet quoted in an ICMP error; `None` if it was not one of our echo requests.
fn parse_quoted(family: Family, quote: &[u8]) -> Result<Option<QuotedEcho<'_>>, ParseError> {
    let (destination, inner) = match family {
        Family::V4 => {
            let first = *quote.first().ok_or(ParseError::Truncated)?;
            let header_len = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || header_len < 20 || quote.len() < header_len {
                return Err(ParseError::Truncated);
            }
            if quote[9] != 1 {
                return Ok(None);
            }
            let dst = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
            (IpAddr::V4(dst), &quote[header_len..])
        }
        Family::V6 => {
            if quote.len() < 40 {
                return Err(ParseError::Truncated);
            }
            if quote[0] >> 4 != 6 {
                return Ok(None);
            }
            if quote[6] != 58 {
                return Ok(None);
            }
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&quote[24..40]);
            (IpAddr::V6(Ipv6Addr::from(dst)), &quote[40..])
        }
    };
    if inner.len() < ECHO_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if inner[0] != family.echo_request_type() {
        return Ok(None);
    }
    Ok(Some(QuotedEcho {
        destination,
        id: u16::from_be_bytes([inner[4], inner[5]]),
        seq: u16::from_be_bytes([inner[6], inner[7]]),
        payload_prefix: &inner[ECHO_HEADER_LEN..],
    }))
}

/// Parses the copy of our own echo request that a ping socket's error queue returns.
pub fn parse_own_request(family: Family, message: &[u8]) -> Option<(u16, u16, &[u8])> {
    if message.len() < ECHO_HEADER_LEN || message[0] != family.echo_request_type() {
        return None;
    }
    Some((
        u16::from_be_bytes([message[4], message[5]]),
        u16::from_be_bytes([message[6], message[7]]),
        &message[ECHO_HEADER_LEN..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reply_from_request(request: &[u8], family: Family) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = family.echo_reply_type();
        reply[2] = 0;
        reply[3] = 0;
        if family == Family::V4 {
            let checksum = internet_checksum(&reply);
            reply[2..4].copy_from_slice(&checksum.to_be_bytes());
        }
        reply
    }

    #[test]
    fn default_payload_is_blackbox_length_with_nonce_then_text() {
        let mut out = Vec::new();
        write_payload(&mut out, 0, 0x0102_0304_0506_0708);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&out[8..], b"Prometheus Blackbox ");
    }

    #[test]
    fn payload_size_truncates_and_pads_like_blackbox() {
        let mut short = Vec::new();
        write_payload(&mut short, 4, u64::MAX);
        assert_eq!(short, vec![0xff; 4]);
        let mut long = Vec::new();
        write_payload(&mut long, 64, 0);
        assert_eq!(long.len(), 64);
        assert_eq!(&long[8..36], BLACKBOX_PAYLOAD);
        assert!(long[36..].iter().all(|b| *b == 0));
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum 0xddf2, checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), 0x220d);
    }

    #[test]
    fn ipv4_request_checksum_verifies_to_zero() {
        let mut packet = Vec::new();
        encode_echo_request(&mut packet, Family::V4, 0xbeef, 7, 0, 42);
        assert_eq!(packet.len(), 36);
        assert_eq!(internet_checksum(&packet), 0);
    }

    #[test]
    fn corrupt_ipv4_reply_is_rejected() {
        let mut packet = Vec::new();
        encode_echo_request(&mut packet, Family::V4, 1, 2, 0, 3);
        let mut reply = reply_from_request(&packet, Family::V4);
        reply[20] ^= 0x40;
        assert_eq!(
            parse_icmp(Family::V4, &reply, true),
            Err(ParseError::BadChecksum)
        );
    }

    #[test]
    fn time_exceeded_quote_is_decoded_v4() {
        let mut request = Vec::new();
        encode_echo_request(&mut request, Family::V4, 0x1234, 0x5678, 0, 99);
        let mut ip = vec![
            0x45, 0, 0, 56, 0, 0, 0x40, 0, 1, 1, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        ip.extend_from_slice(&request[..16]);
        let mut error = vec![11, 0, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&ip);
        let checksum = internet_checksum(&error);
        error[2..4].copy_from_slice(&checksum.to_be_bytes());
        let parsed = parse_icmp(Family::V4, &error, true).expect("valid error");
        match parsed {
            Received::Error { kind, quoted, .. } => {
                assert_eq!(kind, IcmpErrorKind::TimeExceeded);
                assert_eq!(quoted.destination, "198.18.0.2".parse::<IpAddr>().unwrap());
                assert_eq!((quoted.id, quoted.seq), (0x1234, 0x5678));
                assert!(payload_prefix_matches(quoted.payload_prefix, 99));
                assert!(!payload_prefix_matches(quoted.payload_prefix, 98));
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn packet_too_big_quote_is_decoded_v6() {
        let mut request = Vec::new();
        encode_echo_request(&mut request, Family::V6, 9, 10, 100, 5);
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 108, 58, 64];
        ip6.extend_from_slice(&"2001:2::1".parse::<Ipv6Addr>().unwrap().octets());
        ip6.extend_from_slice(&"2001:2::99".parse::<Ipv6Addr>().unwrap().octets());
        ip6.extend_from_slice(&request);
        let mut error = vec![2, 0, 0, 0, 0, 0, 5, 0];
        error.extend_from_slice(&ip6);
        match parse_icmp(Family::V6, &error, false).expect("valid error") {
            Received::Error { kind, quoted, .. } => {
                assert_eq!(kind, IcmpErrorKind::PacketTooBig);
                assert_eq!(quoted.destination.to_string(), "2001:2::99");
                assert_eq!((quoted.id, quoted.seq), (9, 10));
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn ipv4_header_is_stripped() {
        let mut request = Vec::new();
        encode_echo_request(&mut request, Family::V4, 1, 1, 0, 1);
        let reply = reply_from_request(&request, Family::V4);
        let mut datagram = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 57, 1, 0, 0, 198, 18, 0, 9, 198, 18, 0, 1,
        ];
        let total = (datagram.len() + reply.len()) as u16;
        datagram[2..4].copy_from_slice(&total.to_be_bytes());
        datagram.extend_from_slice(&reply);
        let view = parse_ipv4(&datagram).expect("valid datagram");
        assert_eq!(view.source, Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(view.ttl, 57);
        assert_eq!(view.payload, &reply[..]);
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_ipv4(&bytes);
            let _ = parse_icmp(Family::V4, &bytes, true);
            let _ = parse_icmp(Family::V6, &bytes, false);
        }
    }

    proptest! {
        #[test]
        fn echo_round_trip(
            v6 in any::<bool>(), id in any::<u16>(), seq in any::<u16>(),
            size in 0usize..2000, nonce in any::<u64>(),
        ) {
            let family = if v6 { Family::V6 } else { Family::V4 };
            let mut request = Vec::new();
            encode_echo_request(&mut request, family, id, seq, size, nonce);
            prop_assert_eq!(request.len(), ECHO_HEADER_LEN + payload_len(size));
            let reply = reply_from_request(&request, family);
            let parsed = parse_icmp(family, &reply, family == Family::V4).unwrap();
            match parsed {
                Received::EchoReply { id: rid, seq: rseq, payload } => {
                    prop_assert_eq!((rid, rseq), (id, seq));
                    prop_assert!(payload_matches(payload, size, nonce));
                    prop_assert!(!payload_matches(payload, size, nonce ^ (1 << 63)));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn parser_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_ipv4(&bytes);
            let _ = parse_icmp(Family::V4, &bytes, true);
            let _ = parse_icmp(Family::V6, &bytes, false);
            let _ = parse_own_request(Family::V6, &bytes);
        }
    }
}
