//! Paris-traceroute flows: echo requests whose identifier and ICMP checksum stay constant while
//! the sequence number (and the per-probe nonce) change, so that a router hashing the first bytes
//! after the IP header (type, code, checksum, identifier) puts every probe of a trace on one
//! ECMP path.
//!
//! Owns the flow choice for a destination ([`EchoFlow::for_destination`]) and the checksum
//! compensation ([`flow_nonce`]): the last two bytes of the 8-byte nonce at the start of the
//! payload are chosen so that the message's one's-complement sum is the flow's. The other six
//! nonce bytes stay random, so replies and quoted errors are still matched by nonce. Pure: no
//! I/O, no state.

use std::net::IpAddr;

use super::packet::{self, Family, NONCE_LEN};

/// The flow identifier a trace keeps constant: the echo identifier (on raw sockets; a ping
/// socket's kernel sets its own, itself constant) and the ICMP checksum. For ICMPv6 the
/// checksum on the wire also covers the IPv6 pseudo-header, which is constant for one
/// (source, destination, length); `checksum` is then the checksum without it, and the one on
/// the wire is as constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EchoFlow {
    pub id: u16,
    pub checksum: u16,
}

impl EchoFlow {
    /// The flow meshprobe uses for `destination`: derived from the address alone (FNV-1a), so
    /// repeated traces of one target, from the CLI or the mesh, follow the same path.
    pub fn for_destination(destination: IpAddr) -> EchoFlow {
        let bytes = match destination {
            IpAddr::V4(address) => address.octets().to_vec(),
            IpAddr::V6(address) => address.octets().to_vec(),
        };
        let mut hash: u32 = 2_166_136_261;
        for byte in bytes {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(16_777_619);
        }
        let checksum = (hash >> 16) as u16;
        EchoFlow {
            id: hash as u16,
            // 0xffff would need a one's-complement sum of +0, which no real message has.
            checksum: if checksum == 0xffff { 0x7fff } else { checksum },
        }
    }
}

/// Whether a payload of `payload_size` (blackbox's rule: 0 means 28 bytes) holds the whole
/// nonce, and so the compensation bytes.
pub fn payload_fits_flow(payload_size: usize) -> bool {
    packet::payload_len(payload_size) >= NONCE_LEN
}

/// One's-complement addition of two 16-bit words.
fn ones_complement_add(a: u16, b: u16) -> u16 {
    let sum = u32::from(a) + u32::from(b);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// The nonce that gives an echo request (`family`, `id`, `seq`, `payload_size`) the ICMP
/// checksum `checksum`: `random`'s upper 48 bits, and 16 low bits (payload bytes 6 and 7, an
/// aligned word of the message) that bring the message's sum to `!checksum`. `checksum` must
/// not be 0xffff, and the payload must hold the nonce ([`payload_fits_flow`]).
pub fn flow_nonce(
    family: Family,
    id: u16,
    seq: u16,
    payload_size: usize,
    random: u64,
    checksum: u16,
) -> u64 {
    let base = random & !0xffff;
    let mut message =
        Vec::with_capacity(packet::ECHO_HEADER_LEN + packet::payload_len(payload_size));
    packet::encode_echo_request(&mut message, family, id, seq, payload_size, base);
    message[2] = 0;
    message[3] = 0;
    // internet_checksum is the complement of the sum, so this adds the sum's negation.
    let negated_rest = packet::internet_checksum(&message);
    base | u64::from(ones_complement_add(!checksum, negated_rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_of(family: Family, id: u16, seq: u16, payload_size: usize, nonce: u64) -> u16 {
        let mut message = Vec::new();
        packet::encode_echo_request(&mut message, family, id, seq, payload_size, nonce);
        message[2] = 0;
        message[3] = 0;
        packet::internet_checksum(&message)
    }

    #[test]
    fn checksum_is_equal_across_sequence_numbers_and_nonces() {
        for family in [Family::V4, Family::V6] {
            for payload_size in [0, 8, 9, 64, 1000] {
                let flow = EchoFlow::for_destination("198.18.1.1".parse().expect("address"));
                for seq in (0..=u16::MAX).step_by(97) {
                    let random = fastrand::u64(..);
                    let nonce =
                        flow_nonce(family, flow.id, seq, payload_size, random, flow.checksum);
                    assert_eq!(nonce >> 16, random >> 16, "upper 48 bits stay random");
                    assert_eq!(
                        checksum_of(family, flow.id, seq, payload_size, nonce),
                        flow.checksum,
                        "{family:?} seq {seq} size {payload_size}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reachable_checksum_works() {
        for checksum in (0..0xffffu16).step_by(251).chain([0, 1, 0xfffe]) {
            for seq in [0, 1, 0x8000, 0xffff] {
                let nonce = flow_nonce(Family::V4, 0x1234, seq, 0, u64::MAX, checksum);
                assert_eq!(checksum_of(Family::V4, 0x1234, seq, 0, nonce), checksum);
            }
        }
    }

    #[test]
    fn the_ipv4_checksum_on_the_wire_is_the_flows() {
        let flow = EchoFlow::for_destination("198.18.3.4".parse().expect("address"));
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..200 {
            let nonce = flow_nonce(
                Family::V4,
                flow.id,
                seq,
                0,
                fastrand::u64(..),
                flow.checksum,
            );
            let mut message = Vec::new();
            packet::encode_echo_request(&mut message, Family::V4, flow.id, seq, 0, nonce);
            seen.insert(u16::from_be_bytes([message[2], message[3]]));
            assert_eq!(packet::internet_checksum(&message), 0, "valid checksum");
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![flow.checksum]);
    }

    #[test]
    fn flows_depend_on_the_destination_only() {
        let a: IpAddr = "198.18.1.1".parse().expect("address");
        let b: IpAddr = "2001:2::1".parse().expect("address");
        assert_eq!(EchoFlow::for_destination(a), EchoFlow::for_destination(a));
        assert_ne!(EchoFlow::for_destination(a), EchoFlow::for_destination(b));
        assert!(payload_fits_flow(0) && payload_fits_flow(8) && !payload_fits_flow(7));
    }
}
