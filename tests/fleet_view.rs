//! The fleet view: `config/grafana-mesh-matrix-panel.json`, a Grafana dashboard whose tables show
//! the N×N source × peer matrix from Prometheus. Checks that every PromQL expression in it uses
//! only metric and label names meshprobe's mesh `/metrics` really emits (rendered by the library
//! itself), that `promtool` parses every expression, and that promtool evaluates the p50 and loss
//! matrix expressions to the right values on a synthetic two-node mesh.
//!
//! promtool comes from Debian's `prometheus` package; the promtool tests are `#[ignore]`d and
//! fail without it (`./test.sh` installs it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshprobe::mesh::stats::{RenderRow, TargetStats, render, render_labels};
use serde_json::Value;

#[path = "support/needs.rs"]
mod needs;

const PANEL_FILE: &str = "config/grafana-mesh-matrix-panel.json";
const PROMTOOL: &str = "/usr/bin/promtool";
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PANEL_FILE);
    let text = std::fs::read_to_string(&path).expect("panel file");
    serde_json::from_str(&text).expect("panel file is JSON")
}

/// Every `expr` in the dashboard, with `$network` replaced by a match-all regex.
fn expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => found.push(expr.replace("$network", ".*")),
                    _ => expressions(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

fn all_expressions() -> Vec<String> {
    let mut found = Vec::new();
    expressions(&dashboard(), &mut found);
    assert!(
        found.len() >= 3,
        "p50 matrix, loss matrix, worst pairs: {found:?}"
    );
    found
}

/// Series names and label names of a mesh `/metrics` body as meshprobe renders it (text, plus
/// the native histogram series of each histogram family).
fn emitted_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let buckets = [0.001, 0.01];
    let mut stats = TargetStats::new(buckets.len());
    stats.record_sent();
    stats.record_reply(&buckets, 0.002, 0, 0);
    let labels = render_labels(&meshprobe::mesh::labels::LabelSet::new([
        ("address", "198.18.0.2"),
        ("ip_protocol", "ip4"),
        ("network", "198.18.0.0/24"),
        ("peer", "b"),
    ]));
    let rows = [RenderRow {
        labels: &labels,
        stats: stats.snapshot(),
    }];
    let mut text = String::new();
    let _ = render(&mut text, &rows, &buckets, &mut |_chunk: &mut String| {
        std::ops::ControlFlow::Continue(())
    });
    let (mut series, mut label_names) = (BTreeSet::new(), BTreeSet::new());
    // A histogram family is also a series itself: the native histogram a protobuf scrape gets.
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        if let Some(family) = line.strip_suffix(" histogram") {
            series.insert(family.to_string());
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = line.split_once('{').expect("labelled sample");
        series.insert(name.to_string());
        for pair in rest.split('}').next().unwrap_or_default().split(',') {
            label_names.insert(pair.split('=').next().unwrap_or_default().to_string());
        }
    }
    label_names.extend(TARGET_LABELS.map(String::from));
    (series, label_names)
}

#[test]
fn panel_queries_use_only_names_meshprobe_emits() {
    let (series, labels) = emitted_names();
    for expr in all_expressions() {
        let words: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for metric in words.iter().filter(|w| w.starts_with("meshprobe_")) {
            assert!(series.contains(*metric), "{metric} is not emitted: {expr}");
        }
        for grouping in expr.split("by (").skip(1) {
            let names = grouping.split(')').next().unwrap_or_default();
            for name in names.split(',').map(str::trim) {
                assert!(labels.contains(name), "label {name} does not exist: {expr}");
            }
        }
        for selector in expr.split('{').skip(1) {
            let matcher = selector.split(['=', '!']).next().unwrap_or_default();
            assert!(
                labels.contains(matcher),
                "label {matcher} does not exist: {expr}"
            );
        }
    }
}

fn require_promtool() {
    needs::tool(PROMTOOL, "prometheus");
}

fn scratch_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpw-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write scratch file");
    path
}

/// Runs `promtool <command…> <file>`, then deletes the file (kept when promtool fails).
fn promtool(command: &[&str], file: &Path) {
    let output = Command::new(PROMTOOL)
        .args(command)
        .arg(file)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {command:?} {} failed:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_file(file);
    if let Some(dir) = file.parent() {
        // Succeeds only once the other test's file is gone too.
        let _ = std::fs::remove_dir(dir);
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("string to JSON")
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus): run with --include-ignored (./test.sh)"]
fn promtool_parses_every_panel_query() {
    require_promtool();
    let mut rules = String::from("groups:\n  - name: meshprobe_mesh_matrix_panel\n    rules:\n");
    for (index, expr) in all_expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: meshprobe_panel_query_{index}\n        expr: {}\n",
            quoted(expr)
        ));
    }
    let path = scratch_file("panel-rules.yml", &rules);
    promtool(&["check", "rules"], &path);
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus): run with --include-ignored (./test.sh)"]
fn promtool_evaluates_the_matrix_queries_on_a_two_node_mesh() {
    require_promtool();
    let expressions = all_expressions();
    let find = |needle: &str| {
        expressions
            .iter()
            .find(|e| e.starts_with(needle))
            .unwrap_or_else(|| panic!("no query starting {needle}"))
            .clone()
    };
    let (p50, loss) = (find("histogram_quantile(0.5"), find("100 * sum"));
    // Node a pings b: 60 probes a minute, 15 lost, every reply in (1, 3] × 2^-10 s: p50 2^-9 s.
    // Node b pings a: no loss, every reply at or under 2^-10 s: p50 2^-11 s. (Powers of two,
    // because promtool compares the values exactly.)
    let series = |name: &str, source: &str, peer: &str, extra: &str, per_minute: u32| {
        format!(
            "      - series: '{name}{{instance=\"{source}:9115\",job=\"mesh\",peer=\"{peer}\",network=\"lab\"{extra}}}'\n        values: '0+{per_minute}x15'\n"
        )
    };
    let mut input = String::new();
    for (source, peer, lost, fast) in [("a", "b", 15, 0), ("b", "a", 0, 60)] {
        input += &series("meshprobe_mesh_sent_total", source, peer, "", 60);
        input += &series("meshprobe_mesh_lost_total", source, peer, "", lost);
        let (first, second) = ("0.0009765625", "0.0029296875");
        for (le, count) in [(first, fast), (second, 60 - lost), ("+Inf", 60 - lost)] {
            let extra = format!(",le=\"{le}\"");
            input += &series(
                "meshprobe_mesh_rtt_seconds_bucket",
                source,
                peer,
                &extra,
                count,
            );
        }
    }
    let expect = |expr: &str, a_to_b: f64, b_to_a: f64| {
        format!(
            "      - expr: {}\n        eval_time: 15m\n        exp_samples:\n\
             \x20         - labels: '{{instance=\"a:9115\",peer=\"b\"}}'\n            value: {a_to_b}\n\
             \x20         - labels: '{{instance=\"b:9115\",peer=\"a\"}}'\n            value: {b_to_a}\n",
            quoted(expr)
        )
    };
    let tests = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n{}{}",
        expect(&p50, 0.001953125, 0.00048828125),
        expect(&loss, 25.0, 0.0)
    );
    let path = scratch_file("panel-tests.yml", &tests);
    promtool(&["test", "rules"], &path);
}
