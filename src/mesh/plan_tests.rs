//! Unit and property tests for [`super::plan`].

use super::*;
use proptest::prelude::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn local(interface: &str, cidr_address: &str) -> LocalNetwork {
    let (address, prefix) = cidr_address.split_once('/').expect("address/prefix");
    LocalNetwork::new(interface, ip(address), prefix.parse().expect("prefix")).expect("valid")
}

fn peer(name: &str, addresses: &[&str]) -> Peer {
    Peer {
        name: name.to_string(),
        addresses: addresses.iter().map(|a| ip(a)).collect(),
    }
}

fn all() -> Vec<NetworkSelector> {
    vec![NetworkSelector::All]
}

#[test]
fn pings_each_peer_on_every_shared_network_at_its_own_address() {
    let locals = [
        local("eth0", "198.18.0.1/24"),
        local("eth1", "198.18.1.1/24"),
        local("eth1", "2001:2::1/64"),
    ];
    let peers = [
        peer("b", &["198.18.0.2", "198.18.1.2", "2001:2::2"]),
        peer("c", &["198.18.1.3", "203.0.113.9"]),
    ];
    let plan = plan(&locals, &peers, &all());
    let summary: Vec<(String, String, String)> = plan
        .targets
        .iter()
        .map(|t| (t.peer.clone(), t.network.to_string(), t.address.to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            ("b".into(), "198.18.0.0/24".into(), "198.18.0.2".into()),
            ("b".into(), "198.18.1.0/24".into(), "198.18.1.2".into()),
            ("b".into(), "2001:2::/64".into(), "2001:2::2".into()),
            ("c".into(), "198.18.1.0/24".into(), "198.18.1.3".into()),
        ]
    );
    assert!(plan.unplaced.is_empty());
    assert_eq!(plan.targets[1].local_interface, "eth1");
}

#[test]
fn selectors_restrict_networks() {
    let locals = [
        local("eth0", "198.18.0.1/24"),
        local("eth1", "198.18.1.1/24"),
    ];
    let peers = [peer("b", &["198.18.0.2", "198.18.1.2"])];
    let by_interface = plan(&locals, &peers, &[NetworkSelector::parse("eth1").unwrap()]);
    assert_eq!(by_interface.targets.len(), 1);
    assert_eq!(by_interface.targets[0].address, ip("198.18.1.2"));
    let by_cidr = plan(
        &locals,
        &peers,
        &[NetworkSelector::parse("198.18.0.0/16").unwrap()],
    );
    assert_eq!(by_cidr.targets.len(), 2);
    let none = plan(
        &locals,
        &peers,
        &[NetworkSelector::parse("10.0.0.0/8").unwrap()],
    );
    assert!(none.targets.is_empty());
    assert_eq!(
        none.unplaced,
        [("b".to_string(), Unplaced::NoChosenNetwork)]
    );
    let mut with_space = locals.clone();
    with_space[0].space = Some("internal".into());
    let by_space = plan(
        &with_space,
        &peers,
        &[NetworkSelector::parse("space:internal").unwrap()],
    );
    assert_eq!(by_space.targets.len(), 1);
    assert_eq!(by_space.targets[0].address, ip("198.18.0.2"));
}

#[test]
fn peers_without_a_common_network_are_reported() {
    let locals = [local("eth0", "198.18.0.1/24")];
    let peers = [
        peer("far", &["203.0.113.5"]),
        peer("empty", &[]),
        peer("loopy", &["127.0.0.1", "fe80::1"]),
    ];
    let plan = plan(&locals, &peers, &all());
    assert!(plan.targets.is_empty());
    assert_eq!(
        plan.unplaced,
        [
            ("empty".to_string(), Unplaced::NoAddresses),
            ("far".to_string(), Unplaced::NoCommonNetwork),
            ("loopy".to_string(), Unplaced::NoAddresses),
        ]
    );
}

#[test]
fn multiple_addresses_duplicates_overlaps_and_self() {
    let locals = [
        local("eth0", "198.18.0.1/16"),
        local("eth1", "198.18.5.1/24"),
    ];
    let peers = [
        // Two addresses on one network: the lowest wins.
        peer("b", &["198.18.0.8", "198.18.0.7"]),
        // The same peer listed twice: merged.
        peer("c", &["198.18.0.9"]),
        peer("c", &["198.18.5.9", "198.18.0.9"]),
        // Overlapping CIDRs: 198.18.5.x belongs to the narrower eth1 network.
        peer("d", &["198.18.5.10"]),
        // This node itself.
        peer("me", &["198.18.0.1", "198.18.5.1"]),
        // An address claimed twice: the first name keeps it.
        peer("e", &["198.18.0.50"]),
        peer("f", &["198.18.0.50"]),
    ];
    let plan = plan(&locals, &peers, &all());
    let summary: Vec<(&str, String, String)> = plan
        .targets
        .iter()
        .map(|t| {
            (
                t.peer.as_str(),
                t.network.to_string(),
                t.address.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("b", "198.18.0.0/16".into(), "198.18.0.7".into()),
            ("c", "198.18.0.0/16".into(), "198.18.0.9".into()),
            ("c", "198.18.5.0/24".into(), "198.18.5.9".into()),
            ("d", "198.18.5.0/24".into(), "198.18.5.10".into()),
            ("e", "198.18.0.0/16".into(), "198.18.0.50".into()),
        ]
    );
    assert_eq!(
        plan.unplaced,
        [("f".to_string(), Unplaced::AddressConflict)]
    );
    assert_eq!(
        plan.conflicts,
        [(ip("198.18.0.50"), vec!["e".to_string(), "f".to_string()])]
    );
}

fn arbitrary_address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..8).prop_map(|(net, host)| IpAddr::from([198, 18, net, host])),
        (0u16..3, 0u16..8).prop_map(|(net, host)| IpAddr::from([0x2001, 2, 0, net, 0, 0, 0, host])),
    ]
}

fn arbitrary_locals() -> impl Strategy<Value = Vec<LocalNetwork>> {
    proptest::collection::vec((arbitrary_address(), 0u8..3), 0..4).prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .filter_map(|(index, (address, width))| {
                let prefix = match address {
                    IpAddr::V4(_) => 24 - width * 4,
                    IpAddr::V6(_) => 64 - width * 16,
                };
                LocalNetwork::new(&format!("eth{index}"), address, prefix)
            })
            .collect()
    })
}

fn arbitrary_peers() -> impl Strategy<Value = Vec<Peer>> {
    proptest::collection::vec(
        (0u8..6, proptest::collection::vec(arbitrary_address(), 0..4)),
        0..8,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(name, addresses)| Peer {
                name: format!("peer{name}"),
                addresses,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn plan_invariants(locals in arbitrary_locals(), peers in arbitrary_peers(), rotate in 0usize..8) {
        let result = plan(&locals, &peers, &all());
        let own: BTreeSet<IpAddr> = locals.iter().map(|l| l.address).collect();
        let mut keys = BTreeSet::new();
        for target in &result.targets {
            // The address is the peer's own, on a network we have, and never ours.
            prop_assert!(peers.iter().any(|p| p.name == target.peer && p.addresses.contains(&target.address)));
            prop_assert!(target.network.contains(&target.address));
            prop_assert!(locals.iter().any(|l| l.network == target.network && l.interface == target.local_interface));
            prop_assert!(!own.contains(&target.address));
            prop_assert_eq!(target.family, Family::of(&target.address));
            prop_assert!(keys.insert((target.peer.clone(), target.network, target.family)), "duplicate target");
        }
        // Every peer is either planned, reported, or this node itself.
        for peer in &peers {
            let planned = result.targets.iter().any(|t| t.peer == peer.name);
            let reported = result.unplaced.iter().any(|(name, _)| name == &peer.name);
            let is_self = peers.iter().filter(|p| p.name == peer.name).flat_map(|p| &p.addresses).all(|a| own.contains(a) || !usable(a))
                && peers.iter().filter(|p| p.name == peer.name).flat_map(|p| &p.addresses).any(|a| own.contains(a));
            prop_assert!(planned || reported || is_self, "{} vanished", peer.name);
            prop_assert!(!(planned && reported));
        }
        // The order of the input does not matter.
        let mut rotated = peers.clone();
        if !rotated.is_empty() {
            let by = rotate % rotated.len();
            rotated.rotate_left(by);
        }
        let mut rotated_locals = locals.clone();
        rotated_locals.reverse();
        prop_assert_eq!(plan(&rotated_locals, &rotated, &all()), result.clone());
        // Restricting the selectors only removes targets.
        let narrowed = plan(&locals, &peers, &[NetworkSelector::parse("198.18.0.0/16").unwrap()]);
        for target in &narrowed.targets {
            prop_assert!(result.targets.contains(target));
        }
    }
}
