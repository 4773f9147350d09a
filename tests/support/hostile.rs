//! The rig for the hostile-reply tests: the fake peer and the real exporter in one namespace,
//! the module set they probe with, and assertions on the exact movement of the rejection
//! counters. Shared by `tests/hostile_replies.rs` and `tests/hostile_errors.rs`.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use super::fake_peer::{self, Behaviour, FakePeer, Reply};
use super::*;

pub const MODULES: &str = r#"
modules:
  fast:
    prober: icmp
    timeout: 500ms
  slow:
    prober: icmp
    timeout: 5s
"#;

pub const REASONS: [&str; 8] = [
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
pub const REAL_AFTER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sockets {
    Raw,
    Ping,
}

/// One namespace with the fake peer and the exporter in it. Fields drop in order: the exporter
/// stops first, then the peer removes its device, then the namespace goes.
pub struct Rig {
    pub exporter: Exporter,
    pub peer: FakePeer,
    pub _namespace: Namespace,
    pub sockets: Sockets,
}

impl Rig {
    pub fn new(sockets: Sockets) -> Rig {
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

    pub fn probe(&self, target: IpAddr, module: &str) -> Metrics {
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

    pub fn metrics(&self) -> Metrics {
        self.exporter.metrics()
    }

    /// Polls `/metrics` until `series` reaches `value`; returns the last sample either way.
    pub fn wait_for(&self, series: &str, value: f64) -> Metrics {
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
    pub fn check_path(&self, family: &str) {
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
pub fn families(host: u8) -> [(&'static str, IpAddr, IpAddr); 2] {
    [
        ("ip4", fake_peer::v4(host), fake_peer::v4(200)),
        ("ip6", fake_peer::v6(u16::from(host)), fake_peer::v6(200)),
    ]
}

pub fn family_of(target: IpAddr) -> &'static str {
    if target.is_ipv4() { "ip4" } else { "ip6" }
}

pub fn delta(before: &Metrics, after: &Metrics, series: &str) -> f64 {
    after.value(series) - before.value(series)
}

pub fn rejected(reason: &str) -> String {
    format!("meshprobe_replies_rejected_total{{reason=\"{reason}\"}}")
}

pub const MATCHED: &str = "meshprobe_replies_matched_total";

pub fn received(target: IpAddr) -> String {
    format!(
        "meshprobe_packets_received_total{{ip_protocol=\"{}\"}}",
        family_of(target)
    )
}

/// Every rejection counter moved by exactly what `expected` says (0 for the rest).
pub fn assert_rejections(
    before: &Metrics,
    after: &Metrics,
    expected: &[(&str, f64)],
    context: &str,
) {
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

pub fn rtt(metrics: &Metrics) -> f64 {
    metrics.value("probe_icmp_duration_seconds{phase=\"rtt\"}")
}

/// Success with the RTT of the real reply (sent `at_least` after the request) from the fake peer.
pub fn assert_success_after(metrics: &Metrics, at_least: Duration, context: &str) {
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

pub fn assert_failure(metrics: &Metrics, reason: &str, context: &str) {
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

pub trait HasFamily {
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
pub fn bogus_then_real(rig: &Rig, host: u8, bogus: impl Fn(IpAddr, IpAddr) -> Reply, reason: &str) {
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
pub fn only_bogus(rig: &Rig, host: u8, bogus: impl Fn(IpAddr, IpAddr) -> Reply, reason: &str) {
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
