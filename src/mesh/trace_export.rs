//! The automatic tracer's results as the mesh exports them: the `meshprobe_mesh_path_*`
//! families on `/metrics` (text; the protobuf exposition converts the same text), each target's
//! last trace in `/mesh.json`, and the one-line summaries `/mesh` shows.
//!
//! Owns the family names, help strings and the series bound: at most one series per exported
//! label set and family, so targets that share labels (`inter_group_series: per_group`) show the
//! most recent trace among them. Reads the [`PathBook`]; never traces.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::table::TargetTable;
use super::trace_auto::{PathBook, TracedPath, target_key};
use crate::expo::{self, MetricType};
use crate::trace::render::{report_json, verdict_text};

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Per exported label set, the most recent trace of its targets, in table order.
fn rows<'a>(table: &'a TargetTable, book: &PathBook) -> Vec<(&'a str, Arc<TracedPath>)> {
    let mut rows: Vec<(&str, Arc<TracedPath>)> = Vec::new();
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for target in &table.targets {
        let Some(path) = book.get(&target_key(target)) else {
            continue;
        };
        let labels: &str = &target.rendered_labels;
        match row_of.get(labels) {
            Some(index) if rows[*index].1.traced_at < path.traced_at => rows[*index].1 = path,
            Some(_) => {}
            None => {
                row_of.insert(labels, rows.len());
                rows.push((labels, path));
            }
        }
    }
    rows
}

/// Escapes a label value for the text format.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn per_target(
    out: &mut String,
    rows: &[(&str, Arc<TracedPath>)],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&TracedPath) -> f64,
) {
    expo::family(out, name, help, metric_type);
    for (labels, path) in rows {
        let _ = write!(out, "{name}{{{labels}}} ");
        expo::go_float(out, value(path));
        out.push('\n');
    }
}

/// Appends the path families (text format).
pub fn render(out: &mut String, table: &TargetTable, book: &PathBook) {
    expo::family(
        out,
        "meshprobe_mesh_traces_total",
        "Automatic path traces run, by what triggered them (a target turning lossy or dead, or mesh.trace.interval).",
        MetricType::Counter,
    );
    for (trigger, count) in book.traces_total() {
        expo::sample(
            out,
            "meshprobe_mesh_traces_total",
            &[("trigger", trigger.as_str())],
            count as f64,
        );
    }
    expo::single(
        out,
        "meshprobe_mesh_traces_queued",
        "Automatic path traces waiting for mesh.trace.max_per_minute.",
        MetricType::Gauge,
        book.queued() as f64,
    );
    let rows = rows(table, book);
    if rows.is_empty() {
        return;
    }
    per_target(
        out,
        &rows,
        "meshprobe_mesh_path_changes_total",
        "Automatic traces of the target whose path differed from the trace before (a hop heard from in both with another address, or another hop count).",
        MetricType::Counter,
        |path| path.changes as f64,
    );
    per_target(
        out,
        &rows,
        "meshprobe_mesh_path_hops",
        "Hops to the target in its last trace (to the last hop that answered when the target was not reached).",
        MetricType::Gauge,
        |path| f64::from(path.report.hop_count()),
    );
    let name = "meshprobe_mesh_path_info";
    expo::family(
        out,
        name,
        "The last traced path to the target: each hop's address, * for a hop that never answered.",
        MetricType::Gauge,
    );
    for (labels, path) in &rows {
        let path_text = label_value(&path.report.path_text());
        let _ = writeln!(out, "{name}{{{labels},path=\"{path_text}\"}} 1");
    }
    per_target(
        out,
        &rows,
        "meshprobe_mesh_path_last_trace_timestamp_seconds",
        "When the target's last trace finished.",
        MetricType::Gauge,
        |path| unix_seconds(path.traced_at),
    );
    per_target(
        out,
        &rows,
        "meshprobe_mesh_path_loss_start_hop",
        "TTL of the hop where loss starts in the last trace (mtr's rule: every later hop and the target lose too); 0 for none.",
        MetricType::Gauge,
        |path| f64::from(path.report.loss_start.map_or(0, |start| start.ttl)),
    );
}

/// A target's last trace for `/mesh.json` (`null` when never traced).
pub fn path_json(path: Option<&TracedPath>, now: SystemTime) -> Value {
    let Some(path) = path else {
        return Value::Null;
    };
    let mut value = report_json(&path.report);
    if let Value::Object(map) = &mut value {
        map.insert("trigger".into(), json!(path.trigger.as_str()));
        map.insert("path".into(), json!(path.report.path_text()));
        map.insert("changes".into(), json!(path.changes));
        map.insert(
            "traced_at_unix_seconds".into(),
            json!(unix_seconds(path.traced_at)),
        );
        map.insert(
            "age_seconds".into(),
            json!(
                now.duration_since(path.traced_at)
                    .unwrap_or_default()
                    .as_secs_f64()
            ),
        );
    }
    value
}

/// The verdict `/mesh` lists beside a problem: "loss starts at hop N (address)".
pub fn verdict(path: &TracedPath) -> String {
    verdict_text(&path.report)
}

/// The hover text's path lines.
pub fn hover(path: &TracedPath, now: SystemTime) -> String {
    let age = now
        .duration_since(path.traced_at)
        .unwrap_or_default()
        .as_secs();
    let mut text = format!("path ({}, {age} s ago):", path.trigger.as_str());
    for hop in &path.report.hops {
        let address = hop
            .main_address()
            .map_or_else(|| "*".to_string(), |a| a.to_string());
        let _ = write!(
            text,
            "\n  {} {address} {:.0} % loss",
            hop.ttl,
            hop.loss_ratio() * 100.0
        );
    }
    let _ = write!(text, "\n{}", verdict(path));
    text
}
