//! Native histograms end to end: Debian's Prometheus 2.42 with
//! `--enable-feature=native-histograms` scrapes meshprobe (protobuf negotiated) probing 24
//! kernel-answered targets (AnyIP in the target namespace) through the shipped
//! config/prometheus.yml and config/meshprobe-rules.yml.
//!
//! Asserts: the median from `histogram_quantile(0.5, rate(meshprobe_mesh_rtt_seconds[1m]))` for
//! every target agrees with the exact median `/mesh.json` reports (within 10 %, the bucket
//! width being 4.4 %); the TSDB head holds at most 8 series per target for the mesh families;
//! the recording rule's `or` fallback answers from the native histogram; and `/probe` as
//! protobuf (decoded with prost) carries the same families, labels and success as text.

mod support;

use std::io::Read;
use std::time::Duration;

use meshprobe::proto::{self, MetricFamily};
use serde_json::Value;
use support::prometheus::*;
use support::*;

const TARGETS: usize = 24;
/// 100 probes at 0.6 s cover the last minute: the same probes as `rate(…[1m])`.
const MESH_INTERVAL: &str = "600ms";
const ACCEPT_PROTOBUF: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,text/plain;version=0.0.4;q=0.5";

fn target_address(index: usize) -> String {
    format!("198.18.6.{}", index + 1)
}

/// One raw exchange (the body may be binary), from inside the exporter's namespace; the head
/// comes back in lower case.
fn get_bytes(exporter: &Exporter, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    let request = build_request("GET", path, headers);
    let port = exporter.port;
    let (head, body) = in_namespace(&exporter.namespace, move || {
        http_exchange_raw(port, &request)
    })
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (head.to_ascii_lowercase(), body)
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families
        .iter()
        .find(|f| f.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
}

/// (labels, value) of every metric of a gauge family.
fn gauge_samples(family: &MetricFamily) -> Vec<(Vec<(String, String)>, f64)> {
    family
        .metric
        .iter()
        .map(|metric| {
            let labels = metric
                .label
                .iter()
                .map(|l| {
                    (
                        l.name.clone().unwrap_or_default(),
                        l.value.clone().unwrap_or_default(),
                    )
                })
                .collect();
            let value = metric
                .gauge
                .as_ref()
                .and_then(|g| g.value)
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (see README)"]
fn prometheus_ingests_native_rtt_histograms_that_match_the_exact_median() {
    require_namespaces!();
    require_tool(PROMETHEUS, "prometheus");
    let net = TestNet::new();
    // AnyIP: the target's kernel answers echo for the whole /24; the router sends it there.
    net.target
        .ip_batch("route add local 198.18.6.0/24 dev lo\n");
    net.router
        .ip_batch("route add 198.18.6.0/24 via 198.18.1.1\n");
    let peers: Vec<Value> = (0..TARGETS)
        .map(|i| {
            serde_json::json!({"targets": [target_address(i)],
                               "labels": {"peer": format!("t{i}"), "network": "lab"}})
        })
        .collect();
    let peers_file = write_config("peers.json", &Value::Array(peers).to_string());
    let meshprobe_yml = write_config(
        "meshprobe.yml",
        &format!(
            "modules: {{icmp: {{prober: icmp, timeout: 5s}}}}\nmesh:\n  interval: {MESH_INTERVAL}\n  \
             timeout: 500ms\n  histogram: both\n  peers: {{files: [{:?}]}}\n",
            peers_file.display().to_string()
        ),
    );
    let exporter = Exporter::start(&net.prober, &["--config.file", path_str(&meshprobe_yml)]);

    let prometheus_yml = write_config("prometheus.yml", &prometheus_config(&[TARGET_V4]));
    let config_dir = prometheus_yml.parent().expect("config dir");
    std::fs::copy(
        repo_path("config/meshprobe-rules.yml"),
        config_dir.join("meshprobe-rules.yml"),
    )
    .expect("copy rules");
    let prometheus = Prometheus::start(
        &net.prober,
        &prometheus_yml,
        &config_dir.join("data"),
        &["--enable-feature=native-histograms"],
    );

    // /probe as protobuf: same families, labels and success as the text format.
    let probe_path = format!("/probe?module=icmp&target={TARGET_V4}");
    let (head, body) = get_bytes(&exporter, &probe_path, &[("Accept", ACCEPT_PROTOBUF)]);
    let content_type = format!("content-type: {}", proto::CONTENT_TYPE.to_ascii_lowercase());
    assert!(head.contains(&content_type), "{head}");
    let families = proto::decode_all(&body).expect("protobuf /probe decodes");
    let text = Metrics::parse(&exporter.get(&probe_path).body);
    let success = gauge_samples(family(&families, "probe_success"));
    assert_eq!(success, [(vec![], text.value("probe_success"))]);
    assert_eq!(success[0].1, 1.0);
    let durations = gauge_samples(family(&families, "probe_icmp_duration_seconds"));
    let phases: Vec<&str> = durations.iter().map(|(l, _)| l[0].1.as_str()).collect();
    assert_eq!(phases, ["resolve", "rtt", "setup"]);
    for (labels, seconds) in &durations {
        let series = format!("probe_icmp_duration_seconds{{phase=\"{}\"}}", labels[0].1);
        assert!(text.has(&series), "{series}");
        assert!((0.0..0.1).contains(seconds), "{series} = {seconds}");
    }
    let text_names: Vec<String> = text.types.keys().cloned().collect();
    let mut proto_names: Vec<String> = families.iter().filter_map(|f| f.name.clone()).collect();
    proto_names.sort();
    assert_eq!(proto_names, text_names);

    // Prometheus scraped the mesh as native histograms: one value per target from the
    // native series, not from `_bucket`.
    let quantile = "histogram_quantile(0.5, rate(meshprobe_mesh_rtt_seconds[1m]))";
    prometheus.wait_for(quantile, |s| s.len() == TARGETS);

    // /metrics as Prometheus fetches it (protobuf, gzip): a native histogram per target.
    let (head, body) = get_bytes(
        &exporter,
        "/metrics",
        &[("Accept", ACCEPT_PROTOBUF), ("Accept-Encoding", "gzip")],
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_end(&mut plain)
        .expect("gunzip");
    let families = proto::decode_all(&plain).expect("protobuf /metrics decodes");
    let rtt = family(&families, "meshprobe_mesh_rtt_seconds");
    assert_eq!(rtt.metric.len(), TARGETS);
    for metric in &rtt.metric {
        let histogram = metric.histogram.as_ref().expect("histogram");
        assert_eq!(histogram.schema, Some(4));
        assert!(!histogram.positive_span.is_empty() && histogram.bucket.len() == 20);
    }
    let classic = prometheus.query("meshprobe_mesh_rtt_seconds_bucket");
    assert_eq!(
        classic.map(|s| s.len()),
        Ok(0),
        "2.42 keeps only the native part"
    );

    // Let the 1-minute window fill with the same probes /mesh.json's window holds.
    std::thread::sleep(Duration::from_secs(62));
    let estimates = prometheus.query(quantile).expect("quantile");
    let view: Value = serde_json::from_str(&exporter.get("/mesh.json").body).expect("mesh.json");
    let targets = view["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), TARGETS);
    let mut worst = 0.0f64;
    for target in targets {
        let peer = target["peer"].as_str().expect("peer");
        let exact = target["rtt_p50_seconds"].as_f64().expect("p50");
        let estimate = value(with_label(&estimates, "peer", peer)[0]);
        let error = (estimate / exact - 1.0).abs();
        worst = worst.max(error);
        assert!(
            error <= 0.10,
            "{peer}: native p50 {estimate} vs exact {exact} ({:.1} %)",
            error * 100.0
        );
    }
    eprintln!(
        "native vs exact median: worst relative difference {:.2} %",
        worst * 100.0
    );

    // The recording rule answers from the native histogram through its `or` fallback.
    let p50 = prometheus.wait_for("meshprobe:rtt_seconds:p50_5m", |s| s.len() == TARGETS);
    assert!(
        p50.iter().all(|s| value(s) > 0.0 && value(s) < 0.01),
        "{p50:?}"
    );

    // Every Grafana dashboard query runs; the RTT quantiles answer from the native histogram.
    prometheus.check_dashboard(|expr| expr.contains("histogram_quantile"));

    // At most 8 head series per target for the per-target mesh families: counted by name from
    // the TSDB status (top 10 names) and, to be sure none was cut off, from a query.
    let status = prometheus.api("/api/v1/status/tsdb").expect("tsdb status");
    let by_name = status["seriesCountByMetricName"]
        .as_array()
        .expect("series by name");
    let mesh_in_status: f64 = by_name
        .iter()
        .filter(|entry| {
            entry["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("meshprobe_mesh_"))
        })
        .map(|entry| entry["value"].as_f64().unwrap_or(0.0))
        .filter(|count| *count >= TARGETS as f64)
        .sum();
    let counted = prometheus
        .query("count by (__name__) ({__name__=~\"meshprobe_mesh_.+\", peer!=\"\"})")
        .expect("series count");
    let per_target: f64 = counted.iter().map(value).sum::<f64>() / TARGETS as f64;
    eprintln!(
        "head series: {} in total; mesh families {per_target} per target ({counted:?}); status: {by_name:?}",
        status["headStats"]["numSeries"]
    );
    assert!(mesh_in_status / TARGETS as f64 <= per_target);
    assert!(per_target <= 8.0, "{counted:?}");
}
