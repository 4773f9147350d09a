//! The charm's Grafana dashboards as COS receives them: config/grafana-dashboard.json (overview)
//! and config/grafana-mesh-matrix-panel.json (mesh matrix), embedded at build time, rewritten for
//! COS and encoded the way the COS libraries encode dashboards (xz-compressed JSON in base64:
//! cos-lib `LZMABase64`), for the `cos-agent` unit bag and the `grafana-dashboard` app bag.
//!
//! The COS rewrite: the datasource variable is `prometheusds` (the name COS Grafana substitutes),
//! the Juju topology variables `juju_model`, `juju_model_uuid`, `juju_application` and `juju_unit`
//! come first, every query matches on them (as the grafana_dashboard library's label injection
//! would), and the source of a measurement is `juju_unit` rather than `instance` (COS rewrites
//! `instance`). Pure functions; no I/O.

use std::io::Write;

use base64::Engine;
use serde_json::{Value, json};

use super::cos::{CHARM_NAME, Topology};
use super::promql::{self, Matcher};

/// (file stem, content) of each shipped dashboard.
const SOURCES: &[(&str, &str)] = &[
    (
        "grafana-dashboard",
        include_str!("../../config/grafana-dashboard.json"),
    ),
    (
        "grafana-mesh-matrix-panel",
        include_str!("../../config/grafana-mesh-matrix-panel.json"),
    ),
];

/// The topology variables, in the order COS dashboards list them.
pub const TOPOLOGY_VARIABLES: &[&str] = &[
    "juju_model",
    "juju_model_uuid",
    "juju_application",
    "juju_unit",
];

const DATASOURCE: &str = "${prometheusds}";

/// Datasource references in the sources, all replaced by `${prometheusds}`.
const OLD_DATASOURCES: &[&str] = &["${datasource}", "$datasource", "${DS_PROMETHEUS}"];

/// `label_values(up{<earlier variables>}, <name>)` variables, as COS Grafana adds them.
fn topology_variables() -> Vec<Value> {
    let mut variables = vec![json!({
        "name": "prometheusds", "label": "Prometheus datasource", "type": "datasource",
        "query": "prometheus", "hide": 0, "refresh": 1, "current": {},
    })];
    for (index, name) in TOPOLOGY_VARIABLES.iter().enumerate() {
        let filter: Vec<String> = TOPOLOGY_VARIABLES[..index]
            .iter()
            .map(|earlier| format!("{earlier}=~\"${earlier}\""))
            .collect();
        let query = format!("label_values(up{{{}}},{name})", filter.join(","));
        variables.push(json!({
            "name": name,
            "label": name.replace('_', " ").replacen("juju", "Juju", 1),
            "type": "query",
            "datasource": {"type": "prometheus", "uid": DATASOURCE},
            "definition": query,
            "query": {"query": query, "refId": "StandardVariableQuery"},
            "includeAll": true, "multi": true, "allValue": ".*", "refresh": 1, "hide": 0,
            "sort": 1, "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
        }));
    }
    variables
}

/// The matchers every COS query gets: each topology variable, as a regex.
fn topology_matchers() -> Vec<Matcher> {
    TOPOLOGY_VARIABLES
        .iter()
        .map(|name| Matcher::new(name, "=~", &format!("${name}")))
        .collect()
}

/// A query of the sources rewritten for COS: `instance` (the scraping exporter) becomes
/// `juju_unit`, the `source` variable becomes `juju_unit`, and the topology matchers are added.
fn cos_expr(expr: &str) -> String {
    let renamed = promql::rename_label(expr, "instance", "juju_unit")
        .replace("${source}", "${juju_unit}")
        .replace("$source", "$juju_unit");
    promql::inject(&renamed, &topology_matchers())
}

/// `label_values(selector, label)` with the selector rewritten like a panel query.
fn cos_variable_query(query: &str) -> String {
    match query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((selector, label)) => format!("label_values({},{label}", cos_expr(selector.trim())),
        None => query.to_string(),
    }
}

/// Applies `f` to every string inside `value`.
fn map_strings(value: &mut Value, f: &dyn Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| map_strings(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| map_strings(v, f)),
        _ => {}
    }
}

fn rewrite_panel(panel: &mut Value) {
    let probe = panel["targets"].to_string().contains("probe_");
    if let Some(targets) = panel.get_mut("targets").and_then(Value::as_array_mut) {
        for target in targets {
            if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                target["expr"] = Value::String(cos_expr(expr));
            }
            if let Some(legend) = target.get("legendFormat").and_then(Value::as_str) {
                let source = if probe {
                    "{{juju_unit}} → {{probe_target}}"
                } else {
                    "{{juju_unit}}"
                };
                target["legendFormat"] = Value::String(legend.replace("{{instance}}", source));
            }
        }
    }
    // Table transformations and overrides name the row label.
    for key in ["transformations", "fieldConfig"] {
        if let Some(part) = panel.get_mut(key) {
            map_strings(part, &|s| match s.strip_prefix("instance") {
                Some(rest) if rest.is_empty() || rest.starts_with('\\') => {
                    format!("juju_unit{rest}")
                }
                _ => s.to_string(),
            });
        }
    }
    if let Some(Value::Object(rename)) = panel
        .pointer_mut("/transformations/0/options/renameByName")
        .map(Value::take)
    {
        let renamed = rename
            .into_iter()
            .map(|(k, v)| {
                (
                    if k == "instance" {
                        "juju_unit".into()
                    } else {
                        k
                    },
                    v,
                )
            })
            .collect();
        if let Some(slot) = panel.pointer_mut("/transformations/0/options/renameByName") {
            *slot = Value::Object(renamed);
        }
    }
    if let Some(nested) = panel.get_mut("panels").and_then(Value::as_array_mut) {
        nested.iter_mut().for_each(rewrite_panel);
    }
}

/// One source dashboard rewritten for COS (see the module doc).
pub fn cos_dashboard(source: &Value) -> Value {
    let mut dashboard = source.clone();
    if let Some(map) = dashboard.as_object_mut() {
        map.remove("__inputs");
    }
    map_strings(&mut dashboard, &|s| {
        OLD_DATASOURCES
            .iter()
            .fold(s.to_string(), |s, old| s.replace(old, DATASOURCE))
    });
    if let Some(panels) = dashboard.get_mut("panels").and_then(Value::as_array_mut) {
        panels.iter_mut().for_each(rewrite_panel);
    }
    let kept: Vec<Value> = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !matches!(v["name"].as_str(), Some("datasource" | "source")))
        .map(|mut variable| {
            for key in ["definition", "query"] {
                if let Some(query) = variable[key].as_str() {
                    variable[key] = Value::String(cos_variable_query(query));
                }
                if let Some(query) = variable[key]["query"].as_str() {
                    variable[key]["query"] = Value::String(cos_variable_query(query));
                }
            }
            variable
        })
        .collect();
    let mut list = topology_variables();
    list.extend(kept);
    dashboard["templating"] = json!({ "list": list });
    let mut tags: Vec<Value> = dashboard["tags"].as_array().cloned().unwrap_or_default();
    tags.push(Value::String(format!("charm: {CHARM_NAME}")));
    dashboard["tags"] = Value::Array(tags);
    dashboard
}

/// Every shipped dashboard rewritten for COS, with its file stem. A source that fails to parse
/// is left out (a unit test parses them all).
pub fn cos_dashboards() -> Vec<(&'static str, Value)> {
    SOURCES
        .iter()
        .filter_map(|(stem, text)| {
            let source: Value = serde_json::from_str(text).ok()?;
            Some((*stem, cos_dashboard(&source)))
        })
        .collect()
}

/// xz (LZMA2, preset 6, CRC64: Python's `lzma.compress` defaults) and base64, as cos-lib's
/// `LZMABase64.compress` does.
pub fn encode(text: &str) -> Result<String, String> {
    let error = |e: std::io::Error| format!("cannot compress a dashboard: {e}");
    let options = lzma_rust2::XzOptions::with_preset(6);
    let mut writer = lzma_rust2::XzWriter::new(Vec::new(), options).map_err(error)?;
    writer.write_all(text.as_bytes()).map_err(error)?;
    let compressed = writer.finish().map_err(error)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

/// The `dashboards` list of the `cos-agent` unit data.
pub fn encoded() -> Result<Vec<String>, String> {
    cos_dashboards()
        .iter()
        .map(|(_, dashboard)| encode(&dashboard.to_string()))
        .collect()
}

/// The `dashboards` value of the `grafana-dashboard` app bag (grafana_dashboard library form:
/// `{"templates": {"file:<stem>": {...}}, "uuid": <content hash>}`).
pub fn grafana_dashboard_data(topology: &Topology) -> Result<Value, String> {
    let mut templates = serde_json::Map::new();
    for (stem, dashboard) in cos_dashboards() {
        templates.insert(
            format!("file:{stem}"),
            json!({
                "charm": CHARM_NAME,
                "content": encode(&dashboard.to_string())?,
                "inject_dropdowns": true,
                "juju_topology": {
                    "application": topology.application, "model": topology.model,
                    "model_uuid": topology.model_uuid, "unit": topology.unit,
                },
            }),
        );
    }
    let templates = Value::Object(templates);
    use sha2::Digest;
    let digest = sha2::Sha256::digest(templates.to_string().as_bytes());
    let uuid: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(json!({ "templates": templates, "uuid": uuid }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboards_use_cos_variables_and_juju_unit() {
        let dashboards = cos_dashboards();
        assert_eq!(dashboards.len(), SOURCES.len());
        for (stem, dashboard) in &dashboards {
            let text = dashboard.to_string();
            for old in OLD_DATASOURCES {
                assert!(!text.contains(old), "{stem} still names {old}");
            }
            assert!(!text.contains("$source"), "{stem}");
            assert!(!text.contains("__inputs"), "{stem}");
            let names: Vec<&str> = dashboard["templating"]["list"]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert_eq!(
                &names[..5],
                [
                    "prometheusds",
                    "juju_model",
                    "juju_model_uuid",
                    "juju_application",
                    "juju_unit"
                ],
                "{stem}"
            );
            let exprs = text.matches("\"expr\":").count();
            assert!(exprs > 0, "{stem}");
            assert!(
                text.matches(r#"juju_unit=~\"$juju_unit\""#).count() >= exprs,
                "{stem}: every query matches on juju_unit"
            );
            assert!(!text.contains("\"instance\""), "{stem}");
        }
        let encoded = encode("{}").expect("encode");
        // xz magic, base64-encoded: FD 37 7A 58 5A 00.
        assert!(encoded.starts_with("/Td6WFoA"), "{encoded}");
    }
}
