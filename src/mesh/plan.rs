//! The pure core of the mesh: who pings whom, on which network, at which address.
//!
//! [`plan`] takes this node's networks, its peers with their addresses, and the chosen-network
//! selectors, and returns the targets plus the peers it could not place (reported, never silently
//! dropped). The rule: ping a peer on every network both sides have, restricted to the chosen
//! networks, using the peer's own address on that network. A peer with no address on any shared
//! network in a family is reached through the routing table instead (`network="routed"`, source
//! chosen by the kernel) when the `routed` selector (or `all`) is chosen and the route lookup the
//! caller passes in ([`plan_with_routes`]) says there is a route. Standalone mode and the charm
//! (for this unit, and the leader for every unit) call the same function. No I/O, no clocks, no
//! randomness: the output depends only on the input set, not its order. The selectors are config
//! vocabulary ([`crate::config::network`]); this module only matches them against its
//! [`LocalNetwork`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

pub use crate::config::network::NetworkSelector;
use crate::icmp::Family;

/// One of this node's networks: an interface address with its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalNetwork {
    pub interface: String,
    /// This node's address on the network.
    pub address: IpAddr,
    /// The network itself (address with host bits cleared).
    pub network: IpNet,
    /// The Juju space the network belongs to, if known.
    pub space: Option<String>,
}

impl LocalNetwork {
    pub fn new(interface: &str, address: IpAddr, prefix_len: u8) -> Option<LocalNetwork> {
        let network = IpNet::new(address, prefix_len).ok()?.trunc();
        Some(LocalNetwork {
            interface: interface.to_string(),
            address,
            network,
            space: None,
        })
    }
}

/// A peer and the addresses it announced. On a network where it has several, the lowest is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

// `NetworkSelector` is config vocabulary (`mesh.networks`, the charm's `networks` option) and
// lives in `config::network`; matching it against a `LocalNetwork` is the plan's business, so
// that impl is here and `config` never needs to know this module.
impl NetworkSelector {
    /// Whether this selector picks `local`.
    pub fn matches_network(&self, local: &LocalNetwork) -> bool {
        self.matches(&local.interface, &local.network, local.space.as_deref())
    }
}

/// The `network` label (and selector name) of targets reached through the routing table.
pub use crate::config::network::ROUTED;

/// One thing to ping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub peer: String,
    /// The shared network, as a CIDR; for a routed target, the address as a host prefix.
    pub network: IpNet,
    /// The peer's own address on that network.
    pub address: IpAddr,
    pub family: Family,
    /// This node's interface on that network (empty for a routed target). The source address is
    /// left to the kernel, which picks this interface's address for an on-link peer and the
    /// route's preferred source for a routed one.
    pub local_interface: String,
    /// Reached through the routing table, not a shared network.
    pub routed: bool,
}

impl Target {
    /// The `network` label: the shared network's CIDR, or `routed`.
    pub fn network_label(&self) -> String {
        if self.routed {
            ROUTED.to_string()
        } else {
            self.network.to_string()
        }
    }
}

/// Why a peer got no target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unplaced {
    /// None of its addresses is on any of our networks, and none has a route.
    NoCommonNetwork,
    /// It shares networks with us, but none that was chosen.
    NoChosenNetwork,
    /// It announced no usable address.
    NoAddresses,
    /// Every address it announced is claimed by a peer that sorts before it.
    AddressConflict,
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unplaced::NoCommonNetwork => "no common network and no route",
            Unplaced::NoChosenNetwork => {
                "no common network or route among the chosen networks (mesh.networks)"
            }
            Unplaced::NoAddresses => "no usable address",
            Unplaced::AddressConflict => "all its addresses are claimed by another peer",
        })
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by (peer, network, family).
    pub targets: Vec<Target>,
    /// Peers without any target, with the reason; sorted by name.
    pub unplaced: Vec<(String, Unplaced)>,
    /// Addresses announced by more than one peer: (address, peers). The first peer by name keeps it.
    pub conflicts: Vec<(IpAddr, Vec<String>)>,
}

/// An address a peer may be pinged at: global unicast, not loopback, unspecified or multicast.
/// Link-local addresses are excluded (they need an interface scope and are not "networks").
fn usable(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// [`plan_with_routes`] without a routing table: only shared networks.
pub fn plan(local: &[LocalNetwork], peers: &[Peer], chosen: &[NetworkSelector]) -> Plan {
    plan_with_routes(local, peers, chosen, &|_| false)
}

/// Computes this node's targets. See the module documentation for the rule. `has_route` says
/// whether the kernel has a route to an address (for addresses on no shared network); it is
/// the only view of the routing table, so the function stays pure.
pub fn plan_with_routes(
    local: &[LocalNetwork],
    peers: &[Peer],
    chosen: &[NetworkSelector],
    has_route: &dyn Fn(IpAddr) -> bool,
) -> Plan {
    let routed_chosen = chosen.iter().any(NetworkSelector::matches_routed);
    let own_addresses: BTreeSet<IpAddr> = local.iter().map(|n| n.address).collect();
    // Most specific local network first, so overlapping CIDRs resolve to the narrowest one.
    let mut networks: Vec<&LocalNetwork> = local.iter().filter(|n| usable(&n.address)).collect();
    networks.sort_by(|a, b| {
        b.network
            .prefix_len()
            .cmp(&a.network.prefix_len())
            .then_with(|| a.cmp(b))
    });
    networks.dedup_by(|a, b| a.network == b.network);

    // Merge duplicate peers (same name); drop unusable addresses and our own. A peer all of whose
    // usable addresses are ours is this node itself.
    let mut merged: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut own_seen: BTreeSet<&str> = BTreeSet::new();
    for peer in peers {
        let addresses = merged.entry(peer.name.as_str()).or_default();
        for address in peer
            .addresses
            .iter()
            .map(|a| a.to_canonical())
            .filter(usable)
        {
            if own_addresses.contains(&address) {
                own_seen.insert(peer.name.as_str());
            } else if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
    }
    // An address claimed by several peers belongs to the first by name.
    let mut owners: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (name, addresses) in &merged {
        for address in addresses {
            owners
                .entry(*address)
                .or_default()
                .push((*name).to_string());
        }
    }
    let conflicts: Vec<(IpAddr, Vec<String>)> = owners
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(address, names)| (*address, names.clone()))
        .collect();

    let mut result = Plan {
        conflicts,
        ..Plan::default()
    };
    for (name, addresses) in &merged {
        if addresses.is_empty() {
            if !own_seen.contains(name) {
                result
                    .unplaced
                    .push(((*name).to_string(), Unplaced::NoAddresses));
            }
            continue;
        }
        // Sorted, so that the plan depends only on the set of addresses, not their order.
        let mut owned: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| owners.get(a).and_then(|o| o.first()).map(String::as_str) == Some(*name))
            .collect();
        owned.sort();
        if owned.is_empty() {
            result
                .unplaced
                .push(((*name).to_string(), Unplaced::AddressConflict));
            continue;
        }
        let mut shared_any = false;
        let mut shared_families: BTreeSet<Family> = BTreeSet::new();
        let mut off_network: Vec<IpAddr> = Vec::new();
        let mut seen: BTreeSet<(IpNet, Family)> = BTreeSet::new();
        for address in &owned {
            let Some(network) = networks.iter().find(|n| n.network.contains(address)) else {
                off_network.push(*address);
                continue;
            };
            shared_any = true;
            shared_families.insert(Family::of(address));
            if !chosen
                .iter()
                .any(|selector| selector.matches_network(network))
            {
                continue;
            }
            let family = Family::of(address);
            // One target per (network, family): the peer's lowest address there.
            if seen.insert((network.network, family)) {
                result.targets.push(Target {
                    peer: (*name).to_string(),
                    network: network.network,
                    address: *address,
                    family,
                    local_interface: network.interface.clone(),
                    routed: false,
                });
            }
        }
        // Routed: per family without a shared network, the lowest address the kernel can reach.
        let mut routed_families: BTreeSet<Family> = BTreeSet::new();
        for address in off_network {
            let family = Family::of(&address);
            if shared_families.contains(&family)
                || routed_families.contains(&family)
                || !has_route(address)
            {
                continue;
            }
            routed_families.insert(family);
            shared_any = true;
            if routed_chosen {
                let host = IpNet::from(address);
                seen.insert((host, family));
                result.targets.push(Target {
                    peer: (*name).to_string(),
                    network: host,
                    address,
                    family,
                    local_interface: String::new(),
                    routed: true,
                });
            }
        }
        if seen.is_empty() {
            let reason = if shared_any {
                Unplaced::NoChosenNetwork
            } else {
                Unplaced::NoCommonNetwork
            };
            result.unplaced.push(((*name).to_string(), reason));
        }
    }
    result.targets.sort();
    result
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
