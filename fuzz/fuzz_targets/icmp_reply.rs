//! Fuzzes the ICMP receive path's parsers: raw IPv4 datagrams (header + ICMP, including the
//! packets quoted inside ICMP errors), bare ICMPv4/ICMPv6 messages, and a ping socket's
//! error-queue copy of our own request. None may panic; whatever parses must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshprobe::icmp::packet::{self, Family, Received};

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = packet::parse_ipv4(data) {
        assert!(view.payload.len() <= data.len());
        let _ = packet::parse_icmp(Family::V4, view.payload, true);
    }
    for (family, verify) in [(Family::V4, true), (Family::V4, false), (Family::V6, false)] {
        if let Ok(Received::EchoReply { payload, .. }) = packet::parse_icmp(family, data, verify) {
            assert_eq!(payload.len() + packet::ECHO_HEADER_LEN, data.len());
            let _ = packet::payload_matches(payload, 0, 0);
        }
        if let Ok(Received::Error { quoted, .. }) = packet::parse_icmp(family, data, verify) {
            assert_eq!(family, Family::of(&quoted.destination));
            let _ = packet::payload_prefix_matches(quoted.payload_prefix, 1);
        }
        let _ = packet::parse_own_request(family, data);
    }
});
