//! What charm/README.md says the charm must compute, built independently of the charm for the
//! scenarios to compare with: each unit's `networks`, its probe plan, `peers.json`, and the
//! `scrape_jobs` the leader publishes.
//!
//! Readings chosen where the contract is ambiguous (for the lead to align the implementation):
//! - networks are sorted by (cidr, address) in numeric order (IPv4 before IPv6); the scenarios
//!   use data where string and numeric order agree.
//! - "both sides have a network" means the same CIDR (prefix and length).
//! - the order of `peers.json` groups, `targets` in `show-targets`, jobs and `static_configs`
//!   is not asserted: they are compared as sets (the README only says "sorted").
//! - a probe job has one `static_configs` entry per network with at least one peer target; a
//!   source unit with no targets at all may be omitted or have no entries.
//! - `relabel_configs` are checked for their effect: `__param_target` and `probe_target` come
//!   from `__address__` (or `__param_target`), and `__address__` is replaced by the exporter.
//! - `peers.json` is only asserted in mesh mode (in probe mode nothing on the unit probes).
//! - `unplaced` is a JSON list of unit names, or of objects with a `peer` key (the charm adds a
//!   `reason`).
//!
//! It does not run anything.

use super::netns::Iface;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// (cidr, address, interface) of a unit's layout, sorted by (cidr, address).
pub fn networks(layout: &[Iface]) -> Vec<(ipnet::IpNet, std::net::IpAddr, String)> {
    let mut nets: Vec<_> = layout
        .iter()
        .flat_map(|i| {
            i.addrs
                .iter()
                .map(move |a| (a.trunc(), a.addr(), i.name.clone()))
        })
        .collect();
    nets.sort();
    nets
}

/// The `networks` value of a unit's peer bag.
pub fn networks_json(layout: &[Iface]) -> String {
    let list: Vec<Value> = networks(layout)
        .iter()
        .map(|(cidr, addr, iface)| json!({"address": addr.to_string(), "cidr": cidr.to_string(), "interface": iface}))
        .collect();
    serde_json::to_string(&list).expect("json")
}

/// One probe target: (peer, network, address).
pub type Target = (String, String, String);

/// The plan of `local`: every peer on every network both have (selector `all`).
pub fn plan(
    local: &[Iface],
    peers: &BTreeMap<String, Vec<Iface>>,
) -> (BTreeSet<Target>, BTreeSet<String>) {
    let mine: BTreeSet<ipnet::IpNet> = networks(local).into_iter().map(|n| n.0).collect();
    let mut targets = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for (peer, layout) in peers {
        let before = targets.len();
        for (cidr, addr, _) in networks(layout) {
            if mine.contains(&cidr) {
                targets.insert((peer.clone(), cidr.to_string(), addr.to_string()));
            }
        }
        if targets.len() == before {
            unplaced.insert(peer.clone());
        }
    }
    (targets, unplaced)
}

/// `peers.json` groups as a set of (peer, network, address).
pub fn peers_file_targets(file: &Value) -> BTreeSet<Target> {
    let groups = file
        .as_array()
        .unwrap_or_else(|| panic!("peers.json is not a list: {file}"));
    let mut out = BTreeSet::new();
    for g in groups {
        let label = |k: &str| {
            g["labels"][k]
                .as_str()
                .unwrap_or_else(|| panic!("group without {k}: {g}"))
                .to_string()
        };
        let targets = g["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("group without targets: {g}"));
        assert_eq!(targets.len(), 1, "one target per group: {g}");
        let addr = targets[0].as_str().expect("target string").to_string();
        assert!(
            out.insert((label("peer"), label("network"), addr)),
            "duplicate group {g}"
        );
    }
    out
}

/// `show-targets` results as (targets, unplaced).
pub fn show_targets(results: &BTreeMap<String, String>) -> (BTreeSet<Target>, BTreeSet<String>) {
    let raw = results
        .get("targets")
        .unwrap_or_else(|| panic!("no targets key in {results:?}"));
    let list: Vec<Value> =
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("targets is not JSON ({e}): {raw}"));
    let targets = list
        .iter()
        .map(|t| {
            let f = |k: &str| {
                t[k].as_str()
                    .unwrap_or_else(|| panic!("target without {k}: {t}"))
                    .to_string()
            };
            (f("peer"), f("network"), f("address"))
        })
        .collect();
    let unplaced_raw = results.get("unplaced").map(String::as_str).unwrap_or("[]");
    let unplaced: Vec<Value> = serde_json::from_str(unplaced_raw)
        .unwrap_or_else(|e| panic!("unplaced is not a JSON list ({e}): {unplaced_raw}"));
    let unplaced = unplaced
        .iter()
        .map(|p| {
            p.as_str()
                .or(p["peer"].as_str())
                .unwrap_or_else(|| panic!("unplaced entry {p}"))
                .to_string()
        })
        .collect();
    (targets, unplaced)
}

pub const MESH_JOBS: &str = r#"[{"job_name":"meshprobe-mesh","metrics_path":"/metrics","static_configs":[{"targets":["*:9115"]}]}]"#;

/// The exporter address of a unit: its address on its first network, with the port.
pub fn exporter(layout: &[Iface], port: u16) -> String {
    let (_, addr, _) = networks(layout)
        .into_iter()
        .next()
        .expect("unit has a network");
    match addr {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Probe-mode jobs, normalised: job_name → (exporter, {network → sorted targets}).
pub type Jobs = BTreeMap<String, (String, BTreeMap<String, BTreeSet<String>>)>;

pub fn expected_probe_jobs(units: &BTreeMap<String, Vec<Iface>>) -> Jobs {
    let mut jobs = Jobs::new();
    for (unit, layout) in units {
        let peers: BTreeMap<String, Vec<Iface>> = units
            .iter()
            .filter(|(u, _)| *u != unit)
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        let (targets, _) = plan(layout, &peers);
        let mut per_net: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, net, addr) in targets {
            per_net.entry(net).or_default().insert(addr);
        }
        if !per_net.is_empty() {
            jobs.insert(
                format!("meshprobe-probe-{}", unit.replace('/', "-")),
                (exporter(layout, 9115), per_net),
            );
        }
    }
    jobs
}

/// Parses published probe jobs into `Jobs`, checking the fixed parts of each job.
pub fn parse_probe_jobs(raw: &str) -> Jobs {
    let list: Vec<Value> =
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("scrape_jobs is not JSON ({e})"));
    let mut jobs = Jobs::new();
    for job in list {
        let name = job["job_name"]
            .as_str()
            .unwrap_or_else(|| panic!("job without name: {job}"))
            .to_string();
        assert_eq!(job["metrics_path"], "/probe", "{name}");
        assert_eq!(job["params"], json!({"module": ["icmp"]}), "{name}");
        let source = name
            .strip_prefix("meshprobe-probe-")
            .unwrap_or_else(|| panic!("job name {name}"));
        let mut exporter = None;
        let (mut param, mut probe) = (false, false);
        for rule in job["relabel_configs"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no relabel_configs"))
        {
            let from_addr = matches!(rule["source_labels"].as_array().map(|a| a.as_slice()), Some([s]) if s == "__address__" || s == "__param_target");
            match rule["target_label"].as_str() {
                Some("__param_target") => param |= from_addr,
                Some("probe_target") => probe |= from_addr,
                Some("__address__") => exporter = rule["replacement"].as_str().map(str::to_string),
                _ => {}
            }
        }
        assert!(
            param && probe,
            "{name}: relabel_configs must copy __address__ to __param_target and probe_target: {job}"
        );
        let mut per_net = BTreeMap::new();
        for sc in job["static_configs"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no static_configs"))
        {
            let net = sc["labels"]["network"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no network label"))
                .to_string();
            let src = sc["labels"]["source"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no source label"));
            assert_eq!(src.replace('/', "-"), source, "{name}: source label");
            let targets: BTreeSet<String> = sc["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| t.as_str().expect("target").to_string())
                .collect();
            if !targets.is_empty() {
                assert!(
                    per_net.insert(net.clone(), targets).is_none(),
                    "{name}: network {net} twice"
                );
            }
        }
        if !per_net.is_empty() {
            jobs.insert(
                name.clone(),
                (
                    exporter.unwrap_or_else(|| panic!("{name}: no __address__ rule")),
                    per_net,
                ),
            );
        }
    }
    jobs
}
