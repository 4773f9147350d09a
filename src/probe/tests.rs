//! Unit tests of `probe/`, kept beside it so the module itself stays readable.

use super::*;

#[test]
fn timeout_table_from_blackbox_handler_test() {
    let cases = [
        (0.0, Some("15"), 0.5, 14.5),
        (0.0, Some("15"), 0.0, 15.0),
        (20.0, Some("15"), 0.5, 14.5),
        (5.0, Some("15"), 0.5, 5.0),
        (10.0, None, 0.5, 10.0),
        (10.0, Some("10"), 0.5, 9.5),
        (9.5, None, 1.0, 9.5),
        (0.0, None, 0.5, 119.5),
        (0.0, None, 0.0, 120.0),
    ];
    for (module, header, offset, expected) in cases {
        let got = probe_timeout(Duration::from_secs_f64(module), header, offset).expect("valid");
        assert_eq!(got.as_secs_f64(), expected, "{module} {header:?} {offset}");
    }
    assert!(probe_timeout(Duration::ZERO, Some("abc"), 0.5).is_err());
    assert!(probe_timeout(Duration::ZERO, Some("-3"), 0.5).is_err());
    assert_eq!(
        probe_timeout(Duration::ZERO, Some("0.3"), 0.5),
        Ok(Duration::ZERO)
    );
    for huge in ["1e308", "1e20", "1.9e19", "9.3e18", "1e10", "301"] {
        let clamped = probe_timeout(Duration::ZERO, Some(huge), 0.5);
        assert_eq!(clamped, Ok(MAX_PROBE_TIMEOUT), "{huge}");
    }
    let module_hour = probe_timeout(Duration::from_secs(3600), Some("1e9"), 0.0);
    assert_eq!(module_hour, Ok(MAX_PROBE_TIMEOUT));
}

fn sample_outcome(success: bool) -> ProbeOutcome {
    ProbeOutcome {
        success,
        duration: Duration::from_micros(412),
        timeout: Duration::from_secs_f64(119.5),
        dns_lookup: Duration::from_micros(12),
        resolve: Duration::from_micros(12),
        setup: Duration::from_micros(98),
        rtt: success.then_some(Duration::from_micros(101)),
        hop_limit: Some(64),
        ip_protocol: 4,
        ip_addr_hash: 3_668_918_509,
        failure: (!success).then_some(FailureReason::Timeout),
        icmp_error: None,
        kernel_timestamp: success.then_some(true),
        socket_kind: Some(SocketKind::Raw),
        burst: None,
    }
}

#[test]
fn multi_packet_families_keep_the_sorted_order() {
    let mut outcome = sample_outcome(true);
    let rtts: Vec<Duration> = [1, 2, 3].map(Duration::from_millis).to_vec();
    outcome.burst = Some(BurstStats {
        sent: 3,
        received: 3,
        duplicated: 1,
        spread: burst::RttSpread::of(&rtts),
    });
    let text = render(&outcome, ProbeOptions::default());
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let mut sorted = families.clone();
    sorted.sort_unstable();
    assert_eq!(families, sorted);
    for family in [
        "probe_icmp_jitter_seconds",
        "probe_icmp_packets_duplicated",
        "probe_icmp_packets_received",
        "probe_icmp_packets_sent",
        "probe_icmp_rtt_max_seconds",
        "probe_icmp_rtt_mean_seconds",
        "probe_icmp_rtt_min_seconds",
        "probe_icmp_rtt_stddev_seconds",
    ] {
        assert!(families.contains(&family), "{family} missing:\n{text}");
    }
    assert!(text.contains("probe_icmp_packets_duplicated 1\n"));
    // One packet: exactly the blackbox layout, no extra family.
    let single = render(&sample_outcome(true), ProbeOptions::default());
    assert!(!single.contains("packets"));
}

#[test]
fn success_render_matches_blackbox_layout() {
    let text = render(&sample_outcome(true), ProbeOptions::default());
    assert!(text.contains("probe_icmp_duration_seconds{phase=\"rtt\"} 0.000101\n"));
    assert!(text.contains("probe_ip_addr_hash 3.668918509e+09\n"));
    assert!(text.contains("probe_icmp_reply_hop_limit 64\n"));
    assert!(text.contains("probe_timeout_seconds 119.5\n"));
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "families must be sorted like client_golang");
}

#[test]
fn failure_render_omits_rtt_unless_compat_flag() {
    let outcome = sample_outcome(false);
    let text = render(&outcome, ProbeOptions::default());
    assert!(!text.contains("phase=\"rtt\""));
    assert!(!text.contains("probe_icmp_reply_hop_limit"));
    assert!(text.contains("probe_icmp_failure_reason{reason=\"timeout\"} 1\n"));
    let compat = render(
        &outcome,
        ProbeOptions {
            rtt_zero_on_failure: true,
            ..ProbeOptions::default()
        },
    );
    assert!(compat.contains("probe_icmp_duration_seconds{phase=\"rtt\"} 0\n"));
}
