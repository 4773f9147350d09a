//! Local network discovery: this machine's interfaces, addresses and prefixes, as
//! [`LocalNetwork`]s for the mesh plan (`meshprobe networks` prints them).
//!
//! Owns the filtering rules: loopback and interfaces that are operationally down are skipped,
//! and so are link-local addresses unless asked for. Reads the kernel's view through
//! getifaddrs (the if-addrs crate); it does not watch for changes (callers re-discover). Also
//! answers "is there a route to this address?" for routed peers ([`has_route`]).

use std::net::IpAddr;

use if_addrs::{IfAddr, IfOperStatus};

use super::plan::LocalNetwork;

/// What to include besides global unicast addresses on interfaces that are up.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscoveryOptions {
    pub include_link_local: bool,
    pub include_down: bool,
}

/// Lists this machine's networks, sorted by (interface, address).
pub fn local_networks(options: DiscoveryOptions) -> std::io::Result<Vec<LocalNetwork>> {
    let mut networks: Vec<LocalNetwork> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|interface| !interface.is_loopback())
        .filter(|interface| {
            options.include_down
                || !matches!(
                    interface.oper_status,
                    IfOperStatus::Down | IfOperStatus::LowerLayerDown | IfOperStatus::NotPresent
                )
        })
        .filter_map(|interface| {
            let (address, prefix) = match &interface.addr {
                IfAddr::V4(v4) => (IpAddr::V4(v4.ip), v4.prefixlen),
                IfAddr::V6(v6) => (IpAddr::V6(v6.ip), v6.prefixlen),
            };
            let link_local = match address {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            };
            if link_local && !options.include_link_local {
                return None;
            }
            LocalNetwork::new(&interface.name, address, prefix)
        })
        .collect();
    networks.sort();
    networks.dedup();
    Ok(networks)
}

/// Renders networks as the `meshprobe networks` table.
pub fn render_table(networks: &[LocalNetwork]) -> String {
    let mut out =
        String::from("INTERFACE        ADDRESS                                  NETWORK\n");
    for network in networks {
        out.push_str(&format!(
            "{:<16} {:<40} {}\n",
            network.interface, network.address, network.network
        ));
    }
    out
}

/// Whether the kernel has a route to `address`: a UDP socket `connect()`ed to it, which looks the
/// route up (and picks the source address) without sending anything or needing privileges.
pub fn has_route(address: IpAddr) -> bool {
    route_source(address).is_some()
}

/// The source address the kernel would use towards `address`, or `None` without a route.
pub fn route_source(address: IpAddr) -> Option<IpAddr> {
    let bind: std::net::SocketAddr = match address {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    // Port 9 (discard); connect() on a datagram socket only resolves the route.
    socket.connect((address, 9)).ok()?;
    socket.local_addr().ok().map(|local| local.ip())
}
