//! Turning peer entries into the mesh's target set: which addresses to ping and with which labels.
//!
//! Owns one rule on top of [`plan`]: a peer entry that carries an explicit `network` label (as the
//! charm writes them, already planned) is pinged as given; every other entry goes through
//! [`plan_with_routes`] with this machine's networks, `mesh.networks` and the route lookup, and
//! gets the shared network's CIDR (or `routed`) as its `network` label. Either way, an entry at
//! one of this machine's own addresses is skipped: one peers file can serve every node. It also
//! builds each target's final, sorted label set. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::labels::LabelSet;
use super::peers::PeerEntry;
use super::plan::{LocalNetwork, NetworkSelector, Peer, Unplaced, plan_with_routes};
use crate::icmp::Family;

/// One target of the mesh, with every label its series carry (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetSpec {
    pub address: IpAddr,
    /// Shared with the target's exported labels when they are the same set (the default).
    pub labels: Arc<LabelSet>,
}

impl TargetSpec {
    pub fn family(&self) -> Family {
        Family::of(&self.address)
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).unwrap_or("")
    }
}

/// The target set and the peers that got no target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSet {
    /// Sorted; no two targets share a label set.
    pub targets: Vec<TargetSpec>,
    pub unplaced: Vec<(String, Unplaced)>,
}

fn spec(
    address: IpAddr,
    network: &str,
    entry_labels: &LabelSet,
    mesh_labels: &BTreeMap<String, String>,
) -> TargetSpec {
    let protocol = match Family::of(&address) {
        Family::V4 => "ip4",
        Family::V6 => "ip6",
    };
    let address_text = address.to_string();
    // Later pairs win: the entry's labels over the mesh's, the fixed ones over both.
    let labels = mesh_labels
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain(entry_labels.iter())
        .chain([
            ("network", network),
            ("address", address_text.as_str()),
            ("ip_protocol", protocol),
        ]);
    TargetSpec {
        address,
        labels: Arc::new(LabelSet::new(labels)),
    }
}

/// Builds the target set. See the module documentation for the rule.
pub fn build_targets(
    entries: &[PeerEntry],
    local: &[LocalNetwork],
    selectors: &[NetworkSelector],
    mesh_labels: &BTreeMap<String, String>,
    has_route: &dyn Fn(IpAddr) -> bool,
) -> TargetSet {
    let mut set = TargetSet::default();
    let mut planned_entries: Vec<&PeerEntry> = Vec::new();
    for entry in entries {
        match entry.labels.get("network") {
            // This node's own entry in a shared peers file: not a peer, with a `network`
            // label or without (`plan` skips planned ones the same way).
            Some(_) if local.iter().any(|n| n.address == entry.address) => {}
            Some(network) => {
                set.targets
                    .push(spec(entry.address, network, &entry.labels, mesh_labels))
            }
            None => planned_entries.push(entry),
        }
    }
    let mut peers: BTreeMap<&str, Peer> = BTreeMap::new();
    for entry in &planned_entries {
        peers
            .entry(entry.peer())
            .or_insert_with(|| Peer {
                name: entry.peer().to_string(),
                addresses: Vec::new(),
            })
            .addresses
            .push(entry.address);
    }
    let peers: Vec<Peer> = peers.into_values().collect();
    let result = plan_with_routes(local, &peers, selectors, has_route);
    for target in &result.targets {
        // The labels of the entry that announced this address.
        let labels = planned_entries
            .iter()
            .find(|e| e.address == target.address && e.peer() == target.peer)
            .map(|e| e.labels.clone())
            .unwrap_or_default();
        set.targets.push(spec(
            target.address,
            &target.network_label(),
            &labels,
            mesh_labels,
        ));
    }
    set.unplaced = result.unplaced;
    set.targets.sort();
    set.targets.dedup_by(|a, b| a.labels == b.labels);
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, labels: &[(&str, &str)]) -> PeerEntry {
        PeerEntry {
            address: address.parse().unwrap(),
            labels: std::sync::Arc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn explicit_networks_pass_through_and_others_are_planned() {
        let local = [LocalNetwork::new("eth0", "198.18.0.1".parse().unwrap(), 24).unwrap()];
        let entries = [
            entry("198.18.0.2", &[("peer", "b"), ("rack", "r1")]),
            entry("203.0.113.7", &[("peer", "c")]),
            entry("198.51.100.9", &[("peer", "d"), ("network", "wan")]),
        ];
        let mesh_labels: BTreeMap<String, String> =
            [("site".to_string(), "lab".to_string())].into();
        let set = build_targets(
            &entries,
            &local,
            &[NetworkSelector::All],
            &mesh_labels,
            &|_| false,
        );
        assert_eq!(set.targets.len(), 2);
        let b = set
            .targets
            .iter()
            .find(|t| t.label("peer") == "b")
            .expect("b planned");
        assert_eq!(b.label("network"), "198.18.0.0/24");
        assert_eq!(b.label("rack"), "r1");
        assert_eq!(b.label("site"), "lab");
        assert_eq!(b.label("ip_protocol"), "ip4");
        assert_eq!(b.label("address"), "198.18.0.2");
        let d = set
            .targets
            .iter()
            .find(|t| t.label("peer") == "d")
            .expect("d given");
        assert_eq!(d.label("network"), "wan");
        assert_eq!(set.unplaced, [("c".to_string(), Unplaced::NoCommonNetwork)]);
        // With a route, c is probed through it.
        let routed = build_targets(
            &entries,
            &local,
            &[NetworkSelector::All],
            &mesh_labels,
            &|_| true,
        );
        let c = routed
            .targets
            .iter()
            .find(|t| t.label("peer") == "c")
            .expect("c routed");
        assert_eq!(c.label("network"), "routed");
        assert!(routed.unplaced.is_empty());
        let names: Vec<&str> = b.labels.iter().map(|(k, _)| k).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn this_nodes_own_entry_is_skipped_with_or_without_a_network_label() {
        let local = [LocalNetwork::new("eth0", "198.18.0.1".parse().unwrap(), 24).unwrap()];
        let no_labels = BTreeMap::new();
        for own in [
            entry("198.18.0.1", &[("peer", "me")]),
            entry("198.18.0.1", &[("peer", "me"), ("network", "lab")]),
        ] {
            let other = entry("198.18.0.2", &[("peer", "b"), ("network", "lab")]);
            let set = build_targets(
                &[own, other],
                &local,
                &[NetworkSelector::All],
                &no_labels,
                &|_| false,
            );
            let peers: Vec<&str> = set.targets.iter().map(|t| t.label("peer")).collect();
            assert_eq!(peers, ["b"], "{set:?}");
            assert!(set.unplaced.is_empty(), "{set:?}");
        }
    }
}
