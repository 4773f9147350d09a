//! The fleet keys applied to peer entries: which entries a tiered plan keeps for this node, this
//! node's own group, the rotation epoch, and the label set an inter-group target is exported
//! under when `mesh.inter_group_series: per_group` is set.
//!
//! Pure glue between the peer sources and [`super::tiered`]: this node is the entry whose address
//! is one of its own (its `peer` label is its name in the member list), and its group is that
//! entry's `group_by` label (or `mesh.labels`' value for it). It must not read clocks or the
//! network: the caller passes the time and the local addresses in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::labels::LabelSet;
use super::peers::PeerEntry;
use super::targets::TargetSpec;
use super::tiered::{Member, Tiered};
use crate::config::mesh::{Fleet, InterGroupSeries, Strategy};

/// What [`select`] keeps, and what it learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub entries: Vec<PeerEntry>,
    /// This node's group (the value of `group_by`), when known.
    pub own_group: Option<String>,
    /// Why the tiered plan could not place this node (then `entries` is empty).
    pub problem: Option<String>,
}

/// The rotation epoch at `since_unix_epoch` (0 without rotation). Every node with a synchronised
/// clock computes the same one.
pub fn epoch(since_unix_epoch: Duration, fleet: &Fleet) -> u64 {
    match fleet.rotate_every {
        Some(every) if !every.is_zero() => {
            u64::try_from(since_unix_epoch.as_nanos() / every.as_nanos()).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// Keeps the entries this node probes: all of them with `strategy: full`; with `tiered`, those of
/// the peers [`Tiered::targets_of`] gives this node at `epoch`.
pub fn select(
    entries: &[PeerEntry],
    own_addresses: &BTreeSet<IpAddr>,
    fleet: &Fleet,
    mesh_labels: &BTreeMap<String, String>,
    epoch: u64,
) -> Selection {
    let group_of = |entry: &PeerEntry| -> String {
        fleet
            .group_by
            .as_ref()
            .and_then(|label| entry.labels.get(label))
            .unwrap_or_default()
            .to_string()
    };
    let own_entry = entries
        .iter()
        .find(|e| own_addresses.contains(&e.address.to_canonical()));
    let own_group = own_entry.map(group_of).or_else(|| {
        let label = fleet.group_by.as_ref()?;
        mesh_labels.get(label).cloned()
    });
    if fleet.strategy == Strategy::Full {
        return Selection {
            entries: entries.to_vec(),
            own_group,
            problem: None,
        };
    }
    let Some(me) = own_entry.map(|e| e.peer().to_string()) else {
        return Selection {
            entries: Vec::new(),
            own_group,
            problem: Some(
                "strategy: tiered needs this node in the peer list (an entry with one of its \
                 addresses), so that every node computes the same plan; probing nothing"
                    .into(),
            ),
        };
    };
    let members: Vec<Member> = entries
        .iter()
        .map(|e| Member {
            name: e.peer().to_string(),
            group: group_of(e),
        })
        .collect();
    let plan = Tiered::new(&members, fleet.paths_between_groups, epoch);
    let chosen: BTreeSet<&str> = plan
        .targets_of(&me)
        .unwrap_or_default()
        .into_iter()
        .map(|index| plan.members()[index].name.as_str())
        .collect();
    Selection {
        entries: entries
            .iter()
            .filter(|e| chosen.contains(e.peer()))
            .cloned()
            .collect(),
        own_group,
        problem: None,
    }
}

/// The label set `spec` is exported under: `None` for its own (per peer); with
/// `inter_group_series: per_group` and a peer outside this node's group, only the `mesh.labels`,
/// the group label, `network` and `ip_protocol`, so all such peers of one group share a series set.
pub fn exported_labels(
    spec: &TargetSpec,
    own_group: Option<&str>,
    fleet: &Fleet,
    mesh_labels: &BTreeMap<String, String>,
) -> Option<LabelSet> {
    if fleet.inter_group_series != InterGroupSeries::PerGroup {
        return None;
    }
    let label = fleet.group_by.as_deref()?;
    if own_group == Some(spec.label(label)) {
        return None;
    }
    Some(
        spec.labels
            .iter()
            .filter(|(key, _)| {
                *key == label
                    || *key == "network"
                    || *key == "ip_protocol"
                    || mesh_labels.contains_key(*key)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, peer: &str, rack: &str) -> PeerEntry {
        PeerEntry {
            address: address.parse().expect("test address"),
            labels: std::sync::Arc::new(
                [("peer", peer), ("rack", rack)]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn tiered() -> Fleet {
        Fleet {
            strategy: Strategy::Tiered,
            group_by: Some("rack".into()),
            paths_between_groups: 1,
            rotate_every: Some(Duration::from_secs(60)),
            inter_group_series: InterGroupSeries::PerGroup,
        }
    }

    #[test]
    fn tiered_keeps_own_group_and_one_path_per_group_pair() {
        let entries: Vec<PeerEntry> = (0..9)
            .map(|i| {
                entry(
                    &format!("198.18.{}.{}", i / 3, 10 + i),
                    &format!("n{i}"),
                    &format!("r{}", i / 3),
                )
            })
            .collect();
        let own: BTreeSet<IpAddr> = ["198.18.0.10".parse().expect("ip")].into();
        let selection = select(&entries, &own, &tiered(), &BTreeMap::new(), 0);
        assert_eq!(selection.own_group.as_deref(), Some("r0"));
        assert!(selection.problem.is_none());
        let peers: BTreeSet<&str> = selection.entries.iter().map(PeerEntry::peer).collect();
        assert!(peers.contains("n1") && peers.contains("n2"));
        assert!(!peers.contains("n0"));
        // Every node's selection together covers each ordered rack pair exactly once (k = 1).
        let mut pairs = BTreeMap::new();
        for me in &entries {
            let own: BTreeSet<IpAddr> = [me.address].into();
            for e in select(&entries, &own, &tiered(), &BTreeMap::new(), 0).entries {
                if e.labels["rack"] != me.labels["rack"] {
                    *pairs
                        .entry((me.labels["rack"].to_string(), e.labels["rack"].to_string()))
                        .or_insert(0) += 1;
                }
            }
        }
        assert_eq!(pairs.len(), 6);
        assert!(pairs.values().all(|count| *count == 1), "{pairs:?}");
        let lost = select(&entries, &BTreeSet::new(), &tiered(), &BTreeMap::new(), 0);
        assert!(lost.entries.is_empty() && lost.problem.is_some());
    }

    #[test]
    fn epochs_and_exported_labels() {
        let fleet = tiered();
        assert_eq!(epoch(Duration::from_secs(125), &fleet), 2);
        assert_eq!(epoch(Duration::from_secs(125), &Fleet::default()), 0);
        let labels = |pairs: &[(&str, &str)]| -> LabelSet { pairs.iter().copied().collect() };
        let spec = TargetSpec {
            address: "198.18.1.3".parse().expect("ip"),
            labels: std::sync::Arc::new(labels(&[
                ("address", "198.18.1.3"),
                ("host", "x"),
                ("ip_protocol", "ip4"),
                ("network", "routed"),
                ("peer", "n4"),
                ("rack", "r1"),
                ("site", "lab"),
            ])),
        };
        let mesh_labels: BTreeMap<String, String> =
            [("site".to_string(), "lab".to_string())].into();
        assert_eq!(
            exported_labels(&spec, Some("r0"), &fleet, &mesh_labels),
            Some(labels(&[
                ("ip_protocol", "ip4"),
                ("network", "routed"),
                ("rack", "r1"),
                ("site", "lab")
            ]))
        );
        assert_eq!(
            exported_labels(&spec, Some("r1"), &fleet, &mesh_labels),
            None
        );
        assert_eq!(
            exported_labels(&spec, Some("r0"), &Fleet::default(), &mesh_labels),
            None
        );
    }
}
