//! 1000 concurrent `/probe` requests to 1000 different addresses through the real binary: every
//! one must be answered, and answered for its own target (checked through the address hash and
//! the engine's counters), with no reply rejected or sent to the wrong probe.

mod support;

use std::net::IpAddr;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROBES: usize = 1000;

async fn probe(port: u16, target: String) -> (String, HttpResponse) {
    let request = build_request("GET", &format!("/probe?module=icmp&target={target}"), &[]);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    (target, parse_response(&raw).expect("response"))
}

fn concurrent_probes_are_all_answered_correctly(ping_sockets: bool) {
    raise_open_file_limit();
    let net = TestNet::new();
    if ping_sockets {
        net.prober
            .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    }
    let targets = net.add_target_addresses(PROBES);
    let config = write_config(
        "c.yml",
        "modules:\n  icmp:\n    prober: icmp\n    timeout: 10s\n",
    );
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&config)]);
    let port = exporter.port;
    let results = net.prober.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let tasks: Vec<_> = targets
                .into_iter()
                .map(|t| tokio::spawn(probe(port, t)))
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.expect("probe task"));
            }
            results
        })
    });
    assert_eq!(results.len(), PROBES);
    for (target, response) in &results {
        assert_eq!(response.status, 200, "{target}: {}", response.body);
        let metrics = Metrics::parse(&response.body);
        assert_eq!(
            metrics.value("probe_success"),
            1.0,
            "{target}: {}",
            response.body
        );
        let address: IpAddr = target.parse().expect("address");
        assert_eq!(
            metrics.value("probe_ip_addr_hash"),
            fnv1a(address),
            "{target} got another probe's answer"
        );
        let rtt = metrics.value("probe_icmp_duration_seconds{phase=\"rtt\"}");
        assert!(rtt > 0.0 && rtt < 5.0, "{target}: rtt {rtt}");
    }
    let metrics = exporter.metrics();
    assert_eq!(
        metrics.value("meshprobe_packets_sent_total{ip_protocol=\"ip4\"}"),
        PROBES as f64
    );
    assert_eq!(
        metrics.value("meshprobe_replies_matched_total"),
        PROBES as f64
    );
    for reason in [
        "malformed",
        "truncated",
        "bad_checksum",
        "unknown_probe",
        "payload_mismatch",
        "unrelated",
    ] {
        assert_eq!(
            metrics.value(&format!(
                "meshprobe_replies_rejected_total{{reason=\"{reason}\"}}"
            )),
            0.0,
            "{reason}"
        );
    }
    assert_eq!(metrics.value("meshprobe_probes_in_flight"), 0.0);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn thousand_concurrent_probes_on_raw_sockets() {
    require_namespaces!();
    concurrent_probes_are_all_answered_correctly(false);
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn thousand_concurrent_probes_on_ping_sockets() {
    require_namespaces!();
    concurrent_probes_are_all_answered_correctly(true);
}
