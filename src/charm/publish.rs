//! What the charm tells Prometheus: scrape jobs for mesh mode (one membership-independent job)
//! and probe mode (the compact per-source form), the peers file for this unit's service, and the
//! plan that both come from.
//!
//! Pure functions over the cache's view of the units; the hook handlers decide when to write.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::{Mode, SharedNetwork};
use crate::mesh::plan::{LocalNetwork, NetworkSelector, Peer, Plan, plan};

/// One unit as the publisher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitData {
    pub networks: Vec<SharedNetwork>,
    pub exporter: Option<String>,
}

/// The plan of `source` against every other unit in `units`.
pub fn plan_for(
    source: &str,
    units: &BTreeMap<String, UnitData>,
    selectors: &[NetworkSelector],
) -> Plan {
    let local: Vec<LocalNetwork> = units
        .get(source)
        .map(|u| u.networks.iter().map(SharedNetwork::to_local).collect())
        .unwrap_or_default();
    let peers: Vec<Peer> = units
        .iter()
        .filter(|(name, _)| name.as_str() != source)
        .map(|(name, unit)| Peer {
            name: name.clone(),
            addresses: unit.networks.iter().map(|n| n.address).collect(),
        })
        .collect();
    plan(&local, &peers, selectors)
}

/// The file_sd document the service watches: one group per target, sorted, canonical JSON.
pub fn peers_file(plan: &Plan) -> String {
    let groups: Vec<Value> = plan
        .targets
        .iter()
        .map(|t| {
            json!({
                "labels": {"network": t.network.to_string(), "peer": t.peer},
                "targets": [t.address.to_string()],
            })
        })
        .collect();
    let mut text = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// The mesh-mode job: the same whatever the membership, `*` expanded by Prometheus per unit.
pub fn mesh_job(port: u16) -> Value {
    json!({
        "job_name": "meshprobe-mesh",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [format!("*:{port}")]}],
    })
}

/// The probe-mode job of one source unit: one static_configs entry per network.
fn probe_job(source: &str, exporter: &str, plan: &Plan) -> Value {
    let mut by_network: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for target in &plan.targets {
        by_network
            .entry(target.network.to_string())
            .or_default()
            .push(target.address.to_string());
    }
    let static_configs: Vec<Value> = by_network
        .into_iter()
        .map(|(network, targets)| json!({"labels": {"network": network, "source": source}, "targets": targets}))
        .collect();
    json!({
        "job_name": format!("meshprobe-probe-{}", source.replace('/', "-")),
        "metrics_path": "/probe",
        "params": {"module": ["icmp"]},
        "static_configs": static_configs,
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__address__"], "target_label": "probe_target"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    })
}

/// Every job the leader publishes for `mode`.
pub fn scrape_jobs(
    mode: Mode,
    port: u16,
    units: &BTreeMap<String, UnitData>,
    selectors: &[NetworkSelector],
) -> Vec<Value> {
    let mut jobs = Vec::new();
    if mode.mesh() {
        jobs.push(mesh_job(port));
    }
    if mode.probe() {
        for (name, unit) in units {
            let Some(exporter) = &unit.exporter else {
                continue;
            };
            let plan = plan_for(name, units, selectors);
            if !plan.targets.is_empty() {
                jobs.push(probe_job(name, exporter, &plan));
            }
        }
    }
    jobs
}

/// Compact JSON of a value (sorted keys: serde_json's map is ordered).
pub fn compact(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(networks: &[(&str, &str)], exporter: &str) -> UnitData {
        UnitData {
            networks: networks
                .iter()
                .map(|(address, cidr)| SharedNetwork {
                    address: address.parse().unwrap(),
                    cidr: cidr.parse().unwrap(),
                    interface: "eth0".into(),
                })
                .collect(),
            exporter: Some(exporter.into()),
        }
    }

    #[test]
    fn probe_jobs_are_compact_and_per_source() {
        let units: BTreeMap<String, UnitData> = [
            (
                "m/0".to_string(),
                unit(&[("198.18.10.1", "198.18.10.0/24")], "198.18.10.1:9115"),
            ),
            (
                "m/1".to_string(),
                unit(&[("198.18.10.2", "198.18.10.0/24")], "198.18.10.2:9115"),
            ),
        ]
        .into();
        let jobs = scrape_jobs(Mode::Both, 9115, &units, &[NetworkSelector::All]);
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            compact(&jobs[0]),
            r#"{"job_name":"meshprobe-mesh","metrics_path":"/metrics","static_configs":[{"targets":["*:9115"]}]}"#
        );
        assert_eq!(
            compact(&jobs[1]),
            r#"{"job_name":"meshprobe-probe-m-0","metrics_path":"/probe","params":{"module":["icmp"]},"relabel_configs":[{"source_labels":["__address__"],"target_label":"__param_target"},{"source_labels":["__address__"],"target_label":"probe_target"},{"replacement":"198.18.10.1:9115","target_label":"__address__"}],"static_configs":[{"labels":{"network":"198.18.10.0/24","source":"m/0"},"targets":["198.18.10.2"]}]}"#
        );
        let plan = plan_for("m/0", &units, &[NetworkSelector::All]);
        assert_eq!(
            peers_file(&plan),
            "[{\"labels\":{\"network\":\"198.18.10.0/24\",\"peer\":\"m/1\"},\"targets\":[\"198.18.10.2\"]}]\n"
        );
    }
}
