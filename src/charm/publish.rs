//! What the charm tells Prometheus: scrape jobs for mesh mode and probe mode (the compact
//! per-source form), in the three shapes its relations need (`metrics-endpoint`: a wildcard mesh
//! job the consumer expands per unit; `prometheus-manual`: every unit listed; `cos-agent`: this
//! unit's own jobs against `localhost`), the peers file for this unit's service, and the plan that
//! all of them come from.
//!
//! Every probe target carries its source unit's Juju topology in its `static_configs` labels
//! (`juju_unit` = the source, plus `juju_model`, `juju_model_uuid`, `juju_application`,
//! `juju_charm`): the `prometheus_scrape` consumer keeps static labels over the unit it matches a
//! target's address to, and `cos_agent` overwrites them with the same values. The probed peer is
//! `probe_target` (relabelled from the target, as COS rewrites `instance`).
//!
//! The plan: a unit reaches a peer on every shared network, and through the routing table
//! (`network="routed"`) at addresses on no shared network, as in standalone mode. With a grouping
//! configured (`group`), each unit's peers come from the tiered plan ([`crate::mesh::tiered`]) of
//! every unit's shared `group`, so every unit and the leader compute the same assignment.
//!
//! Pure functions over the cache's view of the units (the route lookup is passed in); the hook
//! handlers decide when to write.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::cos::Topology;
use super::model::{Mode, SharedNetwork};
use crate::mesh::plan::{LocalNetwork, NetworkSelector, Peer, Plan, plan_with_routes};
use crate::mesh::tiered::{Member, Tiered};

/// Whether the kernel has a route to an address (`crate::mesh::discovery::has_route` in hooks).
pub type RouteLookup = fn(std::net::IpAddr) -> bool;

/// How a unit's plan is made: the chosen networks, the tiered plan's k (`None`: full mesh), and
/// the route lookup for addresses on no shared network.
#[derive(Clone)]
pub struct PlanRules {
    pub selectors: Vec<NetworkSelector>,
    pub paths: Option<usize>,
    pub has_route: RouteLookup,
}

/// One unit as the publisher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitData {
    pub networks: Vec<SharedNetwork>,
    pub exporter: Option<String>,
    /// The unit's group (its `group` bag key), when grouping is on.
    pub group: Option<String>,
}

/// The plan of `source` against every other unit in `units`.
pub fn plan_for(source: &str, units: &BTreeMap<String, UnitData>, rules: &PlanRules) -> Plan {
    // Tiered: only the peers the plan of every unit's group gives `source`.
    let chosen: Option<Vec<String>> = rules.paths.map(|paths| {
        let members: Vec<Member> = units
            .iter()
            .map(|(name, unit)| Member::new(name, unit.group.as_deref().unwrap_or("")))
            .collect();
        let tiered = Tiered::new(&members, paths, 0);
        tiered
            .targets_of(source)
            .unwrap_or_default()
            .into_iter()
            .map(|index| tiered.members()[index].name.clone())
            .collect()
    });
    let local: Vec<LocalNetwork> = units
        .get(source)
        .map(|u| u.networks.iter().map(SharedNetwork::to_local).collect())
        .unwrap_or_default();
    let peers: Vec<Peer> = units
        .iter()
        .filter(|(name, _)| name.as_str() != source)
        .filter(|(name, _)| chosen.as_ref().is_none_or(|c| c.contains(name)))
        .map(|(name, unit)| Peer {
            name: name.clone(),
            addresses: unit.networks.iter().map(|n| n.address).collect(),
        })
        .collect();
    plan_with_routes(&local, &peers, &rules.selectors, &|address| {
        (rules.has_route)(address)
    })
}

/// The file_sd document the service watches: one group per target, sorted, canonical JSON;
/// with grouping on, each target also carries its peer's `group` label.
pub fn peers_file(plan: &Plan, units: &BTreeMap<String, UnitData>) -> String {
    let groups: Vec<Value> = plan
        .targets
        .iter()
        .map(|t| {
            let mut labels = json!({"network": t.network_label(), "peer": t.peer});
            if let Some(group) = units.get(&t.peer).and_then(|u| u.group.as_ref()) {
                labels["group"] = json!(group);
            }
            json!({"labels": labels, "targets": [t.address.to_string()]})
        })
        .collect();
    let mut text = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// The `metrics-endpoint` mesh job: the same whatever the membership; the consumer expands `*`
/// to every unit's `prometheus_scrape_unit_address` and labels each with its `juju_unit`.
pub fn mesh_job(port: u16) -> Value {
    json!({
        "job_name": "meshprobe-mesh",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [format!("*:{port}")]}],
    })
}

/// The mesh job with every unit's exporter listed, labelled with its topology (for consumers
/// that do not expand `*`, such as the legacy prometheus2 `manual-jobs`).
fn listed_mesh_job(units: &BTreeMap<String, UnitData>, topology: &Topology) -> Value {
    let static_configs: Vec<Value> = units
        .iter()
        .filter_map(|(name, unit)| {
            let exporter = unit.exporter.as_ref()?;
            Some(json!({"labels": topology.unit_labels(name), "targets": [exporter]}))
        })
        .collect();
    json!({
        "job_name": "meshprobe-mesh",
        "metrics_path": "/metrics",
        "static_configs": static_configs,
    })
}

/// The probe-mode job of one source unit: one static_configs entry per network, labelled with
/// the source's topology; Prometheus scrapes `exporter` (the source's exporter) for each target.
fn probe_job(source: &str, exporter: &str, plan: &Plan, topology: &Topology) -> Value {
    let mut by_network: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for target in &plan.targets {
        by_network
            .entry(target.network_label())
            .or_default()
            .push(target.address.to_string());
    }
    let static_configs: Vec<Value> = by_network
        .into_iter()
        .map(|(network, targets)| {
            let mut labels = topology.unit_labels(source);
            labels.insert("network".into(), network);
            labels.insert("source".into(), source.to_string());
            json!({"labels": labels, "targets": targets})
        })
        .collect();
    json!({
        "job_name": format!("meshprobe-probe-{}", source.replace('/', "-")),
        "metrics_path": "/probe",
        "params": {"module": ["icmp"]},
        "static_configs": static_configs,
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__address__"], "target_label": "probe_target"},
            {"source_labels": ["__address__"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    })
}

/// What the jobs are computed from.
pub struct JobInput {
    pub mode: Mode,
    pub port: u16,
    pub units: BTreeMap<String, UnitData>,
    pub rules: PlanRules,
    pub topology: Topology,
}

impl JobInput {
    /// Every source unit's probe job (units without an exporter or targets have none). On shared
    /// networks only: the leader cannot see another unit's routing table, and its own is no
    /// evidence of theirs (a unit's own plan and its `cos-agent` job do include routed peers).
    fn probe_jobs(&self) -> Vec<Value> {
        if !self.mode.probe() {
            return Vec::new();
        }
        let shared_only = PlanRules {
            has_route: |_| false,
            ..self.rules.clone()
        };
        self.units
            .iter()
            .filter_map(|(name, unit)| {
                let exporter = unit.exporter.as_ref()?;
                let plan = plan_for(name, &self.units, &shared_only);
                (!plan.targets.is_empty()).then(|| probe_job(name, exporter, &plan, &self.topology))
            })
            .collect()
    }

    /// The `metrics-endpoint` jobs: the wildcard mesh job and every probe job.
    pub fn scrape_jobs(&self) -> Vec<Value> {
        let mut jobs = Vec::new();
        if self.mode.mesh() {
            jobs.push(mesh_job(self.port));
        }
        jobs.extend(self.probe_jobs());
        jobs
    }

    /// The `prometheus-manual` jobs: the mesh job with every unit listed and every probe job.
    pub fn manual_jobs(&self) -> Vec<Value> {
        let mut jobs = Vec::new();
        if self.mode.mesh() {
            jobs.push(listed_mesh_job(&self.units, &self.topology));
        }
        jobs.extend(self.probe_jobs());
        jobs
    }

    /// `unit`'s own jobs for a collector on its machine (`cos-agent`): its exporter's /metrics
    /// and its probe job, both against `localhost`.
    pub fn local_jobs(&self, unit: &str) -> Vec<Value> {
        let local = format!("localhost:{}", self.port);
        let mut jobs = Vec::new();
        if self.mode.mesh() {
            jobs.push(json!({
                "job_name": "meshprobe-mesh",
                "metrics_path": "/metrics",
                "static_configs": [{"labels": self.topology.unit_labels(unit), "targets": [local]}],
            }));
        }
        if self.mode.probe() {
            let plan = plan_for(unit, &self.units, &self.rules);
            if !plan.targets.is_empty() {
                jobs.push(probe_job(unit, &local, &plan, &self.topology));
            }
        }
        jobs
    }
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
            group: None,
        }
    }

    fn rules(paths: Option<usize>, has_route: RouteLookup) -> PlanRules {
        PlanRules {
            selectors: vec![NetworkSelector::All],
            paths,
            has_route,
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
        let input = JobInput {
            mode: Mode::Both,
            port: 9115,
            units: units.clone(),
            rules: rules(None, |_| false),
            topology: crate::charm::cos::tests::topology(),
        };
        let jobs = input.scrape_jobs();
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            compact(&jobs[0]),
            r#"{"job_name":"meshprobe-mesh","metrics_path":"/metrics","static_configs":[{"targets":["*:9115"]}]}"#
        );
        assert_eq!(
            compact(&jobs[1]),
            r#"{"job_name":"meshprobe-probe-m-0","metrics_path":"/probe","params":{"module":["icmp"]},"relabel_configs":[{"source_labels":["__address__"],"target_label":"__param_target"},{"source_labels":["__address__"],"target_label":"probe_target"},{"source_labels":["__address__"],"target_label":"instance"},{"replacement":"198.18.10.1:9115","target_label":"__address__"}],"static_configs":[{"labels":{"juju_application":"meshprobe","juju_charm":"meshprobe","juju_model":"lab","juju_model_uuid":"5f0c2a52-7c1e-4b8e-9a53-6d0b8c1f2e3a","juju_unit":"m/0","network":"198.18.10.0/24","source":"m/0"},"targets":["198.18.10.2"]}]}"#
        );
        // prometheus-manual lists the units instead of `*`; cos-agent has the unit's own jobs.
        let manual = compact(&input.manual_jobs()[0]);
        assert!(!manual.contains('*'), "{manual}");
        assert!(manual.contains(r#""juju_unit":"m/1""#) && manual.contains("198.18.10.2:9115"));
        let local = input.local_jobs("m/1");
        assert_eq!(local.len(), 2);
        assert!(compact(&local).contains(r#""replacement":"localhost:9115""#));
        assert!(compact(&local[1]).contains(r#""juju_unit":"m/1""#));
        let plan = plan_for("m/0", &units, &rules(None, |_| false));
        assert_eq!(
            peers_file(&plan, &units),
            "[{\"labels\":{\"network\":\"198.18.10.0/24\",\"peer\":\"m/1\"},\"targets\":[\"198.18.10.2\"]}]\n"
        );
    }

    #[test]
    fn grouped_units_follow_the_tiered_plan_and_routed_peers_are_used() {
        // Two zones of three units, each zone its own subnet: reachable only through routes.
        let units: BTreeMap<String, UnitData> = (0..6)
            .map(|i| {
                let zone = i / 3;
                let address = format!("198.18.{}.{}", 20 + zone, 10 + i);
                let cidr = format!("198.18.{}.0/24", 20 + zone);
                let mut data = unit(&[(&address, &cidr)], &format!("{address}:9115"));
                data.group = Some(format!("az{zone}"));
                (format!("m/{i}"), data)
            })
            .collect();
        let tiered = rules(Some(2), |_| true);
        let mut zone_pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (name, data) in &units {
            let plan = plan_for(name, &units, &tiered);
            assert!(plan.unplaced.is_empty(), "{name}: {:?}", plan.unplaced);
            for target in &plan.targets {
                let peer_group = units[&target.peer].group.clone().unwrap_or_default();
                let own_group = data.group.clone().unwrap_or_default();
                if peer_group == own_group {
                    assert_ne!(target.network_label(), "routed");
                } else {
                    assert_eq!(target.network_label(), "routed");
                    *zone_pairs.entry((own_group, peer_group)).or_default() += 1;
                }
            }
            let file = peers_file(&plan, &units);
            assert!(file.contains("\"group\":\"az"), "{file}");
        }
        assert_eq!(zone_pairs.len(), 2);
        assert!(zone_pairs.values().all(|n| *n == 2), "{zone_pairs:?}");
        // Without a route, the other zone is unplaced, as before.
        let plan = plan_for("m/0", &units, &rules(None, |_| false));
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.unplaced.len(), 3);
    }
}
