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

use std::net::IpAddr;
use std::time::Duration;

use support::fake_peer::{self, Action, Behaviour, ErrorKind, FakePeer, Reply};
use support::*;

const MODULES: &str = r#"
modules:
  fast:
    prober: icmp
    timeout: 500ms
  slow:
    prober: icmp
    timeout: 5s
"#;

const REASONS: [&str; 8] = [
    "malformed",
    "truncated",
    "bad_checksum",
    "unknown_probe",
    "duplicate",
    "late",
    "payload_mismatch",
    "unrelated",
];

/// Delay of the real reply after a bogus one; a probe that counted the bogus one would report
/// an RTT below it.
const REAL_AFTER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sockets {
    Raw,
    Ping,
}

/// One namespace with the fake peer and the exporter in it. Fields drop in order: the exporter
/// stops first, then the peer removes its device, then the namespace goes.
struct Rig {
    exporter: Exporter,
    peer: FakePeer,
    _namespace: Namespace,
    sockets: Sockets,
}

impl Rig {
    fn new(sockets: Sockets) -> Rig {
        let namespace = Namespace::new("hostile");
        if sockets == Sockets::Ping {
            namespace.sysctl("net.ipv4.ping_group_range", "0 2147483647");
        }
        let peer = FakePeer::start(&namespace);
        let config = write_config("hostile.yml", MODULES);
        let exporter = Exporter::start(&namespace, &["--config.file", path_str(&config)]);
        Rig {
            exporter,
            peer,
            _namespace: namespace,
            sockets,
        }
    }

    fn probe(&self, target: IpAddr, module: &str) -> Metrics {
        let response = self
            .exporter
            .get(&format!("/probe?target={target}&module={module}"));
        assert_eq!(response.status, 200, "{}", response.body);
        let metrics = Metrics::parse(&response.body);
        assert_eq!(
            metrics.value("probe_ip_addr_hash"),
            fnv1a(target),
            "{target}: answer for another target"
        );
        metrics
    }

    fn metrics(&self) -> Metrics {
        self.exporter.metrics()
    }

    /// Polls `/metrics` until `series` reaches `value`; returns the last sample either way.
    fn wait_for(&self, series: &str, value: f64) -> Metrics {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let metrics = self.metrics();
            if metrics.value(series) >= value || std::time::Instant::now() >= deadline {
                return metrics;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The test exercised the socket kind it meant to, and meshprobe sent only valid requests.
    fn check_path(&self, family: &str) {
        let kind = match self.sockets {
            Sockets::Raw => "raw",
            Sockets::Ping => "dgram",
        };
        let metrics = self.metrics();
        assert_eq!(
            metrics.value(&format!(
                "meshprobe_sockets_open{{ip_protocol=\"{family}\",kind=\"{kind}\"}}"
            )),
            1.0,
            "{family} probes did not use a {kind} socket"
        );
        assert_eq!(self.peer.malformed_requests(), 0);
        assert_eq!(self.peer.write_errors(), 0);
        // The exporter logged no panic.
        assert!(
            !self.exporter.log().contains("panicked"),
            "{}",
            self.exporter.log()
        );
    }
}

/// Both families' fake targets: (family label, target, another fake address of that family).
fn families(host: u8) -> [(&'static str, IpAddr, IpAddr); 2] {
    [
        ("ip4", fake_peer::v4(host), fake_peer::v4(200)),
        ("ip6", fake_peer::v6(u16::from(host)), fake_peer::v6(200)),
    ]
}

fn family_of(target: IpAddr) -> &'static str {
    if target.is_ipv4() { "ip4" } else { "ip6" }
}

fn delta(before: &Metrics, after: &Metrics, series: &str) -> f64 {
    after.value(series) - before.value(series)
}

fn rejected(reason: &str) -> String {
    format!("meshprobe_replies_rejected_total{{reason=\"{reason}\"}}")
}

const MATCHED: &str = "meshprobe_replies_matched_total";

fn received(target: IpAddr) -> String {
    format!(
        "meshprobe_packets_received_total{{ip_protocol=\"{}\"}}",
        family_of(target)
    )
}

/// Every rejection counter moved by exactly what `expected` says (0 for the rest).
fn assert_rejections(before: &Metrics, after: &Metrics, expected: &[(&str, f64)], context: &str) {
    for reason in REASONS {
        let want = expected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0.0, |(_, n)| *n);
        assert_eq!(
            delta(before, after, &rejected(reason)),
            want,
            "{context}: rejected{{reason={reason}}}"
        );
    }
}

fn rtt(metrics: &Metrics) -> f64 {
    metrics.value("probe_icmp_duration_seconds{phase=\"rtt\"}")
}

/// Success with the RTT of the real reply (sent `at_least` after the request) from the fake peer.
fn assert_success_after(metrics: &Metrics, at_least: Duration, context: &str) {
    assert_eq!(
        metrics.value("probe_success"),
        1.0,
        "{context}: {metrics:#?}"
    );
    let rtt = rtt(metrics);
    assert!(
        rtt >= at_least.as_secs_f64() && rtt < at_least.as_secs_f64() + 0.4,
        "{context}: rtt {rtt} but the real reply was sent after {at_least:?}"
    );
    // The reply came straight from the fake peer's device: no router decremented it.
    assert_eq!(
        metrics.value("probe_icmp_reply_hop_limit"),
        f64::from(fake_peer::REPLY_TTL),
        "{context}"
    );
    assert!(
        !metrics.has_family("probe_icmp_failure_reason"),
        "{context}"
    );
    assert!(!metrics.has_family("probe_icmp_error_info"), "{context}");
}

fn assert_failure(metrics: &Metrics, reason: &str, context: &str) {
    assert_eq!(
        metrics.value("probe_success"),
        0.0,
        "{context}: {metrics:#?}"
    );
    assert_eq!(
        metrics.value(&format!("probe_icmp_failure_reason{{reason=\"{reason}\"}}")),
        1.0,
        "{context}: {metrics:#?}"
    );
    assert!(
        !metrics.has("probe_icmp_duration_seconds{phase=\"rtt\"}"),
        "{context}: a failed probe must not report an RTT"
    );
    assert!(!metrics.has("probe_icmp_reply_hop_limit"), "{context}");
}

trait HasFamily {
    fn has_family(&self, family: &str) -> bool;
}

impl HasFamily for Metrics {
    fn has_family(&self, family: &str) -> bool {
        self.samples
            .keys()
            .any(|series| series == family || series.starts_with(&format!("{family}{{")))
    }
}

/// Sends `bogus` then the real reply 50 ms later; the probe must succeed with the real reply's
/// RTT, and the bogus one must be counted under `reason` (or, when the kernel drops it before
/// meshprobe sees it, not received at all).
fn bogus_then_real(rig: &Rig, host: u8, bogus: impl Fn(IpAddr, IpAddr) -> Reply, reason: &str) {
    for (family, target, other) in families(host) {
        let context = format!("{:?} {target}", rig.sockets);
        rig.peer.set(
            target,
            Behaviour::bogus_then_echo(bogus(target, other), REAL_AFTER),
        );
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, REAL_AFTER, &context);
        let after = rig.metrics();
        assert_eq!(delta(&before, &after, MATCHED), 1.0, "{context}");
        assert_eq!(rig.peer.counts(target).sent, 2, "{context}");
        if reason == "dropped_by_kernel" {
            assert_rejections(&before, &after, &[], &context);
            assert_eq!(
                delta(&before, &after, &received(target)),
                1.0,
                "{context}: the kernel should have dropped the bogus reply"
            );
        } else {
            assert_rejections(&before, &after, &[(reason, 1.0)], &context);
            assert_eq!(delta(&before, &after, &received(target)), 2.0, "{context}");
        }
        rig.check_path(family);
    }
}

/// Sends only `bogus`; the probe must time out, and the packet be counted under `reason`.
fn only_bogus(rig: &Rig, host: u8, bogus: impl Fn(IpAddr, IpAddr) -> Reply, reason: &str) {
    for (family, target, other) in families(host) {
        let context = format!("{:?} {target} only bogus", rig.sockets);
        rig.peer.set(target, Behaviour::only(bogus(target, other)));
        let before = rig.metrics();
        let metrics = rig.probe(target, "fast");
        assert_failure(&metrics, "timeout", &context);
        let after = rig.metrics();
        assert_eq!(delta(&before, &after, MATCHED), 0.0, "{context}");
        assert_eq!(rig.peer.counts(target).sent, 1, "{context}");
        if reason == "dropped_by_kernel" {
            assert_rejections(&before, &after, &[], &context);
        } else {
            assert_rejections(&before, &after, &[(reason, 1.0)], &context);
        }
        rig.check_path(family);
    }
}

#[test]
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
fn truncated_and_malformed_packets_are_rejected_on_raw_sockets() {
    require_namespaces!();
    truncated_and_malformed(Sockets::Raw);
}

#[test]
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
fn forged_source_replies_are_rejected_on_raw_sockets() {
    require_namespaces!();
    forged_sources(Sockets::Raw);
}

#[test]
fn forged_source_replies_are_rejected_on_ping_sockets() {
    require_namespaces!();
    forged_sources(Sockets::Ping);
}

#[test]
fn wrong_id_and_seq_are_rejected_on_raw_sockets() {
    require_namespaces!();
    let rig = Rig::new(Sockets::Raw);
    bogus_then_real(&rig, 30, |_, _| Reply::WrongId, "unknown_probe");
    bogus_then_real(&rig, 31, |_, _| Reply::WrongSeq, "unknown_probe");
    only_bogus(&rig, 32, |_, _| Reply::WrongSeq, "unknown_probe");
}

#[test]
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
fn bad_checksums_are_never_accepted_on_raw_sockets() {
    require_namespaces!();
    bad_checksums(&Rig::new(Sockets::Raw), 50);
}

#[test]
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
fn bad_checksum_does_not_hide_the_next_reply_on_raw_sockets() {
    require_namespaces!();
    bad_checksum_back_to_back(Sockets::Raw);
}

#[test]
fn bad_checksum_does_not_hide_the_next_reply_on_ping_sockets() {
    require_namespaces!();
    bad_checksum_back_to_back(Sockets::Ping);
}

fn duplicates_and_late_replies(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(60) {
        let context = format!("{sockets:?} {target} duplicate");
        rig.peer
            .set(target, Behaviour::duplicate(Duration::from_millis(30)));
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, Duration::ZERO, &context);
        assert!(rig.peer.wait_for_sent(target, 2, Duration::from_secs(2)));
        let after = rig.wait_for(
            &rejected("duplicate"),
            before.value(&rejected("duplicate")) + 1.0,
        );
        assert_eq!(delta(&before, &after, MATCHED), 1.0, "{context}");
        assert_rejections(&before, &after, &[("duplicate", 1.0)], &context);
        rig.check_path(family);
    }
    for (family, target, _) in families(61) {
        let context = format!("{sockets:?} {target} late");
        // The `fast` module gives up after 500 ms; the reply comes at 800 ms.
        rig.peer
            .set(target, Behaviour::late(Duration::from_millis(800)));
        let before = rig.metrics();
        let metrics = rig.probe(target, "fast");
        assert_failure(&metrics, "timeout", &context);
        let duration = metrics.value("probe_duration_seconds");
        assert!(duration < 0.75, "{context}: took {duration}");
        assert!(rig.peer.wait_for_sent(target, 1, Duration::from_secs(2)));
        let after = rig.wait_for(&rejected("late"), before.value(&rejected("late")) + 1.0);
        assert_eq!(delta(&before, &after, MATCHED), 0.0, "{context}");
        assert_rejections(&before, &after, &[("late", 1.0)], &context);
        rig.check_path(family);
    }
}

#[test]
fn duplicate_and_late_replies_are_rejected_on_raw_sockets() {
    require_namespaces!();
    duplicates_and_late_replies(Sockets::Raw);
}

#[test]
fn duplicate_and_late_replies_are_rejected_on_ping_sockets() {
    require_namespaces!();
    duplicates_and_late_replies(Sockets::Ping);
}

fn icmp_errors(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(70) {
        let router = fake_peer::router_for(target);
        let unreachable_code = if target.is_ipv4() { 1 } else { 3 };
        let cases = [
            (
                ErrorKind::Unreachable {
                    code: unreachable_code,
                },
                "destination_unreachable",
                unreachable_code,
            ),
            (ErrorKind::TimeExceeded, "time_exceeded", 0),
        ];
        for (kind, label, code) in cases {
            let context = format!("{sockets:?} {target} {label}");
            rig.peer
                .set(target, Behaviour::only(Reply::Error { kind, from: router }));
            let before = rig.metrics();
            let metrics = rig.probe(target, "slow");
            assert_failure(&metrics, "icmp_error", &context);
            let series = format!(
                "probe_icmp_error_info{{code=\"{code}\",from=\"{router}\",type=\"{label}\"}}"
            );
            assert_eq!(metrics.value(&series), 1.0, "{context}: {metrics:#?}");
            // It failed at once, not at the 5 s module timeout.
            let duration = metrics.value("probe_duration_seconds");
            assert!(duration < 0.5, "{context}: took {duration}");
            let after = rig.metrics();
            let errors = format!("meshprobe_icmp_errors_received_total{{type=\"{label}\"}}");
            assert_eq!(delta(&before, &after, &errors), 1.0, "{context}");
            assert_eq!(delta(&before, &after, MATCHED), 0.0, "{context}");
            assert_rejections(&before, &after, &[], &context);
        }
        // Routers that follow RFC 792 to the letter quote the IP header and 8 bytes only: no
        // nonce to check, so the (target, id, seq) must do, and the error still ends the probe.
        let context = format!("{sockets:?} {target} minimal quote");
        let header = if target.is_ipv4() { 20 } else { 40 };
        rig.peer.set(
            target,
            Behaviour::only(Reply::ShortError {
                kind: ErrorKind::TimeExceeded,
                from: router,
                quote: header + 8,
            }),
        );
        let metrics = rig.probe(target, "slow");
        assert_failure(&metrics, "icmp_error", &context);
        let series =
            format!("probe_icmp_error_info{{code=\"0\",from=\"{router}\",type=\"time_exceeded\"}}");
        assert_eq!(metrics.value(&series), 1.0, "{context}: {metrics:#?}");
        assert!(metrics.value("probe_duration_seconds") < 0.5, "{context}");

        // An error that quotes a request we never sent (same target, id and seq, another nonce)
        // must not end the probe; the real reply follows.
        let context = format!("{sockets:?} {target} foreign error");
        let foreign = Reply::ForeignError {
            kind: ErrorKind::Unreachable {
                code: unreachable_code,
            },
            from: router,
        };
        rig.peer
            .set(target, Behaviour::bogus_then_echo(foreign, REAL_AFTER));
        let before = rig.metrics();
        let metrics = rig.probe(target, "slow");
        assert_success_after(&metrics, REAL_AFTER, &context);
        let after = rig.metrics();
        assert_rejections(&before, &after, &[("unrelated", 1.0)], &context);
        assert_eq!(
            delta(
                &before,
                &after,
                "meshprobe_icmp_errors_received_total{type=\"destination_unreachable\"}"
            ),
            0.0,
            "{context}"
        );
        rig.check_path(family);
    }
}

#[test]
fn icmp_errors_end_the_probe_at_once_on_raw_sockets() {
    require_namespaces!();
    icmp_errors(Sockets::Raw);
}

#[test]
fn icmp_errors_end_the_probe_at_once_on_ping_sockets() {
    require_namespaces!();
    icmp_errors(Sockets::Ping);
}

/// Two overlapping probes to one address whose replies come back swapped: each probe gets its
/// own reply (the first waits for the second request, so its RTT is the longer one).
fn reordered_replies(sockets: Sockets) {
    let rig = Rig::new(sockets);
    for (family, target, _) in families(80) {
        let context = format!("{sockets:?} {target} reordered");
        rig.peer.set(target, Behaviour::echo().reordered());
        let before = rig.metrics();
        let gap = Duration::from_millis(100);
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| rig.probe(target, "slow"));
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while rig.peer.requests(target) < 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(gap);
            let second = scope.spawn(|| rig.probe(target, "slow"));
            (
                first.join().expect("first probe"),
                second.join().expect("second probe"),
            )
        });
        assert_success_after(&first, gap, &format!("{context}, first"));
        assert_success_after(&second, Duration::ZERO, &format!("{context}, second"));
        assert!(
            rtt(&second) < rtt(&first) - 0.05,
            "{context}: rtts {} and {}",
            rtt(&first),
            rtt(&second)
        );
        let after = rig.metrics();
        assert_eq!(delta(&before, &after, MATCHED), 2.0, "{context}");
        assert_rejections(&before, &after, &[], &context);
        assert_eq!(rig.peer.counts(target).requests, 2, "{context}");
        rig.check_path(family);
    }
}

#[test]
fn reordered_replies_reach_their_own_probes_on_raw_sockets() {
    require_namespaces!();
    reordered_replies(Sockets::Raw);
}

#[test]
fn reordered_replies_reach_their_own_probes_on_ping_sockets() {
    require_namespaces!();
    reordered_replies(Sockets::Ping);
}
