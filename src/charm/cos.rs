//! What the charm tells the Canonical Observability Stack about itself: its Juju topology (the
//! `scrape_metadata` of `prometheus_scrape`, the `juju_*` labels of every target), and its alert
//! rules in the form the `prometheus_scrape` and `cos_agent` libraries put on the wire.
//!
//! The rules come from one source, config/meshprobe-rules.yml (embedded at build time), and are
//! rewritten the way those libraries' `AlertRules` rewrite a charm's rule files (cos-lib
//! `src/cosl/rules.py`): group names prefixed with the topology identifier and ending in
//! `_rules`, the topology labels added to every rule, and `%%juju_topology%%` in every vector
//! selector for the consumer to fill in. Two COS-specific edits follow from how COS labels
//! targets: the scraping unit is `juju_unit` (COS rewrites `instance`), so groupings that keep
//! `instance` also keep `juju_unit`, and annotations name `juju_unit` (and `probe_target` for
//! `/probe` alerts). Pure functions; no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::env::JujuEnv;
use super::promql::{self, Matcher};

/// The charm's name in metadata.yaml (the application may be deployed under another name).
pub const CHARM_NAME: &str = "meshprobe";

/// The placeholder the COS libraries replace with the topology label matchers.
pub const TOPOLOGY_PLACEHOLDER: &str = "%%juju_topology%%";

/// config/meshprobe-rules.yml, the one source of the alert and recording rules.
const RULES_YAML: &str = include_str!("../../config/meshprobe-rules.yml");

/// The Juju topology of this application, as cos-lib's `JujuTopology` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub model: String,
    pub model_uuid: String,
    pub application: String,
    /// The unit writing the data (the leader for application data).
    pub unit: String,
    pub charm_name: String,
}

impl Topology {
    pub fn from_env(env: &JujuEnv) -> Topology {
        Topology {
            model: env.model.clone(),
            model_uuid: env.model_uuid.clone(),
            application: env.app.clone(),
            unit: env.unit.clone(),
            charm_name: CHARM_NAME.to_string(),
        }
    }

    /// `scrape_metadata` of `prometheus_scrape` (`JujuTopology.as_dict()`).
    pub fn metadata(&self) -> Value {
        json!({
            "application": self.application,
            "charm_name": self.charm_name,
            "model": self.model,
            "model_uuid": self.model_uuid,
            "unit": self.unit,
        })
    }

    /// `<model>_<first 8 of the uuid>_<application>`, the prefix of COS group and job names.
    pub fn identifier(&self) -> String {
        let uuid: String = self.model_uuid.chars().take(8).collect();
        format!("{}_{uuid}_{}", self.model, self.application).replace('/', "_")
    }

    /// The labels COS puts on every target of this application (`label_matcher_dict`: no
    /// unit), non-empty values only.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            ("juju_model", &self.model),
            ("juju_model_uuid", &self.model_uuid),
            ("juju_application", &self.application),
            ("juju_charm", &self.charm_name),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect()
    }

    /// [`Topology::labels`] plus `juju_unit`: the labels of a target that `unit` scrapes.
    pub fn unit_labels(&self, unit: &str) -> BTreeMap<String, String> {
        let mut labels = self.labels();
        labels.insert("juju_unit".into(), unit.to_string());
        labels
    }
}

/// Group names as cos-lib makes them: prefixed, ending in `_rules`, `[a-zA-Z0-9_:]` only.
fn group_name(topology: &Topology, name: &str) -> String {
    let mut full = format!("{}_{name}", topology.identifier());
    if !full.ends_with("_rules") {
        full.push_str("_rules");
    }
    full.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One rule rewritten for COS (see the module doc).
fn rule_for_cos(rule: &Map<String, Value>, topology: &Topology) -> Map<String, Value> {
    let mut rule = rule.clone();
    let expr = rule.get("expr").and_then(Value::as_str).unwrap_or("");
    let probe = expr.contains("probe_success") || expr.contains("probe_icmp");
    let grouped = promql::edit_groupings(expr, |labels| {
        let mut labels = labels.to_vec();
        if labels.iter().any(|l| l == "instance") && !labels.iter().any(|l| l == "juju_unit") {
            labels.push("juju_unit".into());
        }
        labels
    });
    let expr = promql::inject(grouped.trim_end(), &[Matcher::raw(TOPOLOGY_PLACEHOLDER)]);
    rule.insert("expr".into(), Value::String(expr));
    let mut labels = rule
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in topology.labels() {
        labels.entry(key).or_insert(Value::String(value));
    }
    rule.insert("labels".into(), Value::Object(labels));
    if let Some(Value::Object(annotations)) = rule.get_mut("annotations") {
        let source = if probe {
            "{{ $labels.probe_target }} from {{ $labels.juju_unit }}"
        } else {
            "{{ $labels.juju_unit }}"
        };
        for text in annotations.values_mut() {
            if let Value::String(s) = text {
                *s = s.replace("{{ $labels.instance }}", source);
            }
        }
    }
    rule
}

/// config/meshprobe-rules.yml as COS wants it: `{"groups": [...]}` (see the module doc). An
/// embedded file that fails to parse yields no groups; a unit test parses it.
pub fn alert_rules(topology: &Topology) -> Value {
    let parsed: Value = serde_saphyr::from_str(RULES_YAML).unwrap_or(Value::Null);
    let groups: Vec<Value> = parsed
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|group| {
            let mut group = group.clone();
            let name = group
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("meshprobe");
            group.insert("name".into(), Value::String(group_name(topology, name)));
            let rules: Vec<Value> = group
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(|rule| Value::Object(rule_for_cos(rule, topology)))
                .collect();
            group.insert("rules".into(), Value::Array(rules));
            Value::Object(group)
        })
        .collect();
    json!({ "groups": groups })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A topology for tests.
    pub fn topology() -> Topology {
        Topology {
            model: "lab".into(),
            model_uuid: "5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a".into(),
            application: "meshprobe".into(),
            unit: "meshprobe/0".into(),
            charm_name: CHARM_NAME.into(),
        }
    }

    #[test]
    fn rules_keep_every_rule_of_the_source_with_topology() {
        let source: Value = serde_saphyr::from_str(RULES_YAML).expect("rules parse");
        let rules = alert_rules(&topology());
        let groups = rules["groups"].as_array().expect("groups");
        assert_eq!(
            groups.len(),
            source["groups"].as_array().map_or(0, Vec::len)
        );
        let mut count = 0;
        for group in groups {
            let name = group["name"].as_str().expect("name");
            assert!(
                name.starts_with("lab_5f0c2a52_meshprobe_") && name.ends_with("_rules"),
                "{name}"
            );
            for rule in group["rules"].as_array().expect("rules") {
                count += 1;
                let expr = rule["expr"].as_str().expect("expr");
                assert!(expr.contains(TOPOLOGY_PLACEHOLDER), "{expr}");
                assert_eq!(rule["labels"]["juju_application"], "meshprobe");
                assert_eq!(rule["labels"]["juju_charm"], "meshprobe");
                assert!(!rule.to_string().contains("$labels.instance"), "{rule}");
                if expr.contains("by (") {
                    assert!(expr.contains("juju_unit"), "{expr}");
                }
            }
        }
        let source_rules: usize = source["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["rules"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(count, source_rules);
        assert_eq!(
            topology().metadata().to_string(),
            r#"{"application":"meshprobe","charm_name":"meshprobe","model":"lab","model_uuid":"5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a","unit":"meshprobe/0"}"#
        );
    }
}
