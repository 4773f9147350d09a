//! The charm's tiered plan across availability zones, on the Juju model simulator
//! (`tests/charm_sim/`): with `group: availability-zone`, units in two zones (each hook sees its
//! unit's `JUJU_AVAILABILITY_ZONE`) write peers files that follow the tiered plan.

mod charm_sim;

use charm_sim::Sim;
use charm_sim::contract;
use charm_sim::netns::two_nets;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn units_in_two_availability_zones_follow_the_tiered_plan() {
    let mut sim = Sim::new();
    sim.set_config("group", json!("availability-zone"));
    let units = 8;
    let names = sim.add_units((0..units).map(two_nets).collect());
    let zone_of: BTreeMap<String, String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let zone = if i % 2 == 0 { "zone-a" } else { "zone-b" };
            sim.set_zone(name, zone);
            (name.clone(), zone.to_string())
        })
        .collect();
    sim.settle();
    let report = sim.take_report("two availability zones");
    assert!(report.c.failed.is_empty(), "failed: {:?}", report.c.failed);
    // Every unit probes each peer of its own zone on both networks, and only its share of the
    // other zone: across all units, each ordered zone pair is covered by k = 2 node pairs
    // (paths-between-groups' default), each on both shared networks.
    let mut inter_zone: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for name in &names {
        let file = sim
            .peers_json(name)
            .unwrap_or_else(|| panic!("{name} has no peers.json"));
        assert!(
            file.to_string()
                .contains(&format!("\"group\":\"{}\"", zone_of[name])),
            "{name}: peers.json has no group labels: {file}"
        );
        let targets = contract::peers_file_targets(&file);
        let own_zone = &zone_of[name];
        for peer in names
            .iter()
            .filter(|p| *p != name && zone_of[*p] == *own_zone)
        {
            let networks = targets.iter().filter(|(p, _, _)| p == peer).count();
            assert_eq!(
                networks, 2,
                "{name} probes zone peer {peer} on both networks"
            );
        }
        for (peer, _, _) in targets.iter().filter(|(p, _, _)| zone_of[p] != *own_zone) {
            let pair = (own_zone.clone(), zone_of[peer].clone());
            inter_zone
                .entry(pair)
                .or_default()
                .insert((name.clone(), peer.clone()));
        }
    }
    let pairs: Vec<(&(String, String), usize)> = inter_zone
        .iter()
        .map(|(zones, paths)| (zones, paths.len()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (&("zone-a".to_string(), "zone-b".to_string()), 2),
            (&("zone-b".to_string(), "zone-a".to_string()), 2),
        ],
        "{inter_zone:?}"
    );
    // The k paths of a zone pair start at different units.
    for paths in inter_zone.values() {
        let sources: BTreeSet<&String> = paths.iter().map(|(source, _)| source).collect();
        assert_eq!(sources.len(), paths.len(), "{paths:?}");
    }
}
