//! End-to-end `/probe` tests: the real binary in a namespace test network, real kernel echo
//! replies, real ICMP errors from a router namespace. Covers IPv4/IPv6, raw and ping sockets,
//! timeouts, ICMP errors, TTL, DF, source addresses and name resolution.

mod support;

use std::net::IpAddr;
use std::time::Instant;

use support::*;

const MODULES: &str = r#"
modules:
  icmp:
    prober: icmp
    timeout: 5s
  icmp_ip4:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
  ttl1:
    prober: icmp
    timeout: 5s
    icmp:
      ttl: 1
  df_1400:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      dont_fragment: true
      payload_size: 1400
  df_2000:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      dont_fragment: true
      payload_size: 2000
  fragmented_1400:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      payload_size: 1400
  from_second:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
      source_ip_address: 198.18.0.2
  from_absent:
    prober: icmp
    timeout: 5s
    icmp:
      source_ip_address: 198.18.0.77
"#;

fn probe(exporter: &Exporter, target: &str, module: &str) -> Metrics {
    let response = exporter.get(&format!("/probe?target={target}&module={module}"));
    assert_eq!(response.status, 200, "{}", response.body);
    Metrics::parse(&response.body)
}

fn start(net: &TestNet) -> Exporter {
    let config = write_config("modules.yml", MODULES);
    Exporter::start(&net.prober, &["--config.file", path_str(&config)])
}

fn assert_success(metrics: &Metrics, target: &str, protocol: f64) {
    assert_eq!(metrics.value("probe_success"), 1.0, "{metrics:#?}");
    assert_eq!(metrics.value("probe_ip_protocol"), protocol);
    let address: IpAddr = target.parse().expect("address");
    assert_eq!(metrics.value("probe_ip_addr_hash"), fnv1a(address));
    // The reply crossed the router once: 64 − 1.
    assert_eq!(metrics.value("probe_icmp_reply_hop_limit"), 63.0);
    let rtt = metrics.value("probe_icmp_duration_seconds{phase=\"rtt\"}");
    assert!(rtt > 0.0 && rtt < 0.5, "rtt {rtt}");
    assert_eq!(metrics.value("probe_icmp_kernel_timestamp"), 1.0);
    assert!(!metrics.has("probe_icmp_failure_reason{reason=\"timeout\"}"));
}

fn assert_failure(metrics: &Metrics, reason: &str) {
    assert_eq!(metrics.value("probe_success"), 0.0, "{metrics:#?}");
    assert_eq!(
        metrics.value(&format!("probe_icmp_failure_reason{{reason=\"{reason}\"}}")),
        1.0,
        "{metrics:#?}"
    );
    assert!(!metrics.has("probe_icmp_duration_seconds{phase=\"rtt\"}"));
    assert!(!metrics.has("probe_icmp_reply_hop_limit"));
}

fn sockets_open(exporter: &Exporter, protocol: &str, kind: &str) -> f64 {
    exporter.metrics().value(&format!(
        "meshprobe_sockets_open{{ip_protocol=\"{protocol}\",kind=\"{kind}\"}}"
    ))
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn raw_sockets_answer_ipv4_and_ipv6() {
    require_namespaces!();
    let net = TestNet::new();
    // A new namespace has ping_group_range "1 0": only raw sockets work.
    let exporter = start(&net);
    assert_success(&probe(&exporter, TARGET_V4, "icmp"), TARGET_V4, 4.0);
    assert_success(&probe(&exporter, TARGET_V6, "icmp"), TARGET_V6, 6.0);
    assert_eq!(sockets_open(&exporter, "ip4", "raw"), 1.0);
    assert_eq!(sockets_open(&exporter, "ip6", "raw"), 1.0);
    assert_eq!(sockets_open(&exporter, "ip4", "dgram"), 0.0);
    // Repeated probes reuse the shared socket.
    for _ in 0..20 {
        assert_eq!(
            probe(&exporter, TARGET_V4, "icmp").value("probe_success"),
            1.0
        );
    }
    assert_eq!(sockets_open(&exporter, "ip4", "raw"), 1.0);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn ping_sockets_are_preferred_when_allowed() {
    require_namespaces!();
    let net = TestNet::new();
    net.prober
        .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    let exporter = start(&net);
    assert_success(&probe(&exporter, TARGET_V4, "icmp"), TARGET_V4, 4.0);
    assert_success(&probe(&exporter, TARGET_V6, "icmp"), TARGET_V6, 6.0);
    assert_eq!(sockets_open(&exporter, "ip4", "dgram"), 1.0);
    assert_eq!(sockets_open(&exporter, "ip6", "dgram"), 1.0);
    assert_eq!(sockets_open(&exporter, "ip4", "raw"), 0.0);
    // DF on IPv4 always needs a raw socket, as in blackbox: a send-only DF socket, plus the
    // family's one receiving raw socket (which leaves the ping socket's replies alone).
    let metrics = probe(&exporter, TARGET_V4, "df_1400");
    assert_eq!(metrics.value("probe_success"), 0.0);
    assert_eq!(sockets_open(&exporter, "ip4", "raw"), 2.0);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn silent_target_times_out_at_the_scrape_timeout_minus_offset() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    for target in [SILENT_V4, SILENT_V6] {
        let started = Instant::now();
        let response = exporter.get_with_headers(
            &format!("/probe?target={target}&module=icmp"),
            &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")],
        );
        let elapsed = started.elapsed().as_secs_f64();
        let metrics = Metrics::parse(&response.body);
        assert_eq!(metrics.value("probe_timeout_seconds"), 1.0);
        assert_failure(&metrics, "timeout");
        let duration = metrics.value("probe_duration_seconds");
        assert!((0.99..1.3).contains(&duration), "duration {duration}");
        assert!(elapsed < 1.5, "request took {elapsed}s");
        // Setup finished; resolve is set for literals too.
        assert!(metrics.value("probe_icmp_duration_seconds{phase=\"setup\"}") > 0.0);
    }
}

fn assert_icmp_error(metrics: &Metrics, kind: &str, code: u8, from: &str) {
    assert_failure(metrics, "icmp_error");
    let series =
        format!("probe_icmp_error_info{{code=\"{code}\",from=\"{from}\",type=\"{kind}\"}}");
    assert_eq!(metrics.value(&series), 1.0, "{metrics:#?}");
    // It failed at once instead of waiting for the 5 s module timeout.
    assert!(metrics.value("probe_duration_seconds") < 1.0);
}

fn icmp_errors_are_reported(configure: impl Fn(&TestNet)) {
    let net = TestNet::new();
    configure(&net);
    let exporter = start(&net);
    assert_icmp_error(
        &probe(&exporter, UNREACHABLE_V4, "icmp"),
        "destination_unreachable",
        1,
        "198.18.0.254",
    );
    assert_icmp_error(
        &probe(&exporter, UNREACHABLE_V6, "icmp"),
        "destination_unreachable",
        0,
        "2001:2::fe",
    );
    assert_icmp_error(
        &probe(&exporter, TARGET_V4, "ttl1"),
        "time_exceeded",
        0,
        "198.18.0.254",
    );
    assert_icmp_error(
        &probe(&exporter, TARGET_V6, "ttl1"),
        "time_exceeded",
        0,
        "2001:2::fe",
    );
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_icmp_errors_received_total{type=\"time_exceeded\"}"),
        2.0
    );
    assert_eq!(
        metrics.value("meshprobe_icmp_errors_received_total{type=\"destination_unreachable\"}"),
        2.0
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn icmp_errors_end_the_probe_on_raw_sockets() {
    require_namespaces!();
    icmp_errors_are_reported(|_| {});
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn icmp_errors_end_the_probe_on_ping_sockets() {
    require_namespaces!();
    icmp_errors_are_reported(|net| {
        net.prober
            .sysctl("net.ipv4.ping_group_range", "0 2147483647")
    });
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn dont_fragment_with_a_too_big_payload_fails_with_the_reason() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    // 1428-byte packets fit the first link (1500) but not the router's 1280-byte link.
    let metrics = probe(&exporter, TARGET_V4, "df_1400");
    assert_icmp_error(&metrics, "packet_too_big", 4, "198.18.0.254");
    // Larger than the local MTU: the kernel refuses the send.
    let metrics = probe(&exporter, TARGET_V4, "df_2000");
    assert_failure(&metrics, "send");
    let debug = exporter.get(&format!(
        "/probe?target={TARGET_V4}&module=df_2000&debug=true"
    ));
    assert!(debug.body.contains("Message too long"), "{}", debug.body);
    // Without DF the same payload is fragmented and answered.
    let metrics = probe(&exporter, TARGET_V4, "fragmented_1400");
    assert_eq!(metrics.value("probe_success"), 1.0, "{metrics:#?}");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn source_ip_address_selects_the_sending_address() {
    require_namespaces!();
    let net = TestNet::new();
    net.target
        .exec("nft", &["add", "table", "inet", "probe_test"]);
    net.target.exec(
        "nft",
        &["add chain inet probe_test input { type filter hook input priority 0; }"],
    );
    net.target.exec(
        "nft",
        &["add rule inet probe_test input ip saddr 198.18.0.2 icmp type echo-request counter"],
    );
    let exporter = start(&net);
    for _ in 0..3 {
        assert_eq!(
            probe(&exporter, TARGET_V4, "from_second").value("probe_success"),
            1.0
        );
    }
    let counters = net
        .target
        .exec("nft", &["list", "table", "inet", "probe_test"]);
    assert!(counters.contains("counter packets 3 "), "{counters}");
    // A source address the host does not have cannot be bound.
    let metrics = probe(&exporter, TARGET_V4, "from_absent");
    assert_failure(&metrics, "socket");
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn hostnames_resolve_with_blackbox_preference_rules() {
    require_namespaces!();
    let net = TestNet::new();
    let exporter = start(&net);
    // Default module prefers IPv6 with fallback.
    let dual = probe(&exporter, "peer-dual.test", "icmp");
    assert_eq!(dual.value("probe_success"), 1.0, "{dual:#?}");
    assert_eq!(dual.value("probe_ip_protocol"), 6.0);
    let v4 = probe(&exporter, "peer-dual.test", "icmp_ip4");
    assert_eq!(v4.value("probe_ip_protocol"), 4.0);
    // Only an A record: the IPv6-preferring module falls back to IPv4.
    let fallback = probe(&exporter, "peer-v4.test", "icmp");
    assert_eq!(fallback.value("probe_ip_protocol"), 4.0);
    assert_eq!(fallback.value("probe_success"), 1.0);
    // Unknown names fail resolution: blackbox's values for that case.
    let missing = probe(&exporter, "no-such-host.test", "icmp");
    assert_eq!(missing.value("probe_success"), 0.0);
    assert_eq!(missing.value("probe_ip_protocol"), 0.0);
    assert_eq!(missing.value("probe_ip_addr_hash"), 0.0);
    assert_eq!(
        missing.value("probe_icmp_duration_seconds{phase=\"resolve\"}"),
        0.0
    );
    assert_eq!(
        missing.value("probe_icmp_failure_reason{reason=\"resolution\"}"),
        1.0
    );
}
