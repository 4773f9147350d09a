//! Compatibility with the real blackbox_exporter (Debian's 0.23 package): both run side by side
//! in the same namespace network with the same config, and their `/probe` outputs must have the
//! same metric families, types, help strings and label sets for success, timeout and
//! resolution failure. meshprobe may only add the families listed in `MESHPROBE_EXTRAS`.
//! Requests blackbox answers with a failed probe rather than a 400 (`host:port`, `[::1]`, a URL)
//! or probes leniently (`debug=yes`, duplicated parameters: the first value wins) get the same
//! status and `probe_success` from meshprobe by default.

mod support;

use std::collections::BTreeSet;

use support::*;

const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// Families meshprobe adds on purpose (README "Metrics"); `probe_timeout_seconds` comes from
/// blackbox master (#1571), newer than Debian's 0.23.
const MESHPROBE_EXTRAS: [&str; 4] = [
    "probe_icmp_error_info",
    "probe_icmp_failure_reason",
    "probe_icmp_kernel_timestamp",
    "probe_timeout_seconds",
];

const CONFIG: &str = "modules:\n  icmp:\n    prober: icmp\n    timeout: 5s\n  icmp_ip4:\n    prober: icmp\n    timeout: 5s\n    icmp:\n      preferred_ip_protocol: ip4\n  icmp_no_timeout:\n    prober: icmp\n";

fn require_blackbox() {
    require_tool(BLACKBOX, "prometheus-blackbox-exporter");
}

struct Case {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "success v4",
            path: format!("/probe?module=icmp_ip4&target={TARGET_V4}"),
            headers: vec![],
        },
        Case {
            name: "success v6",
            path: format!("/probe?module=icmp&target={TARGET_V6}"),
            headers: vec![],
        },
        Case {
            name: "success hostname",
            path: "/probe?module=icmp&target=peer-dual.test".into(),
            headers: vec![],
        },
        Case {
            name: "timeout",
            path: format!("/probe?module=icmp&target={SILENT_V4}"),
            headers: vec![("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
        },
        Case {
            name: "resolution failure",
            path: "/probe?module=icmp&target=no-such-host.test".into(),
            headers: vec![],
        },
        // Without a module timeout, a scrape timeout below --timeout-offset leaves none: blackbox
        // fails the probe (its context has expired).
        Case {
            name: "scrape timeout below the offset",
            path: format!("/probe?module=icmp_no_timeout&target={TARGET_V4}"),
            headers: vec![("X-Prometheus-Scrape-Timeout-Seconds", "0.3")],
        },
        Case {
            name: "host:port",
            path: format!("/probe?module=icmp&target={TARGET_V4}:80"),
            headers: vec![],
        },
        Case {
            name: "bracketed IPv6",
            path: "/probe?module=icmp&target=%5B2001:2:0:1::1%5D".into(),
            headers: vec![],
        },
        Case {
            name: "URL",
            path: format!("/probe?module=icmp&target=http://{TARGET_V4}/"),
            headers: vec![],
        },
        Case {
            name: "CIDR",
            path: "/probe?module=icmp&target=198.18.1.0/24".into(),
            headers: vec![],
        },
        Case {
            name: "debug=yes",
            path: format!("/probe?module=icmp_ip4&target={TARGET_V4}&debug=yes"),
            headers: vec![],
        },
        Case {
            name: "duplicated target",
            path: format!("/probe?module=icmp_ip4&target={TARGET_V4}&target={SILENT_V4}"),
            headers: vec![],
        },
        Case {
            name: "duplicated module",
            path: format!("/probe?module=icmp_ip4&module=icmp&target={TARGET_V4}"),
            headers: vec![],
        },
    ]
}

fn families(metrics: &Metrics) -> BTreeSet<String> {
    metrics.types.keys().cloned().collect()
}

fn compare(case: &Case, blackbox: &Metrics, meshprobe: &Metrics, compare_series: bool) {
    let name = case.name;
    let extra: BTreeSet<String> = families(meshprobe)
        .difference(&families(blackbox))
        .cloned()
        .collect();
    for family in &extra {
        assert!(
            MESHPROBE_EXTRAS.contains(&family.as_str()),
            "{name}: unexpected extra family {family}"
        );
    }
    let missing: Vec<_> = families(blackbox)
        .difference(&families(meshprobe))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "{name}: meshprobe lacks {missing:?}");
    let blackbox_labels = blackbox.label_names();
    let meshprobe_labels = meshprobe.label_names();
    for family in families(blackbox) {
        assert_eq!(
            blackbox.types.get(&family),
            meshprobe.types.get(&family),
            "{name}: TYPE of {family}"
        );
        assert_eq!(
            blackbox.help.get(&family),
            meshprobe.help.get(&family),
            "{name}: HELP of {family}"
        );
        assert_eq!(
            blackbox_labels.get(&family),
            meshprobe_labels.get(&family),
            "{name}: label names of {family}"
        );
    }
    if compare_series {
        let blackbox_series: BTreeSet<&String> = blackbox.samples.keys().collect();
        let meshprobe_series: BTreeSet<&String> = meshprobe
            .samples
            .keys()
            .filter(|s| !MESHPROBE_EXTRAS.iter().any(|extra| s.starts_with(extra)))
            .collect();
        assert_eq!(blackbox_series, meshprobe_series, "{name}: series");
    }
    for series in ["probe_success", "probe_ip_protocol", "probe_ip_addr_hash"] {
        assert_eq!(
            blackbox.value(series),
            meshprobe.value(series),
            "{name}: {series}"
        );
    }
    if blackbox.has("probe_icmp_reply_hop_limit") {
        assert_eq!(
            blackbox.value("probe_icmp_reply_hop_limit"),
            meshprobe.value("probe_icmp_reply_hop_limit"),
            "{name}"
        );
    }
}

fn parity(meshprobe_flags: &[&str], compare_series: bool) {
    let net = TestNet::new();
    let config = write_config("blackbox.yml", CONFIG);
    let config_flag = format!("--config.file={}", path_str(&config));
    let blackbox = Exporter::start_program(&net.prober, BLACKBOX, &[&config_flag], 9116);
    let mut flags = vec![config_flag.as_str()];
    flags.extend_from_slice(meshprobe_flags);
    let meshprobe = Exporter::start(&net.prober, &flags);
    for case in cases() {
        let from_blackbox = blackbox.get_with_headers(&case.path, &case.headers);
        let from_meshprobe = meshprobe.get_with_headers(&case.path, &case.headers);
        assert_eq!(
            from_blackbox.status, 200,
            "{}: {}",
            case.name, from_blackbox.body
        );
        assert_eq!(
            from_meshprobe.status, 200,
            "{}: {}",
            case.name, from_meshprobe.body
        );
        let blackbox_metrics = Metrics::parse(&from_blackbox.body);
        let meshprobe_metrics = Metrics::parse(&from_meshprobe.body);
        compare(&case, &blackbox_metrics, &meshprobe_metrics, compare_series);
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn probe_output_matches_blackbox_exporter() {
    require_namespaces!();
    require_blackbox();
    parity(&[], false);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn compat_flag_matches_blackbox_series_exactly() {
    require_namespaces!();
    require_blackbox();
    parity(&["--compat.rtt-zero-on-failure"], true);
}
