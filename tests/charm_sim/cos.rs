//! What COS does with the charm's relation data, re-stated in Rust for the tests (no Python
//! here): the `prometheus_scrape` consumer's job rendering (canonical/prometheus-k8s-operator
//! `lib/charms/prometheus_k8s/v0/prometheus_scrape.py`, LIBPATCH 61:
//! `MetricsEndpointConsumer._static_scrape_config` and
//! `PrometheusConfig.expand_wildcard_targets_into_individual_jobs`), the `cos_agent` consumer's
//! label merge (canonical/grafana-agent-operator `lib/charms/grafana_agent/v0/cos_agent.py`,
//! LIBPATCH 26: `COSAgentRequirer.metrics_jobs`), the topology filling of alert rules, and the
//! decoding of dashboards (`LZMABase64`, via Python's own lzma module).
//!
//! Written from reading those functions, not copied. It checks shapes the tests assert on, and
//! does nothing the libraries do not.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The keys the provider library lets through (`ALLOWED_KEYS`).
const ALLOWED_KEYS: &[&str] = &[
    "job_name",
    "metrics_path",
    "static_configs",
    "scrape_interval",
    "scrape_timeout",
    "proxy_url",
    "relabel_configs",
    "metric_relabel_configs",
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "scheme",
    "basic_auth",
    "tls_config",
    "authorization",
    "params",
];

fn parse(text: Option<&String>, what: &str) -> Value {
    serde_json::from_str(text.map_or("null", String::as_str))
        .unwrap_or_else(|e| panic!("{what} is not JSON: {e}"))
}

/// `juju_*` labels of `scrape_metadata` (`JujuTopology.label_matcher_dict`: no unit).
pub fn topology_labels(metadata: &Value) -> Map<String, Value> {
    let mut labels = Map::new();
    for (key, label) in [
        ("model", "juju_model"),
        ("model_uuid", "juju_model_uuid"),
        ("application", "juju_application"),
        ("charm_name", "juju_charm"),
    ] {
        if let Some(value) = metadata[key].as_str().filter(|v| !v.is_empty()) {
            labels.insert(label.into(), json!(value));
        }
    }
    labels
}

fn relabel(with_unit: bool) -> Value {
    let mut sources = vec!["juju_model", "juju_model_uuid", "juju_application"];
    if with_unit {
        sources.push("juju_unit");
    }
    json!({"source_labels": sources, "separator": "_", "target_label": "instance", "regex": "(.*)"})
}

/// Host of `host[:port]` or `[v6]:port`.
fn host(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => target,
    }
}

/// The jobs Prometheus gets from one `metrics-endpoint` relation: the app bag and, per unit,
/// its `prometheus_scrape_unit_address`.
pub fn prometheus_scrape_jobs(
    app: &BTreeMap<String, String>,
    unit_addresses: &BTreeMap<String, String>,
) -> Vec<Value> {
    let jobs = parse(app.get("scrape_jobs"), "scrape_jobs");
    let metadata = parse(app.get("scrape_metadata"), "scrape_metadata");
    let topology = topology_labels(&metadata);
    let uuid8: String = metadata["model_uuid"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(8)
        .collect();
    let identifier = format!(
        "{}_{uuid8}_{}",
        metadata["model"].as_str().unwrap_or(""),
        metadata["application"].as_str().unwrap_or("")
    )
    .replace('/', "_");
    let prefix = format!("juju_{identifier}_prometheus_scrape");
    let by_host: BTreeMap<&str, &str> = unit_addresses
        .iter()
        .map(|(unit, address)| (address.as_str(), unit.as_str()))
        .collect();
    let mut out = Vec::new();
    for job in jobs.as_array().expect("scrape_jobs is a list") {
        let mut job: Map<String, Value> = job
            .as_object()
            .expect("job is a map")
            .iter()
            .filter(|(k, _)| ALLOWED_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let name = match job.get("job_name").and_then(Value::as_str) {
            Some(n) => format!("{prefix}_{n}"),
            None => prefix.clone(),
        };
        job.insert("job_name".into(), json!(name));
        job.entry("metrics_path").or_insert(json!("/metrics"));
        let relabels = job
            .get("relabel_configs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let per_unit = |config: &Value, unit: &str, targets: Vec<String>| -> Value {
            let mut labels = topology.clone();
            labels.insert("juju_unit".into(), json!(unit));
            for (k, v) in config["labels"].as_object().into_iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            let mut rules = relabels.clone();
            rules.push(relabel(true));
            let mut j = job.clone();
            let num = unit.rsplit('/').next().unwrap_or(unit);
            j.insert("job_name".into(), json!(format!("{name}-{num}")));
            j.insert("relabel_configs".into(), json!(rules));
            j.insert(
                "static_configs".into(),
                json!([{"labels": labels, "targets": targets}]),
            );
            Value::Object(j)
        };
        let mut unmatched_configs = Vec::new();
        for config in job
            .get("static_configs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let targets: Vec<String> = config["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            let (wild, plain): (Vec<String>, Vec<String>) =
                targets.into_iter().partition(|t| t.starts_with('*'));
            let mut matched: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            let mut unmatched = Vec::new();
            for target in plain {
                match by_host.get(host(&target)) {
                    Some(unit) => matched.entry(unit).or_default().push(target),
                    None => unmatched.push(target),
                }
            }
            if !unmatched.is_empty() {
                let mut labels = topology.clone();
                for (k, v) in config["labels"].as_object().into_iter().flatten() {
                    labels.insert(k.clone(), v.clone());
                }
                unmatched_configs.push(json!({"labels": labels, "targets": unmatched}));
            }
            for (unit, targets) in matched {
                out.push(per_unit(&config, unit, targets));
            }
            if !wild.is_empty() {
                for (unit, address) in unit_addresses {
                    let targets = wild.iter().map(|t| t.replacen('*', address, 1)).collect();
                    out.push(per_unit(&config, unit, targets));
                }
            }
        }
        if !unmatched_configs.is_empty() {
            let mut j = job.clone();
            let mut rules = relabels.clone();
            rules.push(relabel(false));
            j.insert("relabel_configs".into(), json!(rules));
            j.insert("static_configs".into(), json!(unmatched_configs));
            out.push(Value::Object(j));
        }
    }
    // `_dedupe_job_names`: a name used twice gets a suffix.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for job in &mut out {
        let name = job["job_name"].as_str().unwrap_or("").to_string();
        let count = seen.entry(name.clone()).or_default();
        if *count > 0 {
            job["job_name"] = json!(format!("{name}_{count}"));
        }
        *count += 1;
    }
    out
}

/// The jobs grafana-agent / the OpenTelemetry collector get from one unit's `cos-agent` bag:
/// every static_configs entry gains the unit's topology (which wins over the job's labels).
pub fn cos_agent_jobs(config: &Value, model: &str, model_uuid: &str, unit: &str) -> Vec<Value> {
    let app = unit.split('/').next().unwrap_or(unit);
    let mut jobs = config["metrics_scrape_jobs"]
        .as_array()
        .cloned()
        .expect("metrics_scrape_jobs");
    for job in &mut jobs {
        for sc in job["static_configs"].as_array_mut().into_iter().flatten() {
            let mut labels = sc["labels"].as_object().cloned().unwrap_or_default();
            for (k, v) in [
                ("juju_model", model),
                ("juju_model_uuid", model_uuid),
                ("juju_application", app),
                ("juju_unit", unit),
            ] {
                labels.insert(k.into(), json!(v));
            }
            sc["labels"] = Value::Object(labels);
        }
    }
    jobs
}

/// Alert rules with `%%juju_topology%%` replaced by the matchers the libraries inject (from
/// each rule's `juju_model`, `juju_model_uuid`, `juju_application` labels); with `strip`, the
/// placeholder is only removed (what the libraries do when cos-tool is missing).
pub fn fill_topology(rules: &Value, strip: bool) -> Value {
    let mut rules = rules.clone();
    for group in rules["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            let labels = rule["labels"].clone();
            let matchers: Vec<String> = ["juju_model", "juju_model_uuid", "juju_application"]
                .iter()
                .filter_map(|k| labels[*k].as_str().map(|v| format!("{k}={v:?}")))
                .collect();
            let expr = rule["expr"].as_str().expect("expr").to_string();
            let filled = if strip {
                expr.replace("%%juju_topology%%,", "")
                    .replace("%%juju_topology%%", "")
            } else {
                expr.replace("%%juju_topology%%", &matchers.join(","))
            };
            rule["expr"] = json!(filled);
        }
    }
    rules
}

/// `LZMABase64.decompress`, with Python's lzma module (the decoder COS itself uses).
pub fn decode_dashboard(encoded: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64, lzma, sys; sys.stdout.write(lzma.decompress(base64.b64decode(sys.stdin.read())).decode())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(encoded.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "lzma.decompress failed");
    serde_json::from_slice(&out.stdout).expect("a dashboard decompresses to JSON")
}
