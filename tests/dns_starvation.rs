//! Issue 13, finding 4: host-name lookups whose DNS server never answers must not starve the
//! server. The prober namespace's resolv.conf points at an address the test router blackholes
//! (queries leave, nothing comes back), 600 probes of distinct names arrive at once, and
//! meanwhile `/metrics` and `/-/healthy` must answer quickly, the exporter's thread count must
//! stay bounded, and lookups beyond `--dns.max-concurrency` must fail at once with
//! `probe_icmp_failure_reason{reason="resolution"}`.

mod support;

use std::time::Duration;

use support::attack::{ProcStats, fire_concurrent, watch};
use support::*;

const PROBES: usize = 600;

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn hanging_dns_lookups_do_not_starve_metrics_or_health() {
    require_namespaces!();
    raise_open_file_limit();
    let net = TestNet::new();
    net.prober.etc_file(
        "resolv.conf",
        &format!("nameserver {SILENT_V4}\noptions timeout:5 attempts:2\n"),
    );
    let config = write_config(
        "dns.yml",
        "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n    icmp:\n      preferred_ip_protocol: ip4\n",
    );
    let exporter = Exporter::start(
        &net.prober,
        &[
            "--config.file",
            path_str(&config),
            "--dns.max-concurrency",
            "32",
        ],
    );
    let idle = ProcStats::read(exporter.child.id());
    let paths = (0..PROBES)
        .map(|i| format!("/probe?module=icmp&target=host{i}.hang.test"))
        .collect();
    let clients = fire_concurrent(&exporter, paths);
    std::thread::sleep(Duration::from_millis(300));
    let seen = watch(
        &exporter,
        &["/metrics", "/-/healthy"],
        Duration::from_secs(5),
        Duration::from_millis(200),
    );
    let mut fast_failures = 0;
    for client in clients {
        let response = client.join().expect("client thread").expect("probe answer");
        assert_eq!(response.status, 200, "{}", response.body);
        let metrics = Metrics::parse(&response.body);
        assert_eq!(metrics.value("probe_success"), 0.0);
        assert_eq!(
            metrics.value("probe_icmp_failure_reason{reason=\"resolution\"}"),
            1.0
        );
        if metrics.value("probe_duration_seconds") < 0.5 {
            fast_failures += 1;
        }
    }
    let metrics = exporter.metrics();
    eprintln!(
        "figures: idle {idle:?}; under {PROBES} hanging lookups: worst /metrics or /-/healthy \
         {:?} over {} requests, peak {:?}; {fast_failures} probes failed at once; refused {}",
        seen.worst,
        seen.samples,
        seen.peak,
        metrics.value("meshprobe_dns_lookups_refused_total"),
    );
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert!(
        seen.worst < Duration::from_secs(1),
        "worst latency {:?}",
        seen.worst
    );
    assert!(
        seen.peak.threads < idle.threads + 32 + 16,
        "threads: idle {} peak {}",
        idle.threads,
        seen.peak.threads
    );
    assert!(
        fast_failures >= PROBES - 32 - 20,
        "{fast_failures} fast failures"
    );
    assert!(metrics.value("meshprobe_dns_lookups_refused_total") >= (PROBES - 32) as f64);
    assert!(metrics.value("meshprobe_dns_lookups_in_flight") <= 32.0);
}
