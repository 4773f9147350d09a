//! End to end with a real Prometheus (Debian's `prometheus` package) inside the namespace test
//! network: it scrapes meshprobe's `/probe` through the blackbox relabel config of
//! config/prometheus.yml and meshprobe's mesh `/metrics`, evaluates config/meshprobe-rules.yml,
//! and the test asserts on its HTTP API: `up`, `probe_success`, loss and RTT series with their
//! labels for answering and silent targets, the recording rules and a pending alert, and every
//! query of the Grafana dashboard. meshprobe runs config/meshprobe.yml (the .deb's conffile)
//! with only its peers file path changed. `promtool check metrics` lints both outputs.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::prometheus::*;
use support::*;

/// On the prober's own network: planned by the mesh (network = the shared CIDR).
const ROUTER_V4: &str = "198.18.0.254";

/// config/meshprobe.yml with its peers file moved to `peers_file`.
fn meshprobe_config(peers_file: &Path) -> String {
    let text = std::fs::read_to_string(repo_path("config/meshprobe.yml")).expect("example");
    assert!(text.contains("[/etc/meshprobe/peers.json]"), "{text}");
    text.replace(
        "[/etc/meshprobe/peers.json]",
        &format!("[{:?}]", peers_file.display().to_string()),
    )
}

fn promtool_check_metrics(what: &str, exposition: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics on {what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn prometheus_scrapes_probe_and_mesh_through_the_shipped_examples() {
    require_namespaces!();
    require_tool(PROMETHEUS, "prometheus");
    require_tool(PROMTOOL, "prometheus");
    let net = TestNet::new();
    let peers_file = write_config(
        "peers.json",
        &serde_json::json!([
            {"targets": [ROUTER_V4], "labels": {"peer": "router"}},
            {"targets": [TARGET_V4], "labels": {"peer": "target", "network": "lab"}},
            {"targets": [SILENT_V4], "labels": {"peer": "silent", "network": "lab"}},
        ])
        .to_string(),
    );
    let meshprobe_yml = write_config("meshprobe.yml", &meshprobe_config(&peers_file));
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&meshprobe_yml)]);

    let prometheus_yml = write_config(
        "prometheus.yml",
        &prometheus_config(&[TARGET_V4, SILENT_V4, UNREACHABLE_V4]),
    );
    let config_dir = prometheus_yml.parent().expect("config dir");
    std::fs::copy(
        repo_path("config/meshprobe-rules.yml"),
        config_dir.join("meshprobe-rules.yml"),
    )
    .expect("copy rules");
    let prometheus = Prometheus::start(&net.prober, &prometheus_yml, &config_dir.join("data"), &[]);

    // Every scrape target is up: three /probe targets and the mesh /metrics.
    let up = prometheus.wait_for("up", |s| s.len() == 4 && s.iter().all(|s| value(s) == 1.0));
    assert_eq!(with_label(&up, "job", "meshprobe_icmp").len(), 3, "{up:?}");
    assert_eq!(
        single_value(&up, "job", "meshprobe"),
        1.0,
        "mesh job: {up:?}"
    );

    // /probe through the relabel rules: `instance` is the pinged target.
    let success = prometheus.wait_for("probe_success", |s| s.len() == 3);
    assert_eq!(single_value(&success, "instance", TARGET_V4), 1.0);
    assert_eq!(single_value(&success, "instance", SILENT_V4), 0.0);
    assert_eq!(single_value(&success, "instance", UNREACHABLE_V4), 0.0);
    let rtt = prometheus.query(&format!(
        "probe_icmp_duration_seconds{{phase=\"rtt\",instance=\"{TARGET_V4}\"}}"
    ));
    let rtt = rtt.expect("rtt query");
    assert!(
        rtt.len() == 1 && value(&rtt[0]) > 0.0 && value(&rtt[0]) < 0.1,
        "{rtt:?}"
    );

    // Mesh series with their labels: source (instance), destination (peer), network, address.
    let sent = prometheus.wait_for("meshprobe_mesh_sent_total", |s| {
        s.len() == 3 && s.iter().all(|s| value(s) >= 2.0)
    });
    for (peer, network, address) in [
        ("router", "198.18.0.0/24", ROUTER_V4),
        ("target", "lab", TARGET_V4),
        ("silent", "lab", SILENT_V4),
    ] {
        let series = with_label(&sent, "peer", peer);
        assert_eq!(series.len(), 1, "{peer}: {sent:?}");
        let labels = &series[0]["metric"];
        assert_eq!(labels["network"], network, "{labels}");
        assert_eq!(labels["address"], address, "{labels}");
        assert_eq!(labels["ip_protocol"], "ip4", "{labels}");
        assert_eq!(labels["instance"], "localhost:9115", "{labels}");
        assert_eq!(labels["job"], "meshprobe", "{labels}");
    }

    // The recording rules: exact loss per peer and network, median RTT for answering peers only.
    let loss = prometheus.wait_for("meshprobe:loss_ratio:rate5m", |s| s.len() == 3);
    assert_eq!(single_value(&loss, "peer", "silent"), 1.0, "{loss:?}");
    assert_eq!(single_value(&loss, "peer", "target"), 0.0, "{loss:?}");
    assert_eq!(single_value(&loss, "peer", "router"), 0.0, "{loss:?}");
    let p50 = prometheus.wait_for("meshprobe:rtt_seconds:p50_5m > 0", |s| s.len() == 2);
    for peer in ["router", "target"] {
        let seconds = single_value(&p50, "peer", peer);
        assert!(seconds > 0.0 && seconds < 0.01, "{peer}: {seconds}");
    }
    let lost = prometheus.query("meshprobe_mesh_lost_total{peer=\"silent\"}");
    assert!(value(&lost.expect("lost")[0]) >= 1.0);

    // The unreachable-peer alert is pending for the silent peer and nobody else.
    let pending = prometheus.wait_for(
        "ALERTS{alertname=\"MeshprobePeerUnreachable\",alertstate=\"pending\"}",
        |s| !s.is_empty(),
    );
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["metric"]["peer"], "silent");
    assert_eq!(pending[0]["metric"]["network"], "lab");

    // Every Grafana dashboard query runs; the mesh ones return data.
    prometheus.check_dashboard(|expr| {
        expr.contains("meshprobe_mesh_rtt_seconds_bucket")
            || expr.contains("meshprobe_mesh_sent_total")
            || expr.contains("probe_success")
    });

    // Both expositions pass promtool's linter.
    let probe = exporter.get(&format!("/probe?module=icmp&target={TARGET_V4}"));
    assert_eq!(probe.status, 200);
    promtool_check_metrics("/probe", &probe.body);
    promtool_check_metrics("/metrics", &exporter.get("/metrics").body);
}
