//! Correctness under attack: the real binary probes addresses answered by the fake peer
//! (`support::fake_peer`), which forges, duplicates, corrupts, delays, reorders and mis-addresses
//! replies. Owns the proof that no hostile packet is ever counted as a success or an RTT, that each
//! one is counted in `meshprobe_replies_rejected_total` under the right reason, and that ICMP
//! errors quoting a probe end it at once, on raw and ping sockets, IPv4 and IPv6. Every one of
//! the eight rejection reasons is provoked and checked exactly (the other seven must not move).
//!
//! On ping sockets the kernel itself drops replies with another echo id (it delivers by id) and
//! replies with a bad checksum (ICMPv4 and ICMPv6 are verified before delivery); meshprobe never
//! sees them, so there the tests check that the probe is unaffected and nothing is counted. Raw
//! IPv6 sockets never receive an ICMPv6 packet with a bad checksum either (the kernel discards it
//! before queueing it), so only raw IPv4 sockets count `bad_checksum`. The kernel also checks the
//! quote of an ICMP error before handing it to a ping socket, so `malformed` errors only reach
//! raw sockets.

mod support;

use std::time::Duration;

use support::fake_peer::{self, Action, Behaviour, ErrorKind, FakePeer, Reply};
use support::hostile::*;
use support::*;

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn fake_peer_answers_with_delay_jitter_and_loss() {
    require_namespaces!();
    let rig = Rig::new(Sockets::Raw);
    for (family, target, _) in families(10) {
        let delay = Duration::from_millis(30);
        let jitter = Duration::from_millis(40);
        rig.peer.set(
            target,
            Behaviour::delayed(delay).with_jitter(jitter).dropping(0.5),
        );
        let mut successes = 0;
        for _ in 0..24 {
            let metrics = rig.probe(target, "fast");
            if metrics.value("probe_success") == 1.0 {
                successes += 1;
                let rtt = rtt(&metrics);
                assert!(
                    rtt >= delay.as_secs_f64() && rtt < (delay + jitter).as_secs_f64() + 0.2,
                    "{target}: rtt {rtt} outside delay + jitter"
                );
            } else {
                assert_failure(&metrics, "timeout", &target.to_string());
            }
        }
        let counts = rig.peer.counts(target);
        assert_eq!(counts.requests, 24, "{target}: one request per probe");
        assert_eq!(successes, counts.requests - counts.dropped, "{target}");
        assert_eq!(counts.sent, successes, "{target}");
        assert!(
            (3..=21).contains(&counts.dropped),
            "{target}: seeded 50% loss dropped {}",
            counts.dropped
        );
        rig.check_path(family);
    }
    // An address without a behaviour is silent.
    let silent = fake_peer::v4(11);
    assert_failure(&rig.probe(silent, "fast"), "timeout", "silent");
    assert_eq!(rig.peer.counts(silent).requests, 1);
    assert_eq!(rig.peer.counts(silent).sent, 0);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn fake_peer_removes_its_device_and_routes_on_drop() {
    require_namespaces!();
    let namespace = Namespace::new("cleanup");
    let peer = FakePeer::start(&namespace);
    let links = namespace.exec("ip", &["-o", "link", "show"]);
    assert!(links.contains(fake_peer::DEVICE), "{links}");
    let routes =
        namespace.exec("ip", &["route", "show"]) + &namespace.exec("ip", &["-6", "route", "show"]);
    assert!(routes.contains(fake_peer::FAKE_V4_NET), "{routes}");
    assert!(routes.contains(fake_peer::FAKE_V6_NET), "{routes}");
    drop(peer);
    let links = namespace.exec("ip", &["-o", "link", "show"]);
    assert!(!links.contains(fake_peer::DEVICE), "{links}");
    let routes =
        namespace.exec("ip", &["route", "show"]) + &namespace.exec("ip", &["-6", "route", "show"]);
    assert!(!routes.contains(fake_peer::FAKE_V4_NET), "{routes}");
    assert!(!routes.contains(fake_peer::FAKE_V6_NET), "{routes}");
}

/// Packets meshprobe cannot take whole or cannot parse: an echo reply with a 3000-byte payload,
/// far larger than the receive buffer sized for these probes (`truncated`), and an ICMP error
/// whose quote ends inside the quoted IP header (`malformed`; the kernel checks that quote before
/// handing an error to a ping socket, so there it never arrives).
fn truncated_and_malformed(sockets: Sockets) {
    let rig = Rig::new(sockets);
    bogus_then_real(&rig, 90, |_, _| Reply::Oversized(3000), "truncated");
    let reason = match sockets {
        Sockets::Raw => "malformed",
        Sockets::Ping => "dropped_by_kernel",
    };
    let cut_short = |target, _| Reply::ShortError {
        kind: ErrorKind::Unreachable { code: 1 },
        from: fake_peer::router_for(target),
        quote: 12,
    };
    bogus_then_real(&rig, 91, cut_short, reason);
    only_bogus(&rig, 92, cut_short, reason);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn truncated_and_malformed_packets_are_rejected_on_raw_sockets() {
    require_namespaces!();
    truncated_and_malformed(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn truncated_and_malformed_packets_are_rejected_on_ping_sockets() {
    require_namespaces!();
    truncated_and_malformed(Sockets::Ping);
}

fn forged_sources(sockets: Sockets) {
    let rig = Rig::new(sockets);
    // Ping sockets are not connected, so the kernel delivers replies from any source to them.
    bogus_then_real(
        &rig,
        20,
        |_, other| Reply::FromSource(other),
        "unknown_probe",
    );
    only_bogus(
        &rig,
        21,
        |_, other| Reply::FromSource(other),
        "unknown_probe",
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn forged_source_replies_are_rejected_on_raw_sockets() {
    require_namespaces!();
    forged_sources(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn forged_source_replies_are_rejected_on_ping_sockets() {
    require_namespaces!();
    forged_sources(Sockets::Ping);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn wrong_id_and_seq_are_rejected_on_raw_sockets() {
    require_namespaces!();
    let rig = Rig::new(Sockets::Raw);
    bogus_then_real(&rig, 30, |_, _| Reply::WrongId, "unknown_probe");
    bogus_then_real(&rig, 31, |_, _| Reply::WrongSeq, "unknown_probe");
    only_bogus(&rig, 32, |_, _| Reply::WrongSeq, "unknown_probe");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn wrong_id_and_seq_are_rejected_on_ping_sockets() {
    require_namespaces!();
    let rig = Rig::new(Sockets::Ping);
    // The kernel delivers to a ping socket by echo id: a wrong id never reaches meshprobe.
    bogus_then_real(&rig, 30, |_, _| Reply::WrongId, "dropped_by_kernel");
    only_bogus(&rig, 33, |_, _| Reply::WrongId, "dropped_by_kernel");
    // The sequence number is meshprobe's to check.
    bogus_then_real(&rig, 31, |_, _| Reply::WrongSeq, "unknown_probe");
    only_bogus(&rig, 32, |_, _| Reply::WrongSeq, "unknown_probe");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn corrupted_payloads_are_rejected_on_both_socket_kinds() {
    require_namespaces!();
    for sockets in [Sockets::Raw, Sockets::Ping] {
        let rig = Rig::new(sockets);
        bogus_then_real(&rig, 40, |_, _| Reply::CorruptPayload, "payload_mismatch");
        only_bogus(&rig, 41, |_, _| Reply::CorruptPayload, "payload_mismatch");
    }
}

fn bad_checksums(rig: &Rig, host: u8) {
    for (family, target, _) in families(host) {
        let context = format!("{:?} {target} bad checksum", rig.sockets);
        rig.peer.set(
            target,
            Behaviour::bogus_then_echo(Reply::BadChecksum, REAL_AFTER),
        );
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, REAL_AFTER, &context);
        let after = rig.metrics();
        assert_eq!(delta(&before, &after, MATCHED), 1.0, "{context}");
        assert_eq!(rig.peer.counts(target).sent, 2, "{context}");
        if rig.sockets == Sockets::Raw && family == "ip4" {
            // Raw ICMPv4 sockets get packets before the kernel checks the checksum.
            assert_rejections(&before, &after, &[("bad_checksum", 1.0)], &context);
            assert_eq!(delta(&before, &after, &received(target)), 2.0, "{context}");
        } else {
            // ICMPv6 and ping sockets: the kernel discards it before meshprobe can read it.
            assert_rejections(&before, &after, &[], &context);
            assert_eq!(delta(&before, &after, &received(target)), 1.0, "{context}");
        }
        rig.check_path(family);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_checksums_are_never_accepted_on_raw_sockets() {
    require_namespaces!();
    bad_checksums(&Rig::new(Sockets::Raw), 50);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_checksums_are_never_accepted_on_ping_sockets() {
    require_namespaces!();
    bad_checksums(&Rig::new(Sockets::Ping), 50);
}

/// Bad packets written back to back with the good reply (so they sit in the socket queue together)
/// must not hide it: on raw IPv4 meshprobe reads and rejects both bad ones, then takes the reply.
fn bad_checksum_back_to_back(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(55) {
        let context = format!("{sockets:?} {target} bad checksum then reply at once");
        rig.peer.set(
            target,
            Behaviour::script(vec![
                Action::now(Reply::BadChecksum),
                Action::now(Reply::BadChecksum),
                Action::now(Reply::Echo),
            ]),
        );
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_eq!(
            metrics.value("probe_success"),
            1.0,
            "{context}: the reply queued behind the bad packets was not read: {metrics:#?}"
        );
        assert!(rtt(&metrics) < 0.5, "{context}: rtt {}", rtt(&metrics));
        let after = rig.metrics();
        let counted = if sockets == Sockets::Raw && family == "ip4" {
            2.0
        } else {
            0.0
        };
        assert_rejections(&before, &after, &[("bad_checksum", counted)], &context);
        assert_eq!(delta(&before, &after, MATCHED), 1.0, "{context}");
        rig.check_path(family);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_checksum_does_not_hide_the_next_reply_on_raw_sockets() {
    require_namespaces!();
    bad_checksum_back_to_back(Sockets::Raw);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn bad_checksum_does_not_hide_the_next_reply_on_ping_sockets() {
    require_namespaces!();
    bad_checksum_back_to_back(Sockets::Ping);
}
