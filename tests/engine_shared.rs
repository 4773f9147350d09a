//! `/probe` and the mesh in one process, on real sockets: every reply is counted once, whatever
//! mix of TTLs, source addresses, DF and socket kinds the modules ask for (issue 11's double
//! counting), and the first large-payload probe on a warm socket is not truncated.

mod support;

use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"
modules:
  ttl64:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      ttl: 64
  ttl64_ip6:
    prober: icmp
    timeout: 2s
    icmp:
      ttl: 64
  from_second:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      source_ip_address: 198.18.0.2
  df:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      dont_fragment: true
  large:
    prober: icmp
    timeout: 2s
    icmp:
      preferred_ip_protocol: ip4
      payload_size: 4000
mesh:
  interval: 20ms
  timeout: 500ms
  peers:
    static:
      - targets: ["198.18.1.1", "2001:2:0:1::1"]
        labels: {peer: target, network: lab}
"#;

fn mesh_total(metrics: &Metrics, family: &str) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{family}{{")))
        .map(|(_, value)| value)
        .sum()
}

fn probe_success(exporter: &Exporter, target: &str, module: &str) -> f64 {
    let response = exporter.get(&format!("/probe?target={target}&module={module}"));
    assert_eq!(response.status, 200, "{}", response.body);
    Metrics::parse(&response.body).value("probe_success")
}

/// Runs mesh and `/probe` side by side for a few seconds, then checks the books.
fn run_side_by_side(net: &TestNet) {
    let config = write_config("shared-engine.yml", CONFIG);
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(4) {
        for (target, module) in [
            (TARGET_V4, "ttl64"),
            (TARGET_V6, "ttl64_ip6"),
            (TARGET_V4, "from_second"),
            (TARGET_V4, "df"),
        ] {
            assert_eq!(probe_success(&exporter, target, module), 1.0, "{module}");
            probes += 1;
        }
    }
    // Let the mesh's last probes finish, then stop it sending by dropping its peers: nothing
    // needed, since sent counts finished probes only.
    std::thread::sleep(Duration::from_millis(600));
    let metrics = exporter.metrics();
    let sent = mesh_total(&metrics, "meshprobe_mesh_sent_total");
    let received = mesh_total(&metrics, "meshprobe_mesh_received_total");
    let lost = mesh_total(&metrics, "meshprobe_mesh_lost_total");
    let duplicates = mesh_total(&metrics, "meshprobe_mesh_duplicates_total");
    assert!(sent > 200.0, "mesh sent only {sent}");
    assert_eq!(sent, received + lost, "sent = received + lost");
    assert_eq!(lost, 0.0, "no loss on a clean network");
    assert_eq!(duplicates, 0.0, "no duplicates were sent by the peer");
    for reason in ["unknown_probe", "duplicate", "late", "truncated"] {
        assert_eq!(
            metrics.value(&format!(
                "meshprobe_replies_rejected_total{{reason=\"{reason}\"}}"
            )),
            0.0,
            "{reason} after {probes} probes beside the mesh"
        );
    }
    let matched = metrics.value("meshprobe_replies_matched_total");
    let packets_received = metrics.value("meshprobe_packets_received_total{ip_protocol=\"ip4\"}")
        + metrics.value("meshprobe_packets_received_total{ip_protocol=\"ip6\"}");
    // Every packet read was one reply, matched once (a few mesh replies may still be in flight
    // between the two reads of the counters, never the other way round).
    assert!(
        packets_received <= matched + 4.0 && matched <= packets_received,
        "received {packets_received} packets for {matched} matched replies"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn probe_and_mesh_share_raw_sockets_and_count_each_reply_once() {
    require_namespaces!();
    let net = TestNet::new();
    run_side_by_side(&net);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn ping_sockets_beside_a_raw_df_socket_count_each_reply_once() {
    require_namespaces!();
    let net = TestNet::new();
    net.prober
        .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    run_side_by_side(&net);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn the_first_large_payload_probe_on_a_warm_socket_succeeds() {
    require_namespaces!();
    let net = TestNet::new();
    let config = write_config("shared-engine-large.yml", CONFIG);
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    assert_eq!(probe_success(&exporter, TARGET_V4, "ttl64"), 1.0);
    // The target link's MTU is 1280: the 4000-byte probe and its reply travel as fragments.
    assert_eq!(probe_success(&exporter, TARGET_V4, "large"), 1.0);
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_replies_rejected_total{reason=\"truncated\"}"),
        0.0
    );
}
